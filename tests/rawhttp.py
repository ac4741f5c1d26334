"""HTTP/1.1 over a raw loopback socket: for tests that must control the connection itself
(close it mid-stream, upload a body chunk by chunk, see exactly what the server wrote)."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import orjson


def connect(base_url: str, timeout: float = 10) -> socket.socket:
    parts = urlsplit(base_url)
    assert parts.hostname == "127.0.0.1"
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


def request_head(
    method: str, path: str, headers: dict[str, str] | None = None, length: int | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send_json(
    sock: socket.socket, path: str, body: object, headers: dict[str, str] | None = None
) -> None:
    data = orjson.dumps(body)
    head = request_head("POST", path, {"Content-Type": "application/json", **(headers or {})},
                        len(data))  # fmt: skip
    sock.sendall(head + data)


def read_until(sock: socket.socket, marker: bytes, deadline_s: float = 10) -> bytes:
    """Bytes read until ``marker`` appears (fails on timeout or on close before it)."""
    data = b""
    deadline = time.monotonic() + deadline_s
    while marker not in data:
        assert time.monotonic() < deadline, f"no {marker!r} in {data[-300:]!r}"
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {marker!r}: {data[-300:]!r}"
        data += chunk
    return data


def read_to_close(sock: socket.socket, deadline_s: float = 10) -> bytes:
    data = b""
    deadline = time.monotonic() + deadline_s
    while True:
        assert time.monotonic() < deadline, f"connection still open: {data[-300:]!r}"
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and de-chunked body of one whole response."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2 :]
        return status, headers, body
    return status, headers, rest


def sse_payloads(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    out = []
    for frame in body.decode().split("\n\n"):
        for line in frame.split("\n"):
            if line.startswith("data:"):
                out.append(line[5:].strip())
    return out
