"""The server object, unchanged, under each ASGI server: uvicorn, hypercorn, granian, gunicorn.

Each test starts the real server as a subprocess on a free loopback port serving
``tests.apps.agent_app:app``, waits for ``/health``, then runs what a server could break: the
official ``openai`` client streaming and not, an AG-UI run parsed from its SSE body, and a
Responses API stream. The process group is always stopped, also when the test fails.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agui_verify import parse_sse, verify
from apps.agent_app import ANSWER
from apps.process import free_port, server_process

APP = "tests.apps.agent_app:app"
#: gunicorn's uvicorn worker that tells the app when it stops (the one the README names).
WORKER = "agentrun_asgi.gunicorn.UvicornWorker"
USER: Any = [{"role": "user", "content": "hi"}]


def _commands(port: int) -> dict[str, list[str]]:
    bind = f"127.0.0.1:{port}"
    return {
        "uvicorn": ["-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning"],
        "hypercorn": ["-m", "hypercorn", APP, "--bind", bind, "--log-level", "warning"],
        "granian": ["-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port",
                    str(port), "--log-level", "warning", APP],
        "gunicorn": ["-m", "gunicorn", APP, "--worker-class", WORKER,
                     "--bind", bind, "--workers", "2", "--log-level", "warning"],
    }  # fmt: skip


_NEEDS = {"uvicorn": ("uvicorn",), "hypercorn": ("hypercorn",), "granian": ("granian",),
          "gunicorn": ("gunicorn", "uvicorn_worker")}  # fmt: skip


def exercise(base: str) -> None:
    """OpenAI stream and non-stream, AG-UI run, Responses stream: all through one server."""
    oai = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=10)
    whole = oai.chat.completions.create(model="m", messages=USER)
    assert whole.choices[0].message.content == ANSWER
    assert whole.choices[0].message.model_extra == {"reasoning_content": "thinking"}
    chunks = list(oai.chat.completions.create(model="m", messages=USER, stream=True))
    assert len(chunks) > 3, "the answer should arrive in several chunks"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"
    tool = list(oai.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "use a tool"}], stream=True))
    calls = [c.choices[0].delta.tool_calls[0] for c in tool if c.choices[0].delta.tool_calls]
    assert calls[0].id == "call_1" and calls[0].function.name == "lookup"  # type: ignore[union-attr]
    assert "".join(c.function.arguments or "" for c in calls) == '{"q": "x"}'  # type: ignore[union-attr]

    run = {"threadId": "t1", "runId": "r1", "messages": [{"id": "m1", "role": "user",
                                                          "content": "hi"}]}  # fmt: skip
    r = httpx.post(base + "/ag-ui/agent", json=run, headers={"accept": "text/event-stream"},
                   timeout=10)  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = verify(parse_sse(r.content))
    assert events[0]["type"] == "RUN_STARTED" and events[-1]["type"] == "RUN_FINISHED"
    assert (events[0]["threadId"], events[-1]["runId"]) == ("t1", "r1")
    text = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == ANSWER

    stream = list(oai.responses.create(model="m", input="hi", stream=True))
    assert stream[0].type == "response.created" and stream[-1].type == "response.completed"
    assert stream[-1].response.output_text == ANSWER  # type: ignore[union-attr]


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "granian", "gunicorn"])
def test_under_asgi_server(server: str) -> None:
    missing = [m for m in _NEEDS[server] if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{server} is not installed (missing: {', '.join(missing)})")
    port = free_port()
    with server_process(_commands(port)[server], port) as proc:
        try:
            exercise(proc.base_url)
        except BaseException:
            print(proc.output())  # shown by pytest with the failure
            raise


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"stream": True, "messages": USER}),
    ("/ag-ui/agent", {"messages": [{"id": "1", "role": "user", "content": "hi"}]}),
])  # fmt: skip
def test_gunicorn_stop_ends_streams_with_their_error_frame(path: str, body: Any) -> None:
    """A deploy stops gunicorn with SIGTERM: a stream in flight gets ``shutdown_grace`` (0.5 s
    here), then its protocol's error frame, and the master exits 0. uvicorn-worker's own worker
    never told the app: the stream ran on until ``--graceful-timeout`` and was cut mid-body."""
    missing = [m for m in _NEEDS["gunicorn"] if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"gunicorn is not installed (missing: {', '.join(missing)})")
    port = free_port()
    args = ["-m", "gunicorn", "tests.apps.agent_app:endless", "--worker-class", WORKER,
            "--bind", f"127.0.0.1:{port}", "--workers", "2", "--graceful-timeout", "30",
            "--log-level", "warning"]  # fmt: skip
    with server_process(args, port) as proc:
        lines: list[str] = []
        first = threading.Event()

        def read_stream() -> None:
            with httpx.stream("POST", proc.base_url + path, json=body, timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        lines.append(line[5:].strip())
                        first.set()

        reader = threading.Thread(target=read_stream, daemon=True)
        reader.start()
        assert first.wait(30)
        proc.proc.send_signal(signal.SIGTERM)  # the master, as a deploy does
        reader.join(20)  # grace 0.5 s, and ample room for a slow machine; 30 s cut it before
        assert not reader.is_alive(), "the stream was still open 20 s after SIGTERM"
        try:
            code = proc.proc.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail("gunicorn was still running 20 s after SIGTERM")
        output = proc.output()
    last = json.loads(lines[-1])
    error = last if path == "/ag-ui/agent" else last["error"]
    assert error["code"] == "server_shutting_down", lines[-3:]
    assert code == 0 and "Traceback" not in output, output
