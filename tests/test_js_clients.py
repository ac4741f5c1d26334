"""The official JavaScript clients (``openai``, ``@ag-ui/client``) against a real uvicorn.

The README promises that the official OpenAI clients just work and that AG-UI front-ends consume
the stream; ``test_openai_client.py`` runs the Python client, this module the Node ones. Each
``tests/js/*.mjs`` script (but ``helpers.mjs``, which they import) drives one server with the
client's own helpers (``stream()``, ``runTools``, ``responses.stream()``,
``HttpAgent.runAgent``, which validates every event against the 1.0 schemas and checks their
order) and prints ``ok <check>`` per check or exits non-zero with the reason. The agent below
runs the scenario the last user message names.

The npm packages are installed once into a cache dir outside the repo (``AGENTRUN_JS_CACHE``, by
default ``~/.cache/agentrun-asgi/js``); the tests are skipped, saying why, when ``node``/``npm``
is missing or the install fails (no registry). openai 6.x: 7.x needs Node 22.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import run_server

import agentrun_asgi.demo
from agentrun_asgi import AgentEvent, AgentRequest, AgentResponse, AgentRunServer, EventType

pytestmark = pytest.mark.slow

PACKAGES = {"openai": "6.49.0", "@ag-ui/client": "1.0.0", "@ag-ui/core": "1.0.0"}
SCRIPTS = Path(__file__).parent / "js"
INSTALL_TIMEOUT = 300
RUN_TIMEOUT = 90

E = AgentEvent
T = EventType
USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
APPROVAL = {"type": "object", "properties": {"approved": {"type": "boolean"}},
            "required": ["approved"]}  # fmt: skip
#: Runs the scripts count through the "calls" scenario (a retried 500, a closed stream).
CALLS = {"counted_fail": 0, "slow_closed": 0}


# -- the scenarios ---------------------------------------------------------------------------


async def _chunks(request: AgentRequest) -> AsyncIterator[Any]:
    """Two calls streamed as fragments: each call's first chunk alone has its id and name."""
    yield "Let me look. "
    yield E(T.TOOL_CALL_CHUNK, {"id": "call_a", "name": "weather", "args_delta": '{"ci'})
    yield E(T.TOOL_CALL_CHUNK, {"args_delta": 'ty": "Paris"}'})
    yield E(T.TOOL_CALL_CHUNK, {"id": "call_b", "name": "clock", "args_delta": ""})
    yield E(T.TOOL_CALL_CHUNK, {"args_delta": '{"tz": "UTC"}'})


async def _interleaved(request: AgentRequest) -> AsyncIterator[Any]:
    """Text and reasoning between the id-less fragments of one call: it stays one call."""
    yield E(T.TOOL_CALL_CHUNK, {"id": "call_i", "name": "search", "args_delta": '{"q": '})
    yield "while "
    yield E(T.TOOL_CALL_CHUNK, {"args_delta": '"cats"'})
    yield E(T.REASONING, {"delta": "hm"})
    yield E(T.TOOL_CALL_CHUNK, {"args_delta": "}"})
    yield "searching"


async def _parallel(request: AgentRequest) -> AsyncIterator[Any]:
    """Two calls at once with no text before them, run by the client (front-end tools)."""
    yield E(T.REASONING, {"delta": "two at once"})
    yield E(T.TOOL_CALL, {"id": "call_p1", "name": "weather", "args": {"city": "Oslo"}})
    yield E(T.TOOL_CALL, {"id": "call_p2", "name": "clock", "args": {}})


async def _tool_results(request: AgentRequest) -> AsyncIterator[Any]:
    """Calls with results (AG-UI sends them; OpenAI has no place for them), then text."""
    yield E(T.REASONING, {"delta": "thinking"})
    yield E(T.TOOL_CALL, {"id": "call_r", "name": "lookup", "args": {"q": 1}})
    yield E(T.TOOL_RESULT_CHUNK, {"id": "call_r", "delta": "fou"})
    yield E(T.TOOL_RESULT_CHUNK, {"id": "call_r", "delta": "nd"})
    yield E(T.TOOL_CALL, {"id": "call_s", "name": "noargs", "args": None})
    yield E(T.TOOL_RESULT, {"id": "call_s", "result": {"ok": True}})
    yield "done"


async def _error(request: AgentRequest) -> AsyncIterator[str]:
    yield "partial "
    yield "answer"
    raise RuntimeError("the upstream model went away")


async def _error_event(request: AgentRequest) -> AsyncIterator[Any]:
    yield "partial"
    yield E(T.ERROR, {"message": "quota used up", "code": "rate_limit_exceeded"})


async def _usage(request: AgentRequest) -> AsyncIterator[Any]:
    yield "counted "
    yield E(T.TEXT, {"delta": "words", "usage": USAGE})


def _fail(request: AgentRequest) -> str:
    raise ValueError("no answer for you")


def _whole(request: AgentRequest) -> AgentResponse:
    return AgentResponse(
        content="It is sunny.",
        reasoning_content="Weather question.",
        tool_calls=[{"id": "call_w", "name": "weather", "arguments": '{"city":"Oslo"}'}],
        usage=USAGE,
    )


async def _state(request: AgentRequest) -> AsyncIterator[Any]:
    yield E(T.STATE, {"snapshot": {"count": 1, "items": ["a"]}})
    yield "counting"
    yield E(T.STATE, {"delta": [{"op": "replace", "path": "/count", "value": 2}]})
    yield E(T.STATE, {"delta": [{"op": "add", "path": "/items/-", "value": "b"}]})
    yield E(T.CUSTOM, {"name": "progress", "value": {"done": True}})


async def _hitl(request: AgentRequest) -> AsyncIterator[Any]:
    """Asks for approval (the run ends with an interrupt), acts on the resumed run."""
    answer = next((r for r in request.resume or () if r.get("interruptId") == "ask-1"), None)
    if answer is None:
        yield E(T.STATE, {"snapshot": {"status": "awaiting"}})
        yield "May I? "
        yield E(T.HITL, {"id": "ask-1", "type": "approval", "prompt": "Delete it?",
                         "options": ["yes", "no"], "schema": APPROVAL})  # fmt: skip
        return
    yield E(T.STATE, {"delta": [{"op": "replace", "path": "/status", "value": "done"}]})
    yield "Deleted." if (answer.get("payload") or {}).get("approved") else "Kept."


async def _approve_call(request: AgentRequest) -> AsyncIterator[Any]:
    """Proposes a call and asks to run it; the resumed run runs it and gives its result."""
    if not request.resume:
        yield E(T.TOOL_CALL, {"id": "call_del", "name": "delete_file", "args": {"path": "x"}})
        yield E(T.HITL, {"id": "run-it", "type": "approval", "prompt": "Run delete_file?",
                         "tool_call_id": "call_del"})  # fmt: skip
        return
    yield E(T.TOOL_RESULT, {"id": "call_del", "result": "deleted"})
    yield "Done."


async def _run_tools(request: AgentRequest) -> AsyncIterator[Any]:
    """Calls the client's tool, then answers with what its tool message brought back."""
    results = [m.text for m in request.messages if m.role.value == "tool"]
    if not results:
        yield E(T.TOOL_CALL, {"id": "call_t", "name": "weather", "args": {"city": "Oslo"}})
        return
    yield "The tool said: " + results[-1]


def _inspect(request: AgentRequest) -> AgentEvent:
    """What the request brought, as a state snapshot the client compares with what it sent."""
    messages = [
        {"role": m.role.value, "text": m.text, "toolCallId": m.tool_call_id,
         "toolCalls": [c.id for c in m.tool_calls or ()]}
        for m in request.messages
    ]  # fmt: skip
    return E(T.STATE, {"snapshot": {
        "messages": messages, "threadId": request.thread_id, "runId": request.run_id,
        "state": request.state, "tools": [t.name for t in request.tools or ()],
        "context": request.context, "forwardedProps": request.forwarded_props,
    }})  # fmt: skip


def _counted_fail(request: AgentRequest) -> str:
    """Fails and counts its runs: a client that retried the 500 would run it again."""
    CALLS["counted_fail"] += 1
    raise RuntimeError("failed once")


async def _slow(request: AgentRequest) -> AsyncIterator[str]:
    """Streams for 10 s unless the client leaves; counts the closes."""
    try:
        for i in range(200):
            yield f"{i} "
            await asyncio.sleep(0.05)
    finally:
        CALLS["slow_closed"] += 1


def _calls(request: AgentRequest) -> AgentResponse:
    return AgentResponse(content=orjson.dumps(CALLS).decode())


SCENARIOS: dict[str, Any] = {
    "demo": agentrun_asgi.demo.demo_agent,
    "chunks": _chunks,
    "interleaved": _interleaved,
    "parallel": _parallel,
    "tool_results": _tool_results,
    "error": _error,
    "error_event": _error_event,
    "usage": _usage,
    "empty": lambda request: "",
    "fail": _fail,
    "whole": _whole,
    "state": _state,
    "hitl": _hitl,
    "approve_call": _approve_call,
    "run_tools": _run_tools,
    "inspect": _inspect,
    "counted_fail": _counted_fail,
    "slow": _slow,
    "calls": _calls,
}


def scenario_agent(request: AgentRequest) -> Any:
    """Runs the scenario the last user message names (the demo agent for any other text)."""
    last = request.last_user_message
    return SCENARIOS.get(last.text if last is not None else "", SCENARIOS["demo"])(request)


# -- node, npm and the server ------------------------------------------------------------------


def _install(target: Path, npm: str) -> str | None:
    """``npm install`` of PACKAGES into a fresh dir renamed to ``target``; None, or why not."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="install-", dir=target.parent))
    except OSError as exc:
        return f"no cache dir ({exc}); set AGENTRUN_JS_CACHE"
    manifest = {"name": "agentrun-asgi-js-tests", "private": True, "dependencies": PACKAGES}
    (work / "package.json").write_text(json.dumps(manifest))
    cmd = [npm, "install", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"]
    try:
        done = subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT)  # fmt: skip
    except subprocess.TimeoutExpired:
        shutil.rmtree(work, ignore_errors=True)
        return f"npm install took over {INSTALL_TIMEOUT} s"
    if done.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return f"npm install failed: {' / '.join(lines[:4])[:400]}"
    try:
        work.rename(target)
    except OSError:  # another session installed it first
        shutil.rmtree(work, ignore_errors=True)
    return None


@pytest.fixture(scope="module")
def js_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dir of this run's own holding a copy of the scripts and a link to the cache's
    node_modules (an ES module finds its packages from where it lies). Not the cache dir
    itself: a run from another checkout at the same time would swap its scripts for ours."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the JavaScript clients (not on PATH)")
    default = Path.home() / ".cache" / "agentrun-asgi" / "js"
    cache = Path(os.environ.get("AGENTRUN_JS_CACHE") or default)
    key = hashlib.sha256(json.dumps(PACKAGES, sort_keys=True).encode()).hexdigest()[:12]
    target = cache / key
    if not (target / "node_modules" / "openai" / "package.json").exists():
        why = _install(target, npm)
        if why is not None:
            pytest.skip(f"the JavaScript clients could not be installed: {why}")
    run_dir = tmp_path_factory.mktemp("js")
    (run_dir / "node_modules").symlink_to(target / "node_modules", target_is_directory=True)
    for script in SCRIPTS.glob("*.mjs"):
        shutil.copyfile(script, run_dir / script.name)
    return run_dir


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(agentrun_asgi.demo, "DELAY", 0.0)
        with run_server(AgentRunServer(scenario_agent)) as url:
            yield url


def run_script(js_dir: Path, name: str, base_url: str) -> list[str]:
    """Runs one script against the server; the checks it reports as passed."""
    try:
        done = subprocess.run(["node", name, base_url], cwd=js_dir, capture_output=True,
                              text=True, timeout=RUN_TIMEOUT)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{name} ran over {RUN_TIMEOUT} s; output so far:\n{exc.stdout}{exc.stderr}")
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return [line[3:] for line in done.stdout.splitlines() if line.startswith("ok ")]


# -- the tests ---------------------------------------------------------------------------------


def test_openai_chat_completions_and_models(js_dir: Path, base_url: str) -> None:
    """create (JSON, SSE, include_usage), stream(), runTools, typed errors, models."""
    assert run_script(js_dir, "openai_chat.mjs", base_url) == [
        "nonStream", "streamWithUsage", "streamToolCallChunks", "streamEmpty", "streamHelper",
        "runTools", "errorMidStream", "errors", "abort", "models",
    ]  # fmt: skip


def test_openai_responses(js_dir: Path, base_url: str) -> None:
    """responses.create (JSON and stream), responses.stream(), a failed run, typed errors."""
    assert run_script(js_dir, "openai_responses.mjs", base_url) == [
        "nonStream", "streamCreate", "streamHelper", "interleavedCall", "failedStream", "errors",
    ]  # fmt: skip


def test_agui_http_agent(js_dir: Path, base_url: str) -> None:
    """HttpAgent.runAgent: valid runs, the messages and state it builds, HITL resume."""
    assert run_script(js_dir, "agui_client.mjs", base_url) == [
        "demo", "toolCallChunks", "interleaved", "parallelCalls", "toolResults", "wholeResponse",
        "usage", "empty", "errors", "state", "hitl", "approveCall", "conversation", "abort",
        "httpError",
    ]  # fmt: skip
