"""What keeps the request path lean, checked as behaviour (never as timings).

A served request must leave no reference cycle behind: garbage that only the cyclic collector
can free makes collections (and their pauses) scale with the request rate. Counted with
``gc.collect()``, which returns how many unreachable objects it found.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest

from agentrun_asgi import AgentRequest, AgentRunServer
from agentrun_asgi.routing import Route, Router

from asgi_driver import call


async def tokens(request: AgentRequest) -> AsyncIterator[str]:
    for word in ("one ", "two ", "three"):
        yield word


def sync_tokens(request: AgentRequest) -> Iterator[str]:
    yield from ("one ", "two ", "three")


CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
CHAT_STREAM = orjson.dumps(
    {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
)
AGUI = orjson.dumps(
    {"threadId": "t", "runId": "r", "messages": [{"id": "1", "role": "user", "content": "hi"}]}
)
RESPONSES = orjson.dumps({"model": "m", "input": "hi"})

REQUESTS = [
    ("POST", "/v1/chat/completions", CHAT, 200),
    ("POST", "/v1/chat/completions", CHAT_STREAM, 200),
    ("POST", "/ag-ui/agent", AGUI, 200),
    ("POST", "/v1/responses", RESPONSES, 200),
    ("GET", "/v1/models", b"", 200),
    ("GET", "/health", b"", 200),
    ("POST", "/v1/chat/completions", b"{not json", 400),
    ("GET", "/nowhere", b"", 404),
]


@pytest.mark.parametrize("agent", [tokens, sync_tokens], ids=["async-gen", "sync-gen"])
@pytest.mark.parametrize(("method", "path", "body", "status"), REQUESTS)
def test_a_request_leaves_no_reference_cycle(
    agent: Any, method: str, path: str, body: bytes, status: int
) -> None:
    server = AgentRunServer(agent)

    async def serve(times: int) -> None:
        for _ in range(times):
            response = await call(server, method, path, body)
            assert response.status == status, response.body

    asyncio.run(serve(3))  # warm: first-use caches, thread pools, lazy imports
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        asyncio.run(serve(20))
        # asyncio.run() itself (a loop, its selector, the runner) may leave a few; twenty
        # requests leaving one cycle each would leave far more.
        assert gc.collect() < 20
    finally:
        if enabled:
            gc.enable()


def test_static_paths_take_the_shortcut_and_match_like_the_tree() -> None:
    async def endpoint(request: Any, send: Any) -> None:
        raise AssertionError

    router = Router(
        [Route("/v1/chat/completions", endpoint), Route("/v1/{name}", endpoint, ("GET",)),
         Route("/", endpoint, ("GET",))]
    )  # fmt: skip
    assert set(router._static) == {"/v1/chat/completions", "/"}
    for path in ("/v1/chat/completions", "/v1/chat/completions/", "//v1//chat/completions"):
        match = router.match(path)
        assert match is not None and match[2] is None and "POST" in match[0]
    assert router.match("/v1/models") == (match_of(router, "/v1/models"))
    assert router.match("/v1/chat/more") is None


def match_of(router: Router, path: str) -> Any:
    match = router.match(path)
    assert match is not None
    assert match[2] == {"name": path.rsplit("/", 1)[1]}
    return match
