"""``python -m benchmarks``: run the suite (options: ``python -m benchmarks --help``)."""

from __future__ import annotations

import sys

from .runner import main

sys.exit(main())
