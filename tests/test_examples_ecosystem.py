"""The ecosystem examples, each run for real: tool calls, reasoning, an OpenAI-compatible
backend (another agentrun-asgi server on loopback), the Starlette mount and gunicorn workers."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import openai
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agui_verify import parse_sse, verify
from apps.process import ROOT, free_port, server_process

from agentrun_asgi import (
    AgentEvent,
    AgentRequest,
    AgentRunServer,
    AGUIProtocolHandler,
    EventType,
    OpenAIProtocolHandler,
)
from agentrun_asgi.protocols.responses import OpenAIResponsesProtocolHandler

EXAMPLES = ROOT / "examples"
_loaded = 0


def load(name: str) -> ModuleType:
    """A fresh import of ``examples/<name>.py`` (its module-level server is new each time)."""
    global _loaded
    _loaded += 1
    spec = importlib.util.spec_from_file_location(f"example_{name}_{_loaded}",
                                                  EXAMPLES / f"{name}.py")  # fmt: skip
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=10)


def agui_run(base: str, text: str) -> list[dict[str, Any]]:
    run = {"threadId": "t", "runId": "r", "messages": [{"id": "1", "role": "user",
                                                        "content": text}]}  # fmt: skip
    r = httpx.post(base + "/ag-ui/agent", json=run, timeout=10)
    assert r.status_code == 200
    return verify(parse_sse(r.content))


def test_tool_calls_example(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    example = load("tool_calls")
    monkeypatch.setattr(example, "DELAY", 0)
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
    with serve(example.server) as base:
        oai = client(base)
        question: Any = [{"role": "user", "content": "weather in Paris?"}]
        chunks = list(oai.chat.completions.create(model="m", messages=question, tools=tools,
                                                  stream=True))  # fmt: skip
        fragments = [c.choices[0].delta.tool_calls[0] for c in chunks
                     if c.choices[0].delta.tool_calls]  # fmt: skip
        # Turn 2: the client ran the tool and sends its result back.
        call = {"id": fragments[0].id, "type": "function",
                "function": {"name": "get_weather",
                             "arguments": "".join(f.function.arguments or "" for f in fragments
                                                  if f.function)}}  # fmt: skip
        answer = oai.chat.completions.create(model="m", messages=[
            *question, {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "22 C, sunny"}])
        events = agui_run(base, "weather in Paris?")
    assert len(fragments) > 2, "the call should be streamed in several fragments"
    assert fragments[0].id == "call_weather_1" and fragments[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}  # type: ignore[index]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert answer.choices[0].message.content == "The tool says: 22 C, sunny"
    kinds = [e["type"] for e in events]
    assert kinds.count("TOOL_CALL_START") == 1 and kinds.count("TOOL_CALL_END") == 1
    # The chunk stream opens the call (id, name) once, then one fragment per argument piece.
    assert kinds.count("TOOL_CALL_ARGS") == len(fragments) - 1


def test_reasoning_example(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    example = load("reasoning")
    monkeypatch.setattr(example, "DELAY", 0)
    # The example's agent behind the default protocols plus the Responses API.
    server = AgentRunServer(example.invoke_agent, protocols=[
        OpenAIProtocolHandler(), AGUIProtocolHandler(), OpenAIResponsesProtocolHandler()])
    user: Any = [{"role": "user", "content": "Is 91 prime?"}]
    with serve(server) as base:
        oai = client(base)
        chunks = list(oai.chat.completions.create(model="m", messages=user, stream=True))
        whole = oai.chat.completions.create(model="m", messages=user)
        response = oai.responses.create(model="m", input="Is 97 prime?")
        events = agui_run(base, "Is 97 prime?")
    thoughts = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                       for c in chunks)  # fmt: skip
    assert thoughts.startswith("I need to check whether 91 is prime.")
    assert thoughts.endswith("So 91 is not prime.")
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "91 is not prime."
    assert whole.choices[0].message.model_extra["reasoning_content"] == thoughts  # type: ignore[index]
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output_text == "97 is prime."
    kinds = [e["type"] for e in events]
    assert kinds.index("REASONING_START") < kinds.index("REASONING_END") < kinds.index(
        "TEXT_MESSAGE_START")


def test_openai_backend_example(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example in front, a second agentrun-asgi server on loopback as its backend."""
    seen: list[AgentRequest] = []

    async def backend_agent(request: AgentRequest) -> Any:
        seen.append(request)
        yield AgentEvent(EventType.REASONING, {"delta": "backend thinks"})
        yield "from "
        yield "the backend"
        yield AgentEvent(EventType.TOOL_CALL_CHUNK, {"id": "call_b", "name": "lookup",
                                                     "args_delta": '{"q":'})  # fmt: skip
        yield AgentEvent(EventType.TOOL_CALL_CHUNK, {"id": "call_b", "args_delta": '"x"}'})
        yield AgentEvent(EventType.TEXT, {"delta": "", "usage": {
            "prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}})

    with serve(AgentRunServer(backend_agent)) as backend:
        monkeypatch.setenv("OPENAI_BASE_URL", backend + "/v1")
        monkeypatch.delenv("OPENAI_MODEL", raising=False)
        example = load("openai_backend")
        tools: Any = [{"type": "function", "function": {"name": "lookup", "description": "Look",
                                                        "parameters": {"type": "object"}}}]
        with serve(example.server) as front:
            oai = client(front)
            user: Any = [{"role": "user", "content": "hello backend"}]
            chunks = list(oai.chat.completions.create(
                model="backend-model", messages=user, tools=tools, stream=True,
                stream_options={"include_usage": True}))
            events = agui_run(front, "over AG-UI")
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "from the backend"
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                        for c in chunks if c.choices)  # fmt: skip
    assert reasoning == "backend thinks"
    calls = [c.choices[0].delta.tool_calls[0] for c in chunks
             if c.choices and c.choices[0].delta.tool_calls]  # fmt: skip
    assert calls[0].id == "call_b" and calls[0].function.name == "lookup"  # type: ignore[union-attr]
    assert "".join(c.function.arguments or "" for c in calls) == '{"q":"x"}'  # type: ignore[union-attr]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 11
    # What the backend was asked: the front's messages, model and tools, passed through.
    assert seen[0].messages[-1].text == "hello backend" and seen[0].model == "backend-model"
    assert seen[0].stream and seen[0].tools is not None and seen[0].tools[0].name == "lookup"
    assert seen[1].messages[-1].text == "over AG-UI"
    text = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == "from the backend"
    assert [e["toolCallName"] for e in events if e["type"] == "TOOL_CALL_START"] == ["lookup"]


def test_starlette_mount_example(serve: Any) -> None:
    example = load("starlette_mount")
    with serve(example.app, lifespan="on") as base:
        oai = client(base + "/agent")
        user: Any = [{"role": "user", "content": "hi"}]
        chunks = list(oai.chat.completions.create(model="m", messages=user, stream=True))
        status = httpx.get(base + "/status").json()
    assert [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content] == [
        "Hello ", "from Starlette: hi"]
    assert status == {"app": "host", "agent": "/agent/v1"}


def test_run_gunicorn_script() -> None:
    bin_dir = str(Path(sys.executable).parent)
    if shutil.which("gunicorn", path=bin_dir + os.pathsep + os.environ.get("PATH", "")) is None:
        pytest.skip("gunicorn is not installed")
    if importlib.util.find_spec("uvicorn_worker") is None:
        pytest.skip("uvicorn-worker is not installed")
    port = free_port()
    env = {"AGENTRUN_AGENT": "tests.apps.agent_app:invoke_agent", "WORKERS": "2",
           "BIND": f"127.0.0.1:{port}", "LOG_LEVEL": "warning",
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}  # fmt: skip
    with server_process(["sh", str(EXAMPLES / "run_gunicorn.sh")], port, env=env,
                        python=False) as proc:  # fmt: skip
        oai = client(proc.base_url)
        user: Any = [{"role": "user", "content": "hi"}]
        answers = {oai.chat.completions.create(model="m", messages=user).choices[0].message.content
                   for _ in range(4)}  # fmt: skip
        chunks = list(oai.chat.completions.create(model="m", messages=user, stream=True))
    assert answers == {"Hello from agent_app: hi"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from agent_app: hi"


def test_ray_serve_example_builds_its_app_and_its_replicas_server(serve: Any) -> None:
    """``examples/ray_serve.py`` without a cluster: the module builds its bound Serve app, and
    the server ``build_server`` makes on each replica streams its answer (Serve itself, with
    replicas and its proxy, is tests/test_ray_serve.py's, in the slow group)."""
    pytest.importorskip("ray.serve", reason="ray[serve] is not installed (pip install '.[ray]')")
    example = load("ray_serve")
    assert type(example.app).__name__ == "Application"  # what serve.run() takes
    with serve(example.build_server()) as base:
        user: Any = [{"role": "user", "content": "hi"}]
        chunks = list(client(base).chat.completions.create(model="m", messages=user, stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert "".join(pieces) == f"Replica {os.getpid()} heard: hi "
    assert len(pieces) == 4  # one chunk per word: streamed, not buffered
