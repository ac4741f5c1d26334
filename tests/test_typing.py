"""The package type-checks under ``mypy --strict`` (it ships ``py.typed``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_strict_is_clean() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "agentrun_asgi"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_ships_py_typed() -> None:
    assert (ROOT / "agentrun_asgi" / "py.typed").is_file()


def test_app_has_its_type_for_importers(tmp_path: Path) -> None:
    """``app`` is made on first access by a module ``__getattr__``, which type checkers read as
    ``Any``: ``from agentrun_asgi import app`` lost every check on it."""
    pytest.importorskip("mypy")
    user = tmp_path / "user_app.py"
    user.write_text("from agentrun_asgi import app\n\ncount: int = app  # the one error\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the package as installed, py.typed and all
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", user.name],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert 'expression has type "AgentRunServer", variable has type "int"' in result.stdout, (
        result.stdout
    )
