"""The command line, run as users run it: ``python -m agentrun_asgi`` and ``agentrun-asgi``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from apps.process import ROOT, free_port, server_process

from agentrun_asgi import AgentRunServer
from agentrun_asgi.cli import build_parser, describe
from agentrun_asgi.loader import default_app

TARGET = "tests.apps.agent_app:invoke_agent"
USER = {"messages": [{"role": "user", "content": "hi"}]}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AGENTRUN_AGENT"}
    return subprocess.run(
        [sys.executable, "-m", "agentrun_asgi", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip


def test_serve_target_prints_routes_and_answers() -> None:
    port = free_port()
    with server_process(["-m", "agentrun_asgi", "serve", TARGET, "--port", str(port),
                         "--log-level", "warning"], port) as proc:  # fmt: skip
        r = httpx.post(proc.base_url + "/v1/chat/completions", json=USER, timeout=10)
        output = proc.output()
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "Hello from agent_app: hi"
    assert f"serving {TARGET} on http://127.0.0.1:{port}" in output
    assert f"POST  http://127.0.0.1:{port}/v1/chat/completions  (openai.chat_completions)" in output
    assert f"http://127.0.0.1:{port}/ag-ui/agent" in output
    assert f"curl -N http://127.0.0.1:{port}/v1/chat/completions" in output


def test_serve_without_target_is_the_demo() -> None:
    port = free_port()
    with server_process(["-m", "agentrun_asgi", "serve", "--port", str(port),
                         "--log-level", "warning"], port,
                        env={"AGENTRUN_DEMO_DELAY": "0"}) as proc:  # fmt: skip
        r = httpx.post(proc.base_url + "/v1/chat/completions", json=USER, timeout=10)
        output = proc.output()
    message = r.json()["choices"][0]["message"]
    assert message["tool_calls"][0]["function"]["name"] == "get_time"
    assert "the demo agent" in output


def test_serve_with_workers_uses_the_env_var() -> None:
    """Two uvicorn workers, each importing ``agentrun_asgi:app`` with AGENTRUN_AGENT set."""
    port = free_port()
    with server_process(["-m", "agentrun_asgi", "serve", TARGET, "--port", str(port),
                         "--workers", "2", "--log-level", "warning"], port) as proc:  # fmt: skip
        answers = {
            httpx.post(proc.base_url + "/v1/chat/completions", json=USER, timeout=10)
            .json()["choices"][0]["message"]["content"] for _ in range(4)
        }  # fmt: skip
    assert answers == {"Hello from agent_app: hi"}


@pytest.mark.parametrize("mode", [[], ["--workers", "2"]], ids=["one process", "workers"])
def test_access_log_lines_carry_the_request_id(mode: list[str]) -> None:
    """uvicorn's access line is built from its fields, not its message: the id must be in the
    format, and in every worker's (uvicorn configures each from the dict it is given)."""
    port = free_port()
    with server_process(["-m", "agentrun_asgi", "serve", TARGET, "--port", str(port),
                         "--log-level", "info", *mode], port) as proc:  # fmt: skip
        r = httpx.post(proc.base_url + "/v1/chat/completions", json=USER,
                       headers={"x-request-id": "trace-log-1"}, timeout=10)  # fmt: skip
        assert r.headers["x-request-id"] == "trace-log-1"
        deadline = time.monotonic() + 5  # a bound against a hang, not a timing check
        while "[trace-log-1]" not in proc.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = [line for line in proc.output().splitlines() if "[trace-log-1]" in line]
        assert any('"POST /v1/chat/completions HTTP/1.1" 200' in line for line in lines), (
            proc.output()[-2000:]
        )


@pytest.mark.parametrize("mode", [["--workers", "2"], ["--reload"]])
def test_stop_with_workers_or_reload_does_not_wait_for_endless_streams(mode: list[str]) -> None:
    """A stop (SIGTERM, as a deploy sends) ends the server within shutdown_grace + 5 s even
    while a stream is running; it used to wait for the stream forever."""
    port = free_port()
    with server_process(["-m", "agentrun_asgi", "serve", "tests.apps.agent_app:endless",
                         "--port", str(port), *mode, "--log-level", "warning"],
                        port) as proc:  # fmt: skip
        first = threading.Event()

        def read_stream() -> None:
            body = {**USER, "stream": True}
            try:
                with httpx.stream("POST", proc.base_url + "/v1/chat/completions", json=body,
                                  timeout=90) as r:  # fmt: skip
                    for _ in r.iter_lines():
                        first.set()
            except httpx.HTTPError:
                pass  # cut at the stop: what this test allows

        reader = threading.Thread(target=read_stream, daemon=True)
        reader.start()
        assert first.wait(30)
        proc.proc.send_signal(signal.SIGTERM)  # the supervisor only
        try:
            proc.proc.wait(45)  # grace 0.5 s + 5 s, and ample room for a slow machine
        except subprocess.TimeoutExpired:
            pytest.fail("the server was still running 45 s after SIGTERM")
        reader.join(10)


def test_console_script() -> None:
    script = shutil.which("agentrun-asgi", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the agentrun-asgi script is not installed (pip install -e .)")
    port = free_port()
    # No PYTHONPATH: the script itself must make the working directory's modules importable.
    with server_process([script, "serve", TARGET, "--port", str(port), "--log-level", "warning"],
                        port, env={"PYTHONPATH": ""}) as proc:  # fmt: skip
        r = httpx.post(proc.base_url + "/v1/chat/completions", json=USER, timeout=10)
    assert r.json()["choices"][0]["message"]["content"] == "Hello from agent_app: hi"
    help_out = subprocess.run([script, "serve", "--help"], capture_output=True, text=True,
                              timeout=30, cwd=ROOT)  # fmt: skip
    assert help_out.returncode == 0 and "--workers" in help_out.stdout


def test_help() -> None:
    top = run_cli("--help")
    assert top.returncode == 0 and "serve" in top.stdout
    serve = run_cli("serve", "--help")
    assert serve.returncode == 0
    for option in ("--host", "--port", "--workers", "--reload", "--log-level", "package.module"):
        assert option in serve.stdout, option
    bare = run_cli()
    assert bare.returncode == 2 and "serve" in bare.stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:agent", "cannot import module 'no_such_module_xyz'"),
        ("tests.apps.agent_app", "expected 'package.module:function'"),
        ("tests.apps.agent_app:missing", "has no 'missing'"),
        ("tests.apps.agent_app:ANSWER", "is a str, not a function"),
        # Callable, but not as agent(request): once served, every request was a 500.
        ("examples.starlette_mount:app", "'app' is an ASGI app, not an agent function"),
        ("agentrun_asgi:AgentRunServer", "'AgentRunServer' is a class, not a function"),
        ("os:getcwd", "'getcwd' must take one argument, the request; its signature is getcwd()"),
        # Was "RecursionError: maximum recursion depth exceeded".
        ("agentrun_asgi:app", "is the app that serves $AGENTRUN_AGENT itself"),
    ],
)
def test_bad_target_exits_non_zero(target: str, message: str) -> None:
    result = run_cli("serve", target, "--port", str(free_port()))
    assert result.returncode == 2
    assert result.stderr.startswith("agentrun-asgi: error: "), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_bad_option_exits_non_zero() -> None:
    assert run_cli("serve", "--port", "nope").returncode == 2
    assert run_cli("serve", "--workers", "0").returncode == 2
    assert run_cli("serve", "--log-level", "loud").returncode == 2


@pytest.mark.parametrize(("option", "value"), [("--port", "70000"), ("--port", "-1"),
                                             ("--workers", "0")])  # fmt: skip
def test_out_of_range_option_is_refused_with_the_serve_usage(option: str, value: str) -> None:
    """Not served on another port (uvicorn binds 70000 as 70000 - 65536 = 4464, while the
    routes printed say 70000): refused, with the usage of ``serve``, where the option is."""
    result = run_cli("serve", "--port", str(free_port()), option, value)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: agentrun-asgi serve"), result.stderr
    assert f"argument {option}: must be " in result.stderr
    assert result.stdout == ""


def test_describe_for_a_wildcard_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTRUN_AGENT", raising=False)
    text = describe(default_app(), "0.0.0.0", 8123)
    assert "http://127.0.0.1:8123/v1/chat/completions" in text
    assert build_parser().parse_args(["serve"]).port == 9000


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import agentrun_asgi

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"agentrun-asgi {agentrun_asgi.__version__}"


def test_describe_for_port_0_names_no_port_it_cannot_know(monkeypatch: pytest.MonkeyPatch) -> None:
    """The system picks the port when uvicorn binds, after the banner: a curl line to port 0
    would be one that cannot connect."""
    monkeypatch.delenv("AGENTRUN_AGENT", raising=False)
    text = describe(default_app(), "127.0.0.1", 0)
    assert ":0/" not in text and ":0 " not in text
    assert "http://127.0.0.1:<port>/v1/chat/completions" in text
    assert "which uvicorn's \"Uvicorn running on\" line names" in text


def test_ctrl_c_stops_the_server_cleanly() -> None:
    """As ``uvicorn`` does: Ctrl+C shuts down and exits 0, with no KeyboardInterrupt traceback."""
    port = free_port()
    with server_process(["-m", "agentrun_asgi", "serve", TARGET, "--port", str(port)],
                        port) as proc:  # fmt: skip
        proc.proc.send_signal(signal.SIGINT)
        code = proc.proc.wait(15)
        output = proc.output()
    assert "Application shutdown complete" in output
    assert "Traceback" not in output, output
    assert code == 0


@pytest.mark.parametrize("option", [{"workers": 2}, {"reload": True}])
def test_start_refuses_what_needs_an_import_string(
    option: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``start()`` serves this object in this process: uvicorn would silently run one worker
    and never reload, so it says how to get them instead."""
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)  # never serve
    server = AgentRunServer(lambda request: "ok")
    with pytest.raises(ValueError, match="import string"):
        server.start(host="127.0.0.1", port=free_port(), **option)


@pytest.mark.parametrize("level", ["logging.DEBUG", "None", "'WARNING'"])
def test_start_takes_the_log_levels_uvicorn_takes(level: str) -> None:
    """uvicorn takes a level name in any case, a ``logging`` number or None: ``start()`` used to
    fail on the last two with an AttributeError from building its log config."""
    port = free_port()
    script = ("import logging; from tests.apps.agent_app import app; "
              f"app.start(host='127.0.0.1', port={port}, log_level={level})")  # fmt: skip
    with server_process(["-c", script], port) as proc:
        r = httpx.post(proc.base_url + "/v1/chat/completions", json=USER, timeout=10)
        proc.proc.send_signal(signal.SIGINT)
        code = proc.proc.wait(15)
        output = proc.output()
    assert r.json()["choices"][0]["message"]["content"] == "Hello from agent_app: hi"
    assert code == 0 and "Traceback" not in output, output


def test_start_gives_uvicorn_a_level_name_its_table_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn up to some 0.4x, the 0.30 floor included, looks a level name up in its
    lowercase ``LOG_LEVELS`` as given: ``start(log_level="WARNING")`` failed there with a
    KeyError before binding; newer uvicorn lowercases it, so only the name passed shows it."""
    import uvicorn
    from uvicorn.config import LOG_LEVELS

    given: list[Any] = []
    monkeypatch.setattr(uvicorn.Server, "run",
                        lambda self, sockets=None: given.append(self.config.log_level))  # fmt: skip
    AgentRunServer(lambda request: "ok").start(host="127.0.0.1", port=free_port(),
                                                  log_level="WARNING")  # fmt: skip
    assert given == ["warning"] and given[0] in LOG_LEVELS


def test_start_on_a_unix_socket_removes_it_when_stopped(tmp_path: Path) -> None:
    """As ``uvicorn.run`` does: the socket file of ``uds=`` goes with the server; it was left
    behind, and a client (a proxy) connecting to it was refused instead of finding none."""
    path = tmp_path / "agent.sock"
    script = f"from tests.apps.agent_app import app; app.start(uds={str(path)!r})"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), timeout=2) as client:
            while True:
                try:
                    r = client.post("http://agent/v1/chat/completions", json=USER)
                    break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < deadline, "never served"
                    time.sleep(0.1)
        assert r.json()["choices"][0]["message"]["content"] == "Hello from agent_app: hi"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0]
    assert not path.exists(), output


def test_the_agent_check_leaves_server_builders_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Serve's import string names a function of no argument that builds the server: the
    one-argument check is for agents only, and ``agentrun_asgi:app`` is a server there."""
    from agentrun_asgi.ray_serve import build_server

    monkeypatch.delenv("AGENTRUN_AGENT", raising=False)
    monkeypatch.delattr("agentrun_asgi.app", raising=False)
    assert isinstance(build_server("agentrun_asgi.loader:default_app"), AgentRunServer)
    monkeypatch.setenv("AGENTRUN_AGENT", TARGET)
    assert isinstance(build_server("agentrun_asgi:app"), AgentRunServer)
