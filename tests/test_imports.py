"""Importing the package stays cheap, and ``agentrun_asgi:app`` serves the right agent."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, env: dict[str, str] | None = None, cwd: Path | None = None
               ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "AGENTRUN_AGENT"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full_env, cwd=cwd or ROOT, timeout=60)


def test_import_pulls_in_no_framework() -> None:
    result = run_python("""
        import sys
        import agentrun_asgi
        from agentrun_asgi import AgentRunServer
        AgentRunServer(lambda r: "x")
        heavy = ("uvicorn", "fastapi", "starlette", "pydantic", "pydantic_core")
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_import_leaves_what_only_some_servers_need_for_later() -> None:
    """Start-up time is measured (#4): worker threads (sync agents only) and hashlib's OpenSSL
    load (API keys only) are imported when a server needs them, not with the package."""
    result = run_python("""
        import sys
        import anyio  # anyio before 4.15 imports its to_thread itself: not ours to defer
        later = [m for m in ("anyio.to_thread", "hmac", "hashlib") if m not in sys.modules]
        from agentrun_asgi import AgentRunServer

        async def agent(request):
            return "x"

        AgentRunServer(agent)
        print(sorted(m for m in later if m in sys.modules))
        AgentRunServer(lambda request: "x")  # a sync agent: threads ready before any request
        print("anyio.to_thread" in sys.modules)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "True"]


def test_ray_deployment_without_ray_names_the_extra() -> None:
    """Ray is an extra: without it ``deployment()`` said only "No module named 'ray'"; it now
    gives the install command, as ``metrics=True`` does."""
    result = run_python("""
        import sys
        sys.modules["ray"] = None  # not installed
        from agentrun_asgi.ray_serve import deployment
        try:
            deployment("tests.apps.agent_app:app")
        except ImportError as exc:
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    assert "pip install 'agentrun-asgi[ray]'" in result.stdout


def _serve_app_in_process(env: dict[str, str]) -> Any:
    """Load ``agentrun_asgi.app`` in a fresh interpreter and answer one streamed request."""
    return run_python("""
        import json, asyncio
        import agentrun_asgi
        app = agentrun_asgi.app
        assert agentrun_asgi.app is app  # built once

        async def main():
            body = json.dumps({"messages": [{"role": "user", "content": "hello"}],
                               "stream": True}).encode()
            scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
                     "root_path": "", "headers": [(b"content-type", b"application/json")],
                     "query_string": b"", "raw_path": b"/v1/chat/completions"}
            sent = []
            done = asyncio.Event()
            inbox = [{"type": "http.request", "body": body, "more_body": False}]
            async def receive():
                if inbox:
                    return inbox.pop(0)
                await done.wait()
                return {"type": "http.disconnect"}
            async def send(message):
                sent.append(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    done.set()
            await app(scope, receive, send)
            frames = b"".join(m.get("body", b"") for m in sent[1:]).split(b"\\n\\n")
            chunks = [json.loads(f[6:]) for f in frames if f and f != b"data: [DONE]"]
            deltas = [c["choices"][0]["delta"] for c in chunks]
            print(json.dumps({"status": sent[0]["status"], "deltas": deltas}))

        asyncio.run(main())
    """, env={"AGENTRUN_DEMO_DELAY": "0", **env})


def test_app_without_env_serves_demo_agent() -> None:
    result = _serve_app_in_process({})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["status"] == 200
    deltas = out["deltas"]
    text = "".join(d.get("content", "") for d in deltas)
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert "hello" in text
    assert reasoning
    assert calls and calls[0]["function"]["name"]
    assert deltas[0]["role"] == "assistant"


def test_app_with_env_serves_named_agent(tmp_path: Path) -> None:
    (tmp_path / "my_agent_mod.py").write_text(
        "def answer(request):\n    return 'custom agent: ' + request.messages[-1].text\n"
    )
    result = _serve_app_in_process({"AGENTRUN_AGENT": "my_agent_mod:answer",
                                    "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    deltas = json.loads(result.stdout)["deltas"]
    assert "".join(d.get("content", "") for d in deltas) == "custom agent: hello"


def test_app_with_env_naming_a_server_serves_it(tmp_path: Path) -> None:
    (tmp_path / "my_server_mod.py").write_text(
        "from agentrun_asgi import AgentRunServer\n"
        "server = AgentRunServer(lambda request: 'configured server')\n"
    )
    result = _serve_app_in_process({"AGENTRUN_AGENT": "my_server_mod:server",
                                    "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    deltas = json.loads(result.stdout)["deltas"]
    assert "".join(d.get("content", "") for d in deltas) == "configured server"


@pytest.mark.parametrize(
    "spec, words",
    [
        ("no_colon_here", "expected 'package.module:function'"),
        ("surely_missing_module_xyz:func", "cannot import module"),
        ("json:no_such_function", "has no 'no_such_function'"),
        ("json:__name__", "not a function"),
    ],
)
def test_bad_env_agent_is_a_clear_error(spec: str, words: str) -> None:
    result = run_python("import agentrun_asgi; agentrun_asgi.app", env={"AGENTRUN_AGENT": spec})
    assert result.returncode != 0
    assert "AgentLoadError" in result.stderr
    assert repr(spec) in result.stderr
    assert words in result.stderr


def test_env_agent_module_that_fails_on_import(tmp_path: Path) -> None:
    (tmp_path / "broken_agent_mod.py").write_text("raise KeyError('OPENAI_API_KEY')\n")
    result = run_python("import agentrun_asgi; agentrun_asgi.app",
                        env={"AGENTRUN_AGENT": "broken_agent_mod:agent",
                             "PYTHONPATH": str(tmp_path)})
    assert result.returncode != 0
    assert "AgentLoadError" in result.stderr
    assert "'broken_agent_mod:agent'" in result.stderr
    assert "KeyError" in result.stderr and "OPENAI_API_KEY" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_uvicorn_cli_serves_app() -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "AGENTRUN_AGENT"}
    env["AGENTRUN_DEMO_DELAY"] = "0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "agentrun_asgi:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        health = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"uvicorn exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert health is not None, "uvicorn did not answer in time"
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                       json={"messages": [{"role": "user", "content": "hi"}]}, timeout=10)
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["tool_calls"]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
