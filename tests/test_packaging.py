"""What the package declares: dependency floors that work, and what a build ships."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

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


def _test_extra() -> str:
    match = re.search(r"^test = \[(.*?)^\]", PYPROJECT, re.MULTILINE | re.DOTALL)
    assert match, "no test extra in pyproject.toml"
    return match.group(1)


def test_test_extra_declares_httptools() -> None:
    """Tests run uvicorn with ``http="httptools"``; only ``ray[serve]`` (through
    ``uvicorn[standard]``) brought it, and not on Python 3.14, where they failed to start."""
    assert re.search(r'^\s*"httptools>=[0-9.]+",', _test_extra(), re.MULTILINE)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """An sdist and the wheel built from it, as ``python -m build`` makes them: their names."""
    pytest.importorskip("build", reason="the test extra installs 'build'")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    with tarfile.open(sdist) as tar:
        sdist_names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    with zipfile.ZipFile(wheel) as zipped:
        wheel_names = set(zipped.namelist())
    return {"sdist": sdist_names, "wheel": wheel_names}


def _source_files(folder: str) -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
        and not path.relative_to(ROOT).as_posix().startswith("benchmarks/out/")
    }


@pytest.mark.slow
def test_sdist_carries_what_its_tests_need(built: dict[str, set[str]]) -> None:
    """The tests import helpers beside them (conftest, apps/) and start the examples and the
    benchmark targets; setuptools alone ships only ``tests/test*.py``, which cannot run."""
    needed = {"README.md", "pyproject.toml", "LICENSE"}
    for folder in ("agentrun_asgi", "tests", "examples", "benchmarks"):
        needed |= _source_files(folder)
    assert sorted(needed - built["sdist"]) == []


@pytest.mark.slow
def test_wheel_carries_the_package_data(built: dict[str, set[str]]) -> None:
    """The playground's files and the PEP 561 marker are package data, not modules."""
    static = ROOT / "agentrun_asgi" / "static"
    needed = {f"agentrun_asgi/static/{path.name}" for path in static.iterdir()}
    needed.add("agentrun_asgi/py.typed")
    assert sorted(needed - built["wheel"]) == []
    assert not {name for name in built["wheel"] if name.startswith(("tests/", "benchmarks/"))}


@pytest.mark.slow
def test_wheel_carries_the_license(built: dict[str, set[str]]) -> None:
    """Apache-2.0 asks that the license text go with every copy."""
    assert "agentrun_asgi-0.1.0.dist-info/licenses/LICENSE" in built["wheel"]
