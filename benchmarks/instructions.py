"""``python -m benchmarks.instructions``: CPU instructions per request, counted, not timed.

Each target runs under ``valgrind --tool=callgrind`` (the same uvicorn flags as
``python -m benchmarks``, instrumentation off while it starts and warms up); then the count is
switched on, a fixed number of requests is sent over keep-alive connections, and the total is
divided by that number. The count is the server process's user-space instructions (uvicorn,
uvloop, httptools and the app; not the kernel), and it repeats to within 0.1% whatever else
the machine does, which makes it the instrument for changes too small for wrk to resolve on a
noisy machine (a 2-core VM here: +-25% between identical 3 s runs). It does not see cache
misses, so wall-clock ratios may differ from instruction ratios; both go in RESULTS.md.

``--work cold`` counts start-up instead: every instruction from the server process's first to
its first 200 (the interpreter, uvicorn, the app's imports and startup, the first request), the
deterministic counterpart of the cold-start wall time, which varies by +-20% a spawn here. Each
target is started once normally first, so that its bytecode caches exist, as after a regular
install.

Needs valgrind (Debian package ``valgrind``); slow (each request takes ~50x longer under it),
so the default count is 1000 requests per target.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .client import HOST
from .runner import WORK, Results, build_targets
from .servers import Target, free_port, running, start, wait_first_200

_CONTENT_LENGTH = re.compile(rb"content-length: (\d+)")


def _request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _response_end(buf: bytes) -> int:
    """Where the first whole response in ``buf`` ends (-1: not all here yet)."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return -1
    head = buf[:head_end].lower()
    if not head.startswith(b"http/1.1 200"):
        raise RuntimeError(f"not a 200: {bytes(buf[:80])!r}")
    length = _CONTENT_LENGTH.search(head)
    if length is not None:
        end = head_end + 4 + int(length.group(1))
        return end if len(buf) >= end else -1
    last = buf.find(b"\r\n0\r\n\r\n", head_end)  # chunked: the last chunk
    return last + 7 if last >= 0 else -1


def send_requests(port: int, request: bytes, count: int, connections: int) -> None:
    """``count`` requests over ``connections`` keep-alive connections, one in flight on each."""
    selector = selectors.DefaultSelector()
    buffers: dict[socket.socket, bytes] = {}
    left, done = count, 0
    for _ in range(min(connections, count)):
        sock = socket.create_connection((HOST, port))
        sock.sendall(request)
        left -= 1
        buffers[sock] = b""
        selector.register(sock, selectors.EVENT_READ)
    try:
        while done < count:
            events = selector.select(60)
            if not events:
                raise RuntimeError("no response within 60 s")
            for key, _ in events:
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data = sock.recv(1 << 20)
                if not data:
                    raise RuntimeError("the server closed a connection")
                buf = buffers[sock] + data
                while (end := _response_end(buf)) >= 0:
                    buf = buf[end:]
                    done += 1
                    if left:
                        sock.sendall(request)
                        left -= 1
                buffers[sock] = buf
    finally:
        for sock in buffers:
            sock.close()
        selector.close()


def count(target: Target, work: str, requests: int, connections: int) -> float:
    """Instructions per request of ``target`` serving ``work``; for ``cold``, instructions from
    the process's start to its first 200."""
    cold = work == "cold"
    protocol, body = WORK["json" if cold else work]
    path = target.paths[protocol]
    if cold:
        with running(target, path, body):
            pass  # a plain start: the target's bytecode caches are written, as pip does
    out = Path(tempfile.mkdtemp(prefix="callgrind-"))
    port = free_port()
    command = [
        "valgrind", "--tool=callgrind", f"--instr-atstart={'yes' if cold else 'no'}",
        f"--callgrind-out-file={out}/cg.%p",
        target.python, "-m", "uvicorn", target.app, "--host", HOST, "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    proc = start(command)
    try:
        wait_first_200(proc, port, path, body, timeout=300)
        control = ["callgrind_control"]
        if not cold:
            request = _request(path, body)
            send_requests(port, request, 300, connections)  # warm: caches, first-use paths
            subprocess.run([*control, "-i", "on", str(proc.pid)], capture_output=True, check=True)
            send_requests(port, request, requests, connections)
        subprocess.run([*control, "-d", str(proc.pid)], capture_output=True, check=True)
        total = 0
        for _ in range(50):  # the dump is written by the server process: wait for it
            dumps = list(out.glob("cg.*.1"))
            if dumps:
                text = dumps[0].read_text(errors="replace")
                found = re.search(r"^summary: (\d+)", text, re.M)
                if found:
                    total = int(found.group(1))
                    break
            time.sleep(0.1)
        if not total:
            raise RuntimeError("callgrind wrote no summary")
        return total if cold else total / requests
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("--targets", default="floor,starlette,project")
    parser.add_argument("--work", default="json", choices=("json", "sse", "agui", "cold"),
                        help="what to count (default json)")  # fmt: skip
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--sdk-python", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("skipped: valgrind is not installed (apt-get install valgrind)")
        return 0
    results = Results()
    targets = [t for t in build_targets(args, results) if not t.skip]  # says what it skips
    if args.work == "cold":
        print("instructions from the server process's start to its first 200 (callgrind, user"
              " space)")  # fmt: skip
    else:
        print(f"instructions per request, {args.work}, {args.requests} requests over "
              f"{args.connections} connections (callgrind, user space)")  # fmt: skip
    # The floor goes first whatever --targets says: every ratio printed is to its count.
    targets.sort(key=lambda t: t.name != "floor")
    floor = None
    for target in targets:
        per = count(target, args.work, args.requests, args.connections)
        floor = floor if floor is not None else per
        if args.work == "cold":
            print(f"  {target.name:10s} {per / 1e6:8.1f} M  ({per / floor:.3f}x the floor's)")
        else:
            print(f"  {target.name:10s} {per / 1000:8.1f} k  ({floor / per:.3f}x the floor's rate)")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
