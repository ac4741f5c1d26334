"""What the package declares: dependency floors that work, what a build ships, and that the
wheel, installed as users install it (not editable), runs and type-checks away from the repo."""

from __future__ import annotations

import configparser
import email.parser
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from apps.process import free_port, server_process

import agentrun_asgi

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
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder where ``python -m build`` put an sdist and the wheel built from that sdist."""
    pytest.importorskip("build", reason="the test extra installs 'build'")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def built(dist: Path) -> dict[str, set[str]]:
    """The names in the sdist (without its top folder) and in the wheel."""
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
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


@pytest.mark.slow
def test_wheel_ships_every_module_and_nothing_else(built: dict[str, set[str]]) -> None:
    """Every module of the package, and no tests, examples, docs or bytecode beside it."""
    modules = {name for name in _source_files("agentrun_asgi") if name.endswith(".py")}
    assert sorted(modules - built["wheel"]) == []
    info = f"agentrun_asgi-{agentrun_asgi.__version__}.dist-info/"
    assert sorted(n for n in built["wheel"] if not n.startswith(("agentrun_asgi/", info))) == []
    assert sorted(n for n in built["wheel"] if "__pycache__" in n or n.endswith(".pyc")) == []


@pytest.mark.slow
def test_wheel_metadata(dist: Path) -> None:
    """What pip reads: the version ``__version__`` says, the three runtime dependencies (no
    framework), the extras the README names, and the ``agentrun-asgi`` command."""
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as zipped:
        (info,) = {n.split("/")[0] for n in zipped.namelist() if n.endswith(".dist-info/METADATA")}
        meta = email.parser.Parser().parsestr(zipped.read(f"{info}/METADATA").decode())
        scripts = configparser.ConfigParser()
        scripts.read_string(zipped.read(f"{info}/entry_points.txt").decode())
    assert (meta["Name"], meta["Version"]) == ("agentrun-asgi", agentrun_asgi.__version__)
    assert meta["Requires-Python"] == ">=3.10" and meta["License-Expression"] == "Apache-2.0"
    runtime = {req.split(">=")[0] for req in meta.get_all("Requires-Dist") if ";" not in req}
    assert runtime == {"uvicorn", "anyio", "orjson"}
    assert {"fastapi", "metrics", "ray", "test"} <= set(meta.get_all("Provides-Extra"))
    assert dict(scripts["console_scripts"]) == {"agentrun-asgi": "agentrun_asgi.cli:main"}


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed by pip into a folder of its own (its dependencies are this venv's)."""
    (wheel,) = dist.glob("*.whl")
    site = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-compile", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if result.returncode != 0 and "No module named pip" in result.stderr:
        pytest.skip("pip is not installed")
    assert result.returncode == 0, result.stderr[-3000:]
    return site


def _away_from_the_repo(site: Path) -> dict[str, str]:
    """An environment whose only ``agentrun_asgi`` is the installed one (cwd is not ROOT)."""
    env = {k: v for k, v in os.environ.items() if k != "AGENTRUN_AGENT"}
    return {**env, "PYTHONPATH": str(site), "AGENTRUN_DEMO_DELAY": "0"}


@pytest.mark.slow
def test_installed_wheel_imports_no_framework(installed: Path, tmp_path: Path) -> None:
    probe = ("import sys, agentrun_asgi; print(agentrun_asgi.__file__); "
             "print(sorted({m.split('.')[0] for m in sys.modules} "
             "& {'fastapi', 'starlette', 'pydantic'}))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                            env=_away_from_the_repo(installed), text=True, timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stderr
    where, frameworks = result.stdout.splitlines()
    assert Path(where).is_relative_to(installed) and frameworks == "[]"


@pytest.mark.slow
def test_installed_wheel_serves_the_demo_and_its_playground(
    installed: Path, tmp_path: Path
) -> None:
    """The console script, from the wheel alone: the demo answers and the playground's page
    and assets (package data, read next to the installed modules) are served as shipped."""
    port = free_port()
    script = str(installed / "bin" / "agentrun-asgi")
    with server_process([script, "serve", "--port", str(port), "--log-level", "warning"], port,
                        env=_away_from_the_repo(installed), python=False,
                        cwd=tmp_path) as proc:  # fmt: skip
        answer = httpx.post(proc.base_url + "/v1/chat/completions", timeout=10,
                            json={"messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        page = httpx.get(proc.base_url + "/playground", timeout=10)
        assets = {name: httpx.get(f"{proc.base_url}/playground/{name}", timeout=10).content
                  for name in ("app.js", "app.css", "icon.svg")}  # fmt: skip
        output = proc.output()
    assert "serving the demo agent" in output
    message = answer.json()["choices"][0]["message"]
    assert message["tool_calls"][0]["function"]["name"] == "get_time"
    assert page.status_code == 200 and 'src="playground/app.js"' in page.text
    static = ROOT / "agentrun_asgi" / "static"
    assert assets == {"app.js": (static / "playground.js").read_bytes(),
                      "app.css": (static / "playground.css").read_bytes(),
                      "icon.svg": (static / "playground.svg").read_bytes()}  # fmt: skip


@pytest.mark.slow
def test_installed_wheel_is_typed_for_its_users(installed: Path, tmp_path: Path) -> None:
    """mypy reads the installed package's types (PEP 561: ``py.typed``), not ``Any``."""
    pytest.importorskip("mypy")
    user = tmp_path / "user_agent.py"
    user.write_text(
        "from agentrun_asgi import AgentRequest, AgentRunServer\n\n"
        "def agent(request: AgentRequest) -> str:\n"
        "    return f'{len(request.messages)} messages'\n\n"
        "server = AgentRunServer(invoke_agent=agent)\n"
        "count: int = server.routes  # the one error: it is a list of Route\n"
    )  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                             user.name], cwd=tmp_path, env=_away_from_the_repo(installed),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "Found 1 error" in result.stdout, result.stdout
    assert '(expression has type "list[Route]", variable has type "int")' in result.stdout
