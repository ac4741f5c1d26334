"""Ray Serve scale-out: two replicas of one AgentRunServer behind Serve's HTTP proxy.

A local Ray cluster (2 CPUs, no dashboard), Serve's proxy on a free loopback port, and the
official ``openai`` client plus raw SSE reads through it: frames, text, ``[DONE]``, and an
answer from each replica (the agent says its pid).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from agentrun_asgi import AgentRequest, AgentRunServer

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ray = pytest.importorskip("ray", reason="ray[serve] is not installed (pip install '.[ray]')")
serve = pytest.importorskip("ray.serve", reason="ray[serve] is not installed")

PIECES = ("Hello", " from", " replica")


async def agent(request: AgentRequest) -> AsyncIterator[str]:
    for piece in PIECES:
        yield piece
        await asyncio.sleep(0.1)  # apart, so that a buffering proxy would show
    yield f" {os.getpid()}"


def make_server() -> AgentRunServer:
    """Runs on each replica (this module is pickled by value: replicas cannot import it)."""
    return AgentRunServer(agent, playground=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def serve_url() -> Iterator[str]:
    from agentrun_asgi.ray_serve import deployment

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = deployment(make_server, num_replicas=2, ray_actor_options={"num_cpus": 0.5})
        serve.run(app, name="agentrun", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def stream_raw(base: str, text: str = "hi") -> tuple[list[bytes], int]:
    """One streamed chat completion read raw: its SSE frames, and how many reads it took."""
    body = {"model": "m", "messages": [{"role": "user", "content": text}], "stream": True}
    reads = 0
    raw = b""
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for chunk in resp.iter_bytes():
            reads += 1
            raw += chunk
    return [frame for frame in raw.split(b"\n\n") if frame.strip()], reads


def test_stream_through_serve_proxy(serve_url: str) -> None:
    frames, reads = stream_raw(serve_url)
    assert all(frame.startswith(b"data: ") for frame in frames)
    assert frames[-1] == b"data: [DONE]"
    chunks = [json.loads(frame[6:]) for frame in frames[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.startswith("".join(PIECES) + " ")
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    # Frames arrive as the agent makes them, not in one buffered piece at the end.
    assert reads >= len(PIECES)


def openai_stream(base: str) -> str:
    client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=30)
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_openai_client_reaches_both_replicas(serve_url: str) -> None:
    pids: set[str] = set()
    texts: list[str] = []
    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(5):  # bounded: a few rounds of concurrent streams
            texts += pool.map(lambda _: openai_stream(serve_url), range(6))
            pids |= {text.rsplit(" ", 1)[-1] for text in texts}
            if len(pids) >= 2:
                break
    prefix = "".join(PIECES) + " "
    assert all(text.startswith(prefix) and text[len(prefix) :].isdigit() for text in texts)
    assert len(pids) == 2, f"only replica(s) {pids} answered"


def test_health_and_errors_through_serve(serve_url: str) -> None:
    health = httpx.get(serve_url + "/health", timeout=30)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    missing = httpx.post(serve_url + "/v1/chat/completions", json={"model": "m"}, timeout=30)
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "messages"
