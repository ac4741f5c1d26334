"""The stream writer's hot-path behaviour: coalescing, and back-pressure from a slow reader."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import openai
import pytest

from agentrun_asgi import AgentEvent, AgentRequest, AgentResponse, AgentRunServer, EventType
from agentrun_asgi.protocols.openai import ChatStreamEncoder
from agentrun_asgi.requests import Request
from agentrun_asgi.streaming import MAX_CHUNK, _pump

USER = [{"role": "user", "content": "hi"}]
#: The request ``_pump`` checks for a stopped run (none here); its body is never read.
REQUEST = Request({"type": "http", "headers": []}, receive=None)  # type: ignore[arg-type]


def _frames(body: bytes) -> list[bytes]:
    return [f for f in body.split(b"\n\n") if f]


async def _pump_into(items: AsyncIterator[Any]) -> list[bytes]:
    sent: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["body"])

    encoder = ChatStreamEncoder("chatcmpl-x", 0, "m", False)
    await _pump(send, items, encoder, REQUEST)  # type: ignore[arg-type]
    return sent


@pytest.mark.anyio
async def test_ready_items_share_one_write() -> None:
    async def burst() -> AsyncIterator[str]:
        for i in range(50):
            yield f"t{i} "

    sent = await _pump_into(burst())
    assert len(sent) == 1  # 50 frames, the finish frame and [DONE]: one write
    frames = _frames(sent[0])
    assert len(frames) == 52 and frames[-1] == b"data: [DONE]"


@pytest.mark.anyio
async def test_pending_frames_go_out_before_the_agent_waits() -> None:
    """Nothing ready is held back while the agent suspends."""
    sent: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["body"])

    async def agent() -> AsyncIterator[str]:
        yield "a "
        yield "b "
        await anyio.sleep(0.01)
        yield "c "

    encoder = ChatStreamEncoder("chatcmpl-x", 0, "m", False)
    await _pump(send, agent(), encoder, REQUEST)  # type: ignore[arg-type]
    # "a" and "b" were written (one chunk) before the agent slept, "c" and the end after it.
    assert len(sent) == 2 and len(_frames(sent[0])) == 2


@pytest.mark.anyio
async def test_a_long_burst_is_cut_at_max_chunk() -> None:
    big = "x" * 4096

    async def burst() -> AsyncIterator[str]:
        for _ in range(100):
            yield big

    sent = await _pump_into(burst())
    assert len(sent) > 1
    assert all(len(chunk) < MAX_CHUNK + 8192 for chunk in sent)
    assert sum(len(_frames(chunk)) for chunk in sent) == 102


@pytest.mark.anyio
async def test_nothing_after_an_error_inside_an_agent_response() -> None:
    """An ``AgentResponse`` whose events hold an ERROR ends the stream there, as the same
    events yielded one by one do: no frame after the error frame."""

    async def answer() -> AsyncIterator[Any]:
        yield AgentResponse(content="after", events=[
            AgentEvent(EventType.TEXT, {"delta": "before"}),
            AgentEvent(EventType.ERROR, {"message": "boom"})])  # fmt: skip
        yield "never"

    frames = _frames(b"".join(await _pump_into(answer())))
    assert b'"before"' in frames[0]
    assert frames[-1].startswith(b'data: {"error":') and len(frames) == 2


@pytest.mark.anyio
async def test_awaitable_that_is_not_a_coroutine() -> None:
    """An ``__anext__`` returning a plain future still works (no eager step is possible)."""

    class Ticker:
        def __init__(self) -> None:
            self.n = 0

        def __aiter__(self) -> Ticker:
            return self

        def __anext__(self) -> asyncio.Future[str]:
            self.n += 1
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            if self.n > 3:
                future.set_exception(StopAsyncIteration())
            else:
                future.set_result(f"t{self.n} ")
            return future

    sent = await _pump_into(Ticker())  # type: ignore[arg-type]
    body = b"".join(sent)
    assert body.count(b'"content"') == 3 and body.endswith(b"data: [DONE]\n\n")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_coalesced_frames_are_separate_chunks_for_the_openai_client(serve: Any) -> None:
    tokens = [f"w{i} " for i in range(200)]

    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        for token in tokens:  # all ready at once: written as a few large chunks
            yield token

    with serve(AgentRunServer(agent)) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="x")
        chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True))
    contents = [c.choices[0].delta.content for c in chunks
                if c.choices and c.choices[0].delta.content]  # fmt: skip
    assert contents == tokens
    assert chunks[-1].choices[0].finish_reason == "stop"


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_slow_reader_slows_the_agent(serve: Any) -> None:
    """50 MB offered to a client that stops reading: the agent waits, memory stays flat."""
    piece = "y" * 65536
    total = 800  # 800 x 64 KiB = 50 MiB of text
    produced = 0
    lock = threading.Lock()

    async def agent(request: AgentRequest) -> AsyncIterator[str]:
        nonlocal produced
        for _ in range(total):
            with lock:
                produced += 1
            yield piece
            await asyncio.sleep(0)  # a real agent awaits its model between tokens

    body = b'{"stream":true,"messages":[{"role":"user","content":"hi"}]}'
    with serve(AgentRunServer(agent)) as base:
        port = int(base.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
        sock.sendall(head + b"\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        rss_before = _rss_mib()
        time.sleep(1.5)  # the client reads nothing
        with lock:
            stalled_at = produced
        rss_stalled = _rss_mib()
        received = 0
        sock.settimeout(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            data = sock.recv(1 << 20)
            if not data:
                break
            received += len(data)
            if data.endswith(b"0\r\n\r\n"):
                break
        sock.close()
    print(f"[back-pressure] produced {stalled_at}/{total} pieces while stalled; RSS "
          f"{rss_before:.1f} -> {rss_stalled:.1f} MiB; received {received / 2**20:.1f} MiB")
    # Kernel buffers on loopback hold a few MiB at most: far from the 50 MiB offered.
    assert stalled_at < total // 4
    assert rss_stalled - rss_before < 25
    assert received > total * 65536  # then everything arrived
