"""Load generation: wrk when installed (pinned to core 1), else the asyncio client fallback."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import client
from .servers import LOAD_CORE, _has_taskset

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass(slots=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _lua(body: bytes) -> str:
    # A Lua long string holds the JSON body verbatim (it contains no "]]").
    assert b"]]" not in body
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = [[{body.decode()}]]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> Run:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.M))
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        errors += sum(int(n) for n in sock.groups())
    return Run(rps, _ms(lat.get("50", "")), _ms(lat.get("99", "")), requests, errors)


def run_wrk(port: int, path: str, body: bytes, connections: int, seconds: float) -> Run:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua(body))
    try:
        command = [
            "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
            "--timeout", "10s", "-s", script.name, f"http://{client.HOST}:{port}{path}",
        ]  # fmt: skip
        if _has_taskset():
            command = ["taskset", "-c", LOAD_CORE, *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        Path(script.name).unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout)


def run_python(port: int, path: str, body: bytes, connections: int, seconds: float) -> Run:
    result = asyncio.run(client.load(port, path, body, connections, seconds))
    return Run(
        result.rps, result.percentile(0.5) * 1e3, result.percentile(0.99) * 1e3,
        result.requests, result.errors,
    )  # fmt: skip


def install_fast_loop() -> str:
    """Use uvloop for the in-process clients when it is there (the client must not be the limit)."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
