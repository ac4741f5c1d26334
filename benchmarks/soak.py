"""Soak test: many mixed requests against one server process; memory must stay flat.

    python benchmarks/soak.py --requests 100000 [--concurrency 32]

Starts one uvicorn subprocess on 127.0.0.1 serving an ``AgentRunServer`` and sends a mix of
requests with bounded concurrency: chat completions (JSON and SSE), AG-UI runs, input errors
(400/404/405/413), agent faults, and early disconnects (a stream closed after its first
chunk). Reports the server's RSS after warm-up and at the end (growth must stay under 5 %) and
counts requests that should have succeeded and did not (must be 0). Exit status 1 on failure.
Not part of CI: it runs for minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

KINDS = {
    "json": 25, "sse": 25, "agui": 20, "bad_json": 4, "not_found": 3, "bad_method": 3,
    "too_large": 3, "fault": 7, "disconnect": 10,
}  # fmt: skip
MAX_BODY = 64 * 1024


# -- the server process ------------------------------------------------------------------------


def serve(port: int) -> None:
    import anyio

    from agentrun_asgi import AgentRequest, AgentRunServer

    async def agent(request: AgentRequest) -> Any:
        text = request.messages[-1].text
        if text == "fault":
            raise RuntimeError("soak fault")
        if text == "long":
            for i in range(500):
                yield f"{i} "
                await anyio.sleep(0.002)
            return
        for i in range(20):
            yield f"token{i} "

    # The faults are logged with their tracebacks, as they should be; not to the terminal here.
    log = logging.getLogger("agentrun_asgi")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    app = AgentRunServer(agent, max_body_size=MAX_BODY)
    app.uvicorn_server(host="127.0.0.1", port=port, log_level="error", access_log=False).run()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the client --------------------------------------------------------------------------------


def chat(content: str, stream: bool = False) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "stream": stream}


async def one(client: Any, base: str, kind: str) -> bool:
    """Send one request of ``kind``; True when the answer is the expected one."""
    if kind == "json":
        r = await client.post(base + "/v1/chat/completions", json=chat("hi"))
        content = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else ""
        return "token19" in content
    if kind == "sse":
        r = await client.post(base + "/v1/chat/completions", json=chat("hi", stream=True))
        return r.status_code == 200 and r.text.endswith("data: [DONE]\n\n") and "token19" in r.text
    if kind == "agui":
        r = await client.post(base + "/ag-ui/agent", json=chat("hi"))
        return r.status_code == 200 and '"RUN_FINISHED"' in r.text and "token19" in r.text
    if kind == "bad_json":
        r = await client.post(base + "/v1/chat/completions", content=b'{"messages": [')
        return r.status_code == 400
    if kind == "not_found":
        return (await client.get(base + "/v2/nothing")).status_code == 404
    if kind == "bad_method":
        return (await client.put(base + "/v1/models")).status_code == 405
    if kind == "too_large":
        r = await client.post(base + "/v1/chat/completions", content=b"x" * (MAX_BODY + 1))
        return r.status_code == 413
    if kind == "fault":
        if random.random() < 0.5:
            r = await client.post(base + "/v1/chat/completions", json=chat("fault"))
            return r.status_code == 500 and r.json()["error"]["message"] == "soak fault"
        r = await client.post(base + "/ag-ui/agent", json=chat("fault"))
        return r.status_code == 200 and '"RUN_ERROR"' in r.text
    if kind == "disconnect":
        path, body = random.choice([("/v1/chat/completions", chat("long", stream=True)),
                                    ("/ag-ui/agent", chat("long"))])  # fmt: skip
        async with client.stream("POST", base + path, json=body) as r:
            async for _ in r.aiter_raw():
                break  # leave after the first chunk: the connection is closed
        return r.status_code == 200
    raise ValueError(kind)


async def soak(base: str, pid: int, total: int, concurrency: int, warmup: int) -> int:
    import httpx

    kinds = random.choices(list(KINDS), weights=list(KINDS.values()), k=total)
    outcomes: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    rss: dict[str, int] = {}
    done = 0
    started = time.monotonic()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for kind in kinds:
        queue.put_nowait(kind)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal done
            while not queue.empty():
                kind = queue.get_nowait()
                try:
                    ok = await one(client, base, kind)
                except Exception as exc:  # a transport error is a failure too
                    ok = False
                    errors[f"{kind}: {type(exc).__name__}"] += 1
                outcomes[kind] += 1
                if not ok:
                    failures[kind] += 1
                done += 1
                if done == warmup:
                    rss["warm"] = rss_kib(pid)
                if done % 10000 == 0:
                    rate = done / (time.monotonic() - started)
                    print(f"  {done:>7} requests, {rate:6.0f}/s, RSS {rss_kib(pid) / 1024:.1f} MiB",
                          flush=True)  # fmt: skip

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    await asyncio.sleep(1.0)  # let cancelled runs and closed connections settle
    rss["end"] = rss_kib(pid)
    elapsed = time.monotonic() - started

    growth = (rss["end"] - rss["warm"]) / rss["warm"] * 100
    print(f"\nrequests: {done} in {elapsed:.0f} s ({done / elapsed:.0f}/s), "
          f"concurrency {concurrency}")  # fmt: skip
    print("mix:", dict(outcomes))
    print(f"failed (should have succeeded): {sum(failures.values())} {dict(failures)}")
    if errors:
        print("client-side exceptions:", dict(errors))
    print(f"server RSS after {warmup} warm-up requests: {rss['warm'] / 1024:.1f} MiB; "
          f"at the end: {rss['end'] / 1024:.1f} MiB; growth {growth:+.2f} %")  # fmt: skip
    ok = sum(failures.values()) == 0 and growth < 5.0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=None,
                        help="requests before the first RSS reading (default: 5 %%, min 1000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0

    random.seed(args.seed)
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)
        warmup = args.warmup or max(1000, args.requests // 20)
        return asyncio.run(soak(base, proc.pid, args.requests, args.concurrency, warmup))
    finally:
        proc.terminate()
        proc.wait(20)


if __name__ == "__main__":
    sys.exit(main())
