"""The server object, unchanged, under each ASGI server: uvicorn, hypercorn, granian, gunicorn.

Each test starts the real server as a subprocess on a free loopback port serving
``tests.apps.agent_app:app``, waits for ``/health``, then runs what a server could break: the
official ``openai`` client streaming and not, an AG-UI run parsed from its SSE body, and a
Responses API stream. The process group is always stopped, also when the test fails.
"""

from __future__ import annotations

import importlib.util
import sys
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
USER: Any = [{"role": "user", "content": "hi"}]


def _commands(port: int) -> dict[str, list[str]]:
    bind = f"127.0.0.1:{port}"
    return {
        "uvicorn": ["-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning"],
        "hypercorn": ["-m", "hypercorn", APP, "--bind", bind, "--log-level", "warning"],
        "granian": ["-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port",
                    str(port), "--log-level", "warning", APP],
        "gunicorn": ["-m", "gunicorn", APP, "--worker-class", "uvicorn_worker.UvicornWorker",
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
