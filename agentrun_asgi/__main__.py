"""``python -m agentrun_asgi serve package.module:function``: the same CLI as ``agentrun-asgi``."""

import sys

from .cli import main

sys.exit(main())
