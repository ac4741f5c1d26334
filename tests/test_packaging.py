"""What the package declares: dependency floors that work, and what a build ships."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def _floor(name: str) -> tuple[int, ...]:
    match = re.search(rf'"{re.escape(name)}>=([0-9.]+)', PYPROJECT)
    assert match, f"no lower bound for {name} in pyproject.toml"
    return tuple(int(part) for part in match.group(1).split("."))


def test_anyio_floor_has_abandon_on_cancel() -> None:
    """The invoker runs sync agents with ``to_thread.run_sync(..., abandon_on_cancel=True)``,
    a keyword anyio 4.1 introduced: under 4.0 every sync agent fails with a TypeError."""
    assert _floor("anyio") >= (4, 1)
