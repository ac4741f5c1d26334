"""Fuzzing every route with hypothesis: whatever the body and headers, the answer is a 4xx with
an OpenAI-shaped JSON error body, or a valid success; never a 5xx, a traceback, or a hang.

The bulk runs in process (``asgi_driver``: no sockets, thousands of cases a second); a smaller
batch goes through a real uvicorn. ``FUZZ_EXAMPLES`` sets the case count (default 300 in CI);
the ``slow`` variant runs ``FUZZ_EXAMPLES`` or 10,000 cases:
``FUZZ_EXAMPLES=10000 pytest tests/test_fuzz.py -m slow -s``.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from asgi_driver import call
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentrun_asgi import AgentRequest, AgentRunServer

KEY = "fuzz-key"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
HANG_S = 5.0


def echo_agent(request: AgentRequest) -> str:
    """A well-behaved agent: any 5xx is then the server's fault."""
    last = request.messages[-1].text if request.messages else ""
    return f"echo {len(last)}"


PLAIN = AgentRunServer(echo_agent, api_keys=[])
LOADED = AgentRunServer(echo_agent, api_keys=[KEY], cors_origins=["https://a.test"],
                        request_timeout=HANG_S, max_body_size=64 * 1024)  # fmt: skip
AGUI_PATH = "/ag-ui/agent" if PLAIN.router.match("/ag-ui/agent") else None
ROUTES = [("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("GET", "/health"),
          ("POST", "/v1/responses")]  # fmt: skip
if AGUI_PATH:
    ROUTES.append(("POST", AGUI_PATH))
PATHS = [path for _, path in ROUTES] + ["/", "/v1", "/v1/chat/completions/", "//health",
                                        "/v1/models/x", "/nope", "/ag-ui"]  # fmt: skip

# -- strategies --------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20)
           | st.floats(allow_nan=False, allow_infinity=False))  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12,
)  # fmt: skip
roles = st.sampled_from(["user", "assistant", "system", "developer", "tool", "function",
                         "reasoning", "User", ""]) | json_values  # fmt: skip
content = (st.text(max_size=40) | json_values
           | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"])},
                                            optional={"text": json_values}), max_size=3))
openai_message = st.fixed_dictionaries(
    {},
    optional={"role": roles, "content": content, "name": json_values,
              "tool_calls": json_values | st.lists(st.fixed_dictionaries(
                  {}, optional={"id": json_values, "type": json_values,
                                "function": json_values | st.fixed_dictionaries(
                                    {}, optional={"name": json_values,
                                                  "arguments": json_values})}), max_size=2),
              "tool_call_id": json_values},
)  # fmt: skip
chat_body = st.fixed_dictionaries(
    {},
    optional={"messages": st.lists(openai_message, max_size=3) | json_values,
              "model": json_values, "stream": st.booleans() | json_values,
              "stream_options": json_values | st.fixed_dictionaries(
                  {}, optional={"include_usage": json_values}),
              "tools": json_values | st.lists(st.fixed_dictionaries(
                  {}, optional={"type": json_values, "function": json_values,
                                "name": json_values}), max_size=2),
              "tool_choice": json_values, "temperature": json_values, "top_p": json_values,
              "max_tokens": json_values, "max_completion_tokens": json_values,
              "stop": json_values, "n": json_values, "user": json_values,
              "extra_field": json_values},
)  # fmt: skip
agui_message = st.fixed_dictionaries(
    {},
    optional={"id": json_values, "role": roles, "content": content,
              "toolCalls": json_values, "toolCallId": json_values, "name": json_values},
)  # fmt: skip
agui_body = st.fixed_dictionaries(
    {},
    optional={"threadId": json_values, "runId": json_values, "parentRunId": json_values,
              "state": json_values, "messages": st.lists(agui_message, max_size=3) | json_values,
              "tools": json_values, "context": json_values, "forwardedProps": json_values,
              "resume": json_values},
)  # fmt: skip

responses_part = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "output_text", "text", "input_image"]) | json_values},
    optional={"text": json_values, "image_url": json_values, "detail": json_values},
)  # fmt: skip
responses_item = st.fixed_dictionaries(
    {},
    optional={"type": st.sampled_from(["message", "function_call", "function_call_output",
                                       "reasoning"]) | json_values,
              "role": roles, "content": content | st.lists(responses_part, max_size=2),
              "id": json_values, "call_id": json_values, "name": json_values,
              "arguments": json_values, "output": json_values},
)  # fmt: skip
responses_body = st.fixed_dictionaries(
    {},
    optional={"input": st.text(max_size=20) | st.lists(responses_item, max_size=3) | json_values,
              "model": json_values, "stream": st.booleans() | json_values,
              "instructions": json_values, "tools": json_values, "tool_choice": json_values,
              "temperature": json_values, "top_p": json_values, "max_output_tokens": json_values,
              "user": json_values, "metadata": json_values, "text": json_values,
              "truncation": json_values, "parallel_tool_calls": json_values,
              "previous_response_id": json_values},
)  # fmt: skip


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Bytes that are not (quite) JSON: truncated, invalid UTF-8, deep, huge numbers..."""
    valid = orjson.dumps(draw(chat_body | agui_body))
    kind = draw(st.sampled_from(["truncated", "utf8", "deep", "number", "binary", "surrogate",
                                 "empty", "ws", "nan"]))  # fmt: skip
    if kind == "truncated":
        return valid[: draw(st.integers(0, max(len(valid) - 1, 0)))]
    if kind == "utf8":
        at = draw(st.integers(0, len(valid)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]))
        return valid[:at] + bad + valid[at:]
    if kind == "deep":
        depth = draw(st.integers(1000, 1100))
        if draw(st.booleans()):
            return b"[" * depth + b"]" * depth
        return b'{"messages":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    if kind == "number":
        digits = draw(st.sampled_from([b"1" * 400, b"-" + b"9" * 30, b"1e999", b"-1e400",
                                       b"18446744073709551616", b"0.0000001e-400"]))  # fmt: skip
        field = draw(st.sampled_from([b"max_tokens", b"temperature", b"n", b"model"]))
        return (b'{"messages":[{"role":"user","content":"x"}],"' + field + b'":' + digits + b"}")
    if kind == "surrogate":
        return b'{"messages":[{"role":"user","content":"\\ud800"}],"model":"\\udfff"}'
    if kind == "empty":
        return b""
    if kind == "ws":
        return b"  \n\t "
    if kind == "nan":
        return b'{"messages":[{"role":"user","content":"x"}],"temperature":NaN}'
    return draw(st.binary(max_size=200))


bodies = (chat_body.map(orjson.dumps) | agui_body.map(orjson.dumps)
          | responses_body.map(orjson.dumps) | json_values.map(orjson.dumps)
          | raw_bodies())  # fmt: skip
content_types = st.sampled_from([None, b"application/json", b"text/plain",
                                 b"application/x-www-form-urlencoded", b"multipart/form-data",
                                 b"application/json; charset=latin-1", b"\xff\xfe", b""])
header_names = st.sampled_from([b"x-request-id", b"origin", b"accept", b"authorization",
                                b"access-control-request-method", b"user-agent", b"x-custom",
                                b"content-length", b"cookie"])  # fmt: skip
# Any byte an HTTP parser lets through in a header value (no control characters).
header_values = st.binary(max_size=200).map(
    lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F)
)


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.integers(0, 9)) < 8:
        method, path = draw(st.sampled_from(ROUTES))
    else:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS",
                                       "HEAD", "BREW"]))  # fmt: skip
        path = draw(st.sampled_from(PATHS))
    headers: list[tuple[bytes, bytes]] = []
    ctype = draw(content_types)
    if ctype is not None:
        headers.append((b"content-type", ctype))
    headers += draw(st.lists(st.tuples(header_names, header_values), max_size=4))
    loaded = draw(st.booleans())
    if loaded and draw(st.integers(0, 3)) > 0:
        headers.append((b"authorization", b"Bearer " + KEY.encode()))
    return {"method": method, "path": path, "headers": headers, "body": draw(bodies),
            "loaded": loaded}


# -- checks ------------------------------------------------------------------------------------


def check(status: int, headers: dict[str, str], body: bytes, method: str) -> None:
    assert 200 <= status < 500, f"status {status}: {body[:300]!r}"
    assert b"Traceback" not in body and b'File "' not in body
    if method == "HEAD" or status == 204:
        return
    ctype = headers.get("content-type", "")
    if status >= 400:
        assert ctype == "application/json", (status, ctype)
        payload = orjson.loads(body)
        assert set(payload) == {"error"}
        error = payload["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
        assert error["type"] == "invalid_request_error"
        return
    if ctype.startswith("text/event-stream"):
        frames = [f for f in body.decode().split("\n\n") if f]
        assert frames
        for frame in frames:
            if frame.startswith("event: "):  # the Responses API names each event
                frame = frame.partition("\n")[2]
            assert frame.startswith("data: "), frame
            data = frame[6:]
            if data != "[DONE]":
                event = orjson.loads(data)
                assert "error" not in event, event
                assert event.get("type") not in ("RUN_ERROR", "response.failed"), event
    else:
        assert ctype == "application/json"
        orjson.loads(body)


class Stats:
    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()

    def report(self, label: str) -> None:
        total = sum(self.statuses.values())
        print(f"\n[fuzz] {label}: {total} cases, statuses {dict(sorted(self.statuses.items()))}")


def run_in_process(n: int, stats: Stats) -> None:
    loop = asyncio.new_event_loop()

    @settings(max_examples=n, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])  # fmt: skip
    @given(case=cases())
    def one(case: dict[str, Any]) -> None:
        app = LOADED if case["loaded"] else PLAIN
        r = loop.run_until_complete(asyncio.wait_for(
            call(app, case["method"], case["path"], case["body"], case["headers"]), HANG_S
        ))  # fmt: skip
        assert r.complete, "the response never completed"
        stats.statuses[r.status] += 1
        check(r.status, {k.decode(): v.decode("latin-1") for k, v in r.headers}, r.body,
              case["method"])  # fmt: skip

    try:
        one()
    finally:
        loop.close()


def test_fuzz_in_process() -> None:
    stats = Stats()
    run_in_process(EXAMPLES, stats)
    stats.report("in process")


@pytest.mark.slow
def test_fuzz_in_process_long() -> None:
    stats = Stats()
    run_in_process(int(os.environ.get("FUZZ_EXAMPLES", "10000")), stats)
    stats.report("in process (long)")


@pytest.fixture(scope="module")
def live() -> Iterator[dict[bool, str]]:
    from conftest import run_server

    # h11 passes any token as a method to the app; httptools answers unknown ones itself.
    with run_server(PLAIN, http="h11") as plain, run_server(LOADED, http="h11") as loaded:
        yield {False: plain, True: loaded}


# Headers the HTTP client owns, or that the HTTP parser would reject before the app sees them.
_CLIENT_OWNED = {b"content-length", b"host", b"transfer-encoding", b"connection"}


def test_fuzz_over_uvicorn(live: dict[bool, str]) -> None:
    stats = Stats()

    with httpx.Client(timeout=HANG_S) as client:

        @settings(max_examples=max(EXAMPLES // 5, 20), deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow,
                                         HealthCheck.data_too_large])  # fmt: skip
        @given(case=cases())
        def one(case: dict[str, Any]) -> None:
            # Only what is valid HTTP/1.1: anything else never reaches the app (uvicorn's
            # parser answers it with its own plain-text 400).
            headers = [(k, bytes(c for c in v if c < 0x7F).strip()) for k, v in case["headers"]
                       if k not in _CLIENT_OWNED]  # fmt: skip
            r = client.request(case["method"], live[case["loaded"]] + case["path"],
                               content=case["body"], headers=headers)  # fmt: skip
            stats.statuses[r.status_code] += 1
            check(r.status_code, dict(r.headers), r.content, case["method"])

        one()
    stats.report("uvicorn")
