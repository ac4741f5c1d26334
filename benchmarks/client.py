"""A small raw-socket HTTP/1.1 client on asyncio: exact bytes, keep-alive, chunked bodies.

Used for the checks (status, frame counts, byte comparison), the Python load fallback and
the concurrent slow-streams runs. No third-party imports: it must not be what is measured.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"


@dataclass(slots=True)
class Response:
    status: int
    head: bytes  # status line and headers, as received
    body: bytes  # de-chunked
    chunks: list[bytes] = field(default_factory=list)  # chunked bodies: one item per chunk
    raw: bytes = b""  # the whole response as received

    def header(self, name: str) -> str | None:
        want = name.lower().encode()
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == want:
                return value.strip().decode("latin-1")
        return None

    @property
    def frames(self) -> int:
        """SSE events in the body (each ends with a blank line)."""
        return self.body.count(b"\n\n")


def request_bytes(method: str, path: str, body: bytes = b"", port: int = 0) -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> Response:
    return await read_body(reader, await reader.readuntil(b"\r\n\r\n"))


async def read_body(reader: asyncio.StreamReader, head: bytes) -> Response:
    """The rest of a response whose head (status line and headers) was already read."""
    status = int(head[9:12])
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        chunks: list[bytes] = []
        raw = [head]
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            data = await reader.readexactly(size + 2)
            raw += (size_line, data)
            if size == 0:
                break
            chunks.append(data[:-2])
        return Response(status, head, b"".join(chunks), chunks, b"".join(raw))
    start = lower.find(b"content-length:")
    length = int(lower[start + 15 : lower.index(b"\r\n", start)]) if start >= 0 else 0
    body = await reader.readexactly(length)
    return Response(status, head, body, [], head + body)


async def fetch(port: int, method: str, path: str, body: bytes = b"") -> Response:
    """One request on a fresh connection."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request_bytes(method, path, body, port))
        return await read_response(reader)
    finally:
        writer.close()


@dataclass(slots=True)
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(port: int, path: str, body: bytes, connections: int, duration: float) -> LoadResult:
    """Closed-loop keep-alive load (wrk's model) for ``duration`` seconds: the wrk fallback."""
    payload = request_bytes("POST", path, body, port)
    result = LoadResult()
    start = time.perf_counter()
    deadline = start + duration

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= deadline:
                    return
                writer.write(payload)
                response = await read_response(reader)
                result.latencies.append(time.perf_counter() - t0)
                if response.status == 200:
                    result.requests += 1
                else:
                    result.errors += 1
        except (OSError, asyncio.IncompleteReadError):
            result.errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    result.seconds = time.perf_counter() - start
    return result


@dataclass(slots=True)
class StreamsResult:
    ok: int = 0
    failed: int = 0
    wall: float = 0.0
    peak_open: int = 0  # most streams seen open (headers received, not finished) at once
    errors: dict[str, int] = field(default_factory=dict)


async def concurrent_streams(
    port: int,
    path: str,
    body: bytes,
    count: int,
    expect_frames: int,
    timeout: float,
    connect_parallelism: int = 512,
) -> StreamsResult:
    """Open ``count`` streams at once and read each to its end; bounded by ``timeout``.

    Connections are made first (at most ``connect_parallelism`` connects in flight, so the
    listen backlog is not overrun), then every request is written, then all are read.
    """
    payload = request_bytes("POST", path, body, port)
    result = StreamsResult()
    gate = asyncio.Semaphore(connect_parallelism)
    all_connected = asyncio.Event()
    connected = 0
    open_now = 0

    def fail(reason: str) -> None:
        result.failed += 1
        result.errors[reason] = result.errors.get(reason, 0) + 1

    async def one() -> None:
        nonlocal connected, open_now
        try:
            async with gate:
                reader, writer = await asyncio.open_connection(HOST, port)
        except OSError as exc:
            fail(type(exc).__name__)
            connected += 1
            if connected == count:
                all_connected.set()
            return
        connected += 1
        if connected == count:
            all_connected.set()
        try:
            await all_connected.wait()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            open_now += 1
            result.peak_open = max(result.peak_open, open_now)
            try:
                response = await read_body(reader, head)
            finally:
                open_now -= 1
            if response.status != 200:
                fail(f"status {response.status}")
            elif response.frames != expect_frames:
                fail(f"{response.frames} frames")
            else:
                result.ok += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            fail(type(exc).__name__)
        finally:
            writer.close()

    start = time.perf_counter()
    tasks = [asyncio.ensure_future(one()) for _ in range(count)]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
        result.failed += len(pending)
        result.errors["timeout"] = result.errors.get("timeout", 0) + len(pending)
    result.wall = time.perf_counter() - start
    return result
