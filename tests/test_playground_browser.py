"""The playground in a real headless Chromium, driven by Playwright, against a real uvicorn.

Each test opens the page the server itself serves, types into it as a person would, and
asserts on what the page rendered from the live stream: text, reasoning, tool calls, AG-UI
state, errors, the HITL form and its resumed run, the stop button and the API key prompt.
The console is watched too: a CSP violation or a script error fails the test.

Needs the Debian ``chromium`` package (``/usr/bin/chromium``, or ``PLAYGROUND_CHROMIUM``) and
the ``playwright`` Python package; ``playwright install`` is never needed. With
``PLAYGROUND_SCREENSHOT=path.png`` the AG-UI demo test saves a screenshot there.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentrun_asgi import AgentEvent, AgentRequest, AgentRunServer, EventType
from agentrun_asgi.demo import demo_agent

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = os.environ.get("PLAYGROUND_CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"chromium not found at {CHROMIUM} (apt-get install chromium, or set "
        "PLAYGROUND_CHROMIUM)", allow_module_level=True,
    )  # fmt: skip
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
expect = sync_api.expect

LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT_MS = 10_000  # generous: only catches hangs


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """A fresh browser context on the playground, recording console errors and requests."""

    def __init__(self, browser: Any, url: str, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("request", self._request)
        response = self.page.goto(url)
        assert response is not None and response.status == 200
        expect(self.page.locator("#input")).to_be_focused()

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _request(self, request: Any) -> None:
        if request.method == "POST":
            self.posts.append((request.url, json.loads(request.post_data or "null")))

    def protocol(self, name: str) -> None:
        label = {"openai": "OpenAI Chat Completions", "agui": "AG-UI"}[name]
        self.page.get_by_label(label).check()

    def send(self, text: str) -> None:
        box = self.page.get_by_label("Message")
        box.fill(text)
        box.press("Enter")

    def answer(self) -> Any:
        """The last assistant turn, once its stream has ended."""
        turn = self.page.locator(".turn.assistant").last
        expect(turn).to_be_visible()
        expect(turn).not_to_have_attribute("aria-busy", "true")
        expect(self.page.locator("#send")).to_be_enabled()
        return turn

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    pages: list[Page] = []

    def opener(url: str, **context: Any) -> Page:
        page = Page(browser, url, **context)
        pages.append(page)
        return page

    yield opener
    for page in pages:
        page.close()


def _demo_server(**kwargs: Any) -> AgentRunServer:
    return AgentRunServer(demo_agent, **kwargs)


# -- the demo agent on both protocols ---------------------------------------------------------


def test_openai_stream_renders_reasoning_tool_call_and_text(serve: Any, open_page: Any) -> None:
    with serve(_demo_server()) as base:
        ui = open_page(base + "/playground")
        box = ui.page.get_by_label("Message")
        box.type("Hello")
        box.press("Shift+Enter")  # a newline, not a send
        box.type("there")
        assert box.input_value() == "Hello\nthere"
        assert ui.posts == []
        box.press("Enter")
        turn = ui.answer()
        expect(turn.locator(".text")).to_contain_text("Hello! You said: 'Hello\\nthere'. It is")
        reasoning = turn.locator("details.reasoning")
        expect(reasoning.locator("summary")).to_have_text("Reasoning")
        expect(reasoning).to_contain_text("The user wrote 11 characters. I will check the time.")
        expect(turn.locator(".tool-name")).to_have_text("get_time")
        # Arguments arrive as a JSON string and are shown pretty-printed.
        assert turn.locator(".tool-args").inner_text() == '{\n  "timezone": "UTC"\n}'
        expect(turn.locator(".tool-result")).to_have_count(0)  # OpenAI streams carry no results
        expect(ui.page.locator(".turn.user .text")).to_have_text("Hello\nthere")
        first_answer = turn.locator(".text").inner_text()

        ui.send("And again")
        second = ui.answer()
        expect(second.locator(".text")).to_contain_text("You said: 'And again'")
        expect(ui.page.locator("#error")).to_be_hidden()
        # The raw panel has the request and the frames as they came.
        ui.page.get_by_text("Raw frames").click()
        expect(ui.page.locator("#raw")).to_contain_text('"reasoning_content"')
        expect(ui.page.locator("#raw")).to_contain_text("data: [DONE]")

    (url1, body1), (url2, body2) = ui.posts
    assert url1 == url2 == base + "/v1/chat/completions"
    assert "model" not in body1  # the agent sees the server's default model, not a fixed name
    assert body1["stream"] is True and body1["messages"] == [
        {"role": "user", "content": "Hello\nthere"}
    ]
    # The history goes with the next request: the answer's text, not the unanswered tool call.
    assert body2["messages"] == [
        {"role": "user", "content": "Hello\nthere"},
        {"role": "assistant", "content": first_answer},
        {"role": "user", "content": "And again"},
    ]
    assert ui.errors == []


def test_agui_stream_renders_tool_result_and_screenshot(serve: Any, open_page: Any) -> None:
    with serve(_demo_server()) as base:
        ui = open_page(base + "/playground", viewport={"width": 980, "height": 680})
        ui.protocol("agui")
        ui.send("What time is it?")
        turn = ui.answer()
        expect(turn.locator(".text")).to_contain_text("You said: 'What time is it?'. It is")
        expect(turn.locator("details.reasoning")).to_contain_text("The user wrote 16 characters.")
        expect(turn.locator(".tool-name")).to_have_text("get_time")
        expect(turn.locator(".tool-args")).to_have_text('{\n  "timezone": "UTC"\n}')
        expect(turn.locator(".tool-result pre")).to_contain_text("UTC")
        time_text = turn.locator(".tool-result pre").inner_text()
        shot = os.environ.get("PLAYGROUND_SCREENSHOT")
        ui.page.get_by_text("Raw frames").click()
        expect(ui.page.locator("#raw")).to_contain_text('"type":"RUN_FINISHED"')
        if shot:
            ui.page.screenshot(path=shot)

        ui.send("Thanks")
        ui.answer()
    (url, first), (_, second) = ui.posts
    assert url == base + "/ag-ui/agent"
    assert first["messages"][0]["role"] == "user"
    assert first["messages"][0]["content"] == "What time is it?"
    assert second["threadId"] == first["threadId"] and second["runId"] != first["runId"]
    # AG-UI history: the call with its result, then the text that followed it.
    roles = [(m["role"], m.get("content"), m.get("toolCallId")) for m in second["messages"]]
    assert roles[0] == ("user", "What time is it?", None)
    assert roles[1][0] == "assistant"
    assert second["messages"][1]["toolCalls"][0]["function"] == {
        "name": "get_time",
        "arguments": '{"timezone":"UTC"}',
    }
    assert roles[2] == ("tool", time_text, "call_demo_clock")
    assert roles[3][0] == "assistant" and "It is" in roles[3][1]
    assert roles[4] == ("user", "Thanks", None)
    assert ui.errors == []


def test_narrow_window_has_no_horizontal_scroll(serve: Any, open_page: Any) -> None:
    with serve(_demo_server()) as base:
        ui = open_page(base + "/playground", viewport={"width": 380, "height": 700})
        ui.send("A fairly long question to see how the answer wraps on a phone screen")
        ui.answer()
        overflow = ui.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        # The composer stays reachable and usable.
        expect(ui.page.get_by_role("button", name="Send")).to_be_in_viewport()
    assert ui.errors == []


# -- AG-UI state, errors -----------------------------------------------------------------------


async def _state_agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
    if request.state:
        yield AgentEvent(EventType.STATE, {"delta": [
            {"op": "replace", "path": "/count", "value": request.state["count"] + 10},
        ]})  # fmt: skip
        yield "bumped"
        return
    yield AgentEvent(EventType.STATE, {"snapshot": {"count": 0, "items": [], "a/b": 1}})
    yield AgentEvent(EventType.STATE, {"delta": [
        {"op": "replace", "path": "/count", "value": 2},
        {"op": "add", "path": "/items/-", "value": "first"},
        {"op": "add", "path": "/items/0", "value": "zeroth"},
        {"op": "remove", "path": "/a~1b"},
    ]})  # fmt: skip
    yield "state set"


def test_agui_state_snapshot_and_json_patch(serve: Any, open_page: Any) -> None:
    with serve(AgentRunServer(_state_agent)) as base:
        ui = open_page(base + "/playground")
        ui.protocol("agui")
        ui.send("go")
        ui.answer()
        state = ui.page.locator("#state")
        expect(state).to_be_visible()  # the panel opens on the first state event
        assert json.loads(state.inner_text()) == {"count": 2, "items": ["zeroth", "first"]}
        ui.send("again")  # the state goes back with the next run
        expect(ui.answer().locator(".text")).to_have_text("bumped")
        assert json.loads(state.inner_text()) == {"count": 12, "items": ["zeroth", "first"]}
    assert ui.posts[1][1]["state"] == {"count": 2, "items": ["zeroth", "first"]}
    assert ui.errors == []


async def _prototype_agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
    """State deltas whose paths name ``__proto__`` (say, from a model told to write them)."""
    yield AgentEvent(EventType.STATE, {"snapshot": {"a": 1}})
    yield AgentEvent(EventType.STATE, {"delta": [
        {"op": "add", "path": "/__proto__/polluted", "value": "yes"},
    ]})  # fmt: skip
    yield AgentEvent(EventType.STATE, {"delta": [
        {"op": "add", "path": "/__proto__", "value": {"inner": True}},
        {"op": "add", "path": "/__proto__/x", "value": 2},
    ]})  # fmt: skip
    yield "done"


def test_agui_json_patch_never_reaches_object_prototype(serve: Any, open_page: Any) -> None:
    """RFC 6902 paths name members: ``/__proto__`` is a member like any other, and a path
    through one the state lacks is an error; it once led into the page's ``Object.prototype``
    (``/__proto__/polluted`` gave every object of the page a ``polluted``)."""
    with serve(AgentRunServer(_prototype_agent)) as base:
        ui = open_page(base + "/playground")
        ui.protocol("agui")
        ui.send("go")
        expect(ui.answer().locator(".text")).to_have_text("done")
        state = json.loads(ui.page.locator("#state").inner_text())
        assert state == {"a": 1, "__proto__": {"inner": True, "x": 2}}
        expect(ui.page.locator("#error-text")).to_contain_text("no such path")
        leaked = ui.page.evaluate("() => [({}).polluted, ({}).x, ({}).inner]")
    assert leaked == [None, None, None]
    assert ui.errors == []


async def _failing_agent(request: AgentRequest) -> AsyncIterator[str]:
    yield "partial "
    raise RuntimeError("the model backend is down")


def test_stream_errors_are_shown(serve: Any, open_page: Any) -> None:
    with serve(AgentRunServer(_failing_agent)) as base:
        ui = open_page(base + "/playground")
        error = ui.page.locator("#error")
        for protocol in ("openai", "agui"):
            ui.protocol(protocol)
            ui.send("hi " + protocol)
            turn = ui.answer()
            expect(turn.locator(".text")).to_have_text("partial ")
            expect(error).to_be_visible()
            expect(error).to_contain_text("the model backend is down")
            expect(turn).to_contain_text("Failed.")
            ui.page.get_by_role("button", name="Dismiss error").click()
            expect(error).to_be_hidden()
    assert ui.errors == []


def test_http_error_body_is_shown(serve: Any, open_page: Any) -> None:
    # A body limit too small for any request: the server answers 413 with its JSON error.
    with serve(_demo_server(max_body_size=8)) as base:
        ui = open_page(base + "/playground")
        ui.send("hello")
        ui.answer()
        expect(ui.page.locator("#error")).to_contain_text("HTTP 413")
    assert all("413" in e for e in ui.errors)  # the browser's own "Failed to load resource"


# -- human in the loop ------------------------------------------------------------------------

APPROVAL_SCHEMA = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean", "title": "Approve"},
        "note": {"type": "string", "title": "Note"},
    },
    "required": ["approved"],
}


def _assert_valid_history(messages: list[dict[str, Any]]) -> None:
    """What an OpenAI-backed agent needs: every tool call named, answered once, right after."""
    calls = [c for m in messages for c in m.get("toolCalls", ())]
    answered = [m["toolCallId"] for m in messages if m["role"] == "tool"]
    assert all(c["function"]["name"] for c in calls), calls
    assert sorted(c["id"] for c in calls) == sorted(answered)
    for i, message in enumerate(messages):
        for n, call in enumerate(message.get("toolCalls", ())):
            assert messages[i + 1 + n]["toolCallId"] == call["id"]


def test_hitl_interrupt_form_resumes_the_run(serve: Any, open_page: Any) -> None:
    """An interrupt about a tool call: the resumed run answers that call, and the call stays in
    the history under its own name and arguments. It was once dropped there, so the server made
    up a nameless call for the result, and the next request carried a call named ""."""
    seen: list[Any] = []

    async def hitl_agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
        call_id = f"call_ship_{sum(m.role == 'user' for m in request.messages)}"
        if request.resume:
            seen.append(request.resume)
            entry = request.resume[0]
            payload = json.dumps(entry.get("payload"), sort_keys=True)
            if entry["status"] == "resolved":
                yield AgentEvent(EventType.TOOL_RESULT, {"id": call_id, "result": "shipped 1.2"})
            yield f"Resumed: {entry['status']} {payload}"
            return
        yield "I need approval."
        yield AgentEvent(EventType.TOOL_CALL, {
            "id": call_id, "name": "ship_release", "args": {"version": "1.2"},
        })  # fmt: skip
        yield AgentEvent(EventType.HITL, {
            "id": "approve-1", "type": "confirmation", "prompt": "Ship the release?",
            "tool_call_id": call_id, "schema": APPROVAL_SCHEMA,
        })  # fmt: skip

    with serve(AgentRunServer(hitl_agent)) as base:
        ui = open_page(base + "/playground")
        ui.protocol("agui")
        ui.send("release")
        turn = ui.answer()
        expect(turn.locator(".text")).to_have_text("I need approval.")
        expect(turn.locator(".tool-name")).to_have_text("ship_release")
        expect(turn.locator(".tool-result")).to_have_count(0)
        form = ui.page.locator(".turn.assistant").nth(0).locator("form.interrupt")
        expect(form).to_contain_text("Ship the release?")
        expect(form.locator("legend")).to_have_text("Agent asks (confirmation)")
        form.get_by_label("Approve").check()
        form.get_by_label("Note").fill("go")
        form.get_by_role("button", name="Send answer").click()
        resumed = ui.answer()
        expect(resumed.locator(".text")).to_have_text(
            'Resumed: resolved {"approved": true, "note": "go"}'
        )
        # The result is shown with the call it answers, named as the first run named it.
        expect(resumed.locator(".tool")).to_have_count(1)
        expect(resumed.locator(".tool-name")).to_have_text("ship_release")
        expect(resumed.locator(".tool-args")).to_have_text('{\n  "version": "1.2"\n}')
        expect(resumed.locator(".tool-result pre")).to_have_text("shipped 1.2")
        expect(form.get_by_role("button", name="Send answer")).to_be_disabled()

        # A second interrupt, cancelled this time: the agent sends no result for its call.
        ui.send("another")
        form = ui.answer().locator("form.interrupt")
        form.get_by_role("button", name="Cancel").click()
        cancelled = ui.answer()
        expect(cancelled.locator(".text")).to_have_text("Resumed: cancelled null")
        expect(cancelled.locator(".tool")).to_have_count(0)
        ui.send("bye")
        ui.answer()
        raw = ui.page.locator("#raw").text_content() or ""

    assert seen == [
        [{"interruptId": "approve-1", "status": "resolved",
          "payload": {"approved": True, "note": "go"}}],
        [{"interruptId": "approve-1", "status": "cancelled"}],
    ]  # fmt: skip
    assert '"toolCallName":""' not in raw  # the server made up no call for the result
    bodies = [body for _, body in ui.posts]
    first, resume, after, cancel, bye = bodies
    assert "resume" not in first
    assert resume["threadId"] == first["threadId"]
    call = {"id": "call_ship_1", "type": "function",
            "function": {"name": "ship_release", "arguments": '{"version":"1.2"}'}}  # fmt: skip
    # The resume brings the call back, so that its result answers a call the server knows.
    assert [(m["role"], m.get("content"), m.get("toolCalls")) for m in resume["messages"]] == [
        ("user", "release", None),
        ("assistant", "I need approval.", None),
        ("assistant", None, [call]),
    ]
    # After it, the call is in the history once, with its result.
    shape = [(m["role"], m.get("content"), m.get("toolCalls"), m.get("toolCallId"))
             for m in after["messages"]]  # fmt: skip
    assert shape == [
        ("user", "release", None, None),
        ("assistant", "I need approval.", None, None),
        ("assistant", None, [call], None),
        ("tool", "shipped 1.2", None, "call_ship_1"),
        ("assistant", 'Resumed: resolved {"approved": true, "note": "go"}', None, None),
        ("user", "another", None, None),
    ]
    # The cancelled call got no result: it went with the resume, and is gone after it.
    assert cancel["messages"][-1]["toolCalls"][0]["id"] == "call_ship_2"
    assert bye["messages"][: len(after["messages"])] == after["messages"]
    assert [(m["role"], m.get("content")) for m in bye["messages"][len(after["messages"]):]] == [
        ("assistant", "I need approval."),
        ("assistant", "Resumed: cancelled null"),
        ("user", "bye"),
    ]
    for body in (after, bye):
        _assert_valid_history(body["messages"])
    assert ui.errors == []


# -- stop, API keys, mounting ------------------------------------------------------------------


def test_stop_button_aborts_and_the_server_cancels_the_agent(serve: Any, open_page: Any) -> None:
    cancelled = threading.Event()
    completed = threading.Event()

    async def slow_agent(request: AgentRequest) -> AsyncIterator[str]:
        try:
            for i in range(200):  # 10 s if nobody stops it
                yield f"w{i} "
                await asyncio.sleep(0.05)
            completed.set()
        finally:
            cancelled.set()

    with serve(AgentRunServer(slow_agent)) as base:
        ui = open_page(base + "/playground")
        ui.send("talk slowly")
        turn = ui.page.locator(".turn.assistant").last
        expect(turn.locator(".text")).to_contain_text("w2 ")
        stop = ui.page.get_by_role("button", name="Stop")
        expect(stop).to_be_enabled()
        stop.click()
        assert cancelled.wait(5), "the agent was not cancelled after Stop"
        assert not completed.is_set()
        ui.answer()
        expect(turn).to_contain_text("Stopped.")
        expect(ui.page.locator("#status")).to_have_text("Stopped.")
        expect(stop).to_be_disabled()
        expect(ui.page.locator("#error")).to_be_hidden()

        # "New chat" in the middle of a stream stops it and starts an empty history.
        ui.send("second")
        expect(ui.page.locator(".turn.assistant").last.locator(".text")).to_contain_text("w1 ")
        ui.page.get_by_role("button", name="New chat").click()
        expect(ui.page.locator(".turn")).to_have_count(0)
        ui.send("fresh")
        expect(ui.page.locator(".turn.assistant").last.locator(".text")).to_contain_text("w1 ")
        stop.click()
        ui.answer()
    second, fresh = ui.posts[1][1]["messages"], ui.posts[2][1]["messages"]
    # The stopped answer stays in the history as far as it got.
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"].startswith("w0 w1 w2 ")
    assert fresh == [{"role": "user", "content": "fresh"}]
    assert ui.errors == []


def test_api_key_prompt_uses_session_storage(serve: Any, open_page: Any) -> None:
    seen_auth: list[str | None] = []

    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        assert request.raw_request is not None
        seen_auth.append(request.raw_request.headers.get("authorization"))
        yield "authorised answer"

    with serve(AgentRunServer(agent, api_keys=["s3cret"])) as base:
        ui = open_page(base + "/playground")  # the page itself needs no key
        ui.send("hello")
        ui.answer()
        expect(ui.page.locator("#error")).to_contain_text("HTTP 401")
        expect(ui.page.locator("#error")).to_contain_text("Missing API key")
        key = ui.page.get_by_label("Key sent as Authorization: Bearer")
        expect(key).to_be_visible()
        expect(key).to_be_focused()
        expect(key).to_have_attribute("type", "password")
        key.fill("s3cret")
        key.press("Enter")
        expect(key).to_be_hidden()
        ui.send("hello again")
        expect(ui.answer().locator(".text")).to_have_text("authorised answer")
        stored = ui.page.evaluate(
            "[sessionStorage.getItem('agentrun-playground-key'), JSON.stringify(localStorage)]"
        )
    assert stored == ["s3cret", "{}"]
    assert seen_auth == ["Bearer s3cret"]
    assert ui.errors and all("401" in e for e in ui.errors)


def test_works_mounted_under_a_fastapi_prefix(serve: Any, open_page: Any) -> None:
    from fastapi import FastAPI

    host = FastAPI()
    host.mount("/agent", _demo_server().as_fastapi_app())
    with serve(host) as base:
        for path in ("/agent/playground", "/agent/playground/"):
            ui = open_page(base + path)
            ui.send("mounted")
            expect(ui.answer().locator(".text")).to_contain_text("You said: 'mounted'")
            ui.protocol("agui")
            ui.send("mounted agui")
            expect(ui.answer().locator(".tool-result")).to_contain_text("UTC")
            assert [url for url, _ in ui.posts] == [
                base + "/agent/v1/chat/completions",
                base + "/agent/ag-ui/agent",
            ]
            assert ui.errors == []
