"""Running a real server as a subprocess for a test: free port, wait for health, always stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nobody listens on now (the OS picks it; the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """A started server: its base URL, and its output so far (for failure messages)."""

    def __init__(self, proc: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
        self.proc = proc
        self.base_url = base_url
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def server_process(
    args: Sequence[str], port: int, *, env: dict[str, str] | None = None,
    health_path: str = "/health", timeout: float = 30.0, python: bool = True,
    cwd: Path = ROOT,
) -> Iterator[ServerProcess]:  # fmt: skip
    """Start ``python <args>`` (``args`` alone if not ``python``) in ``cwd`` (the repo root),
    wait until ``health_path`` answers 200, yield; on exit (also on failure) stop the process
    group: SIGTERM, then SIGKILL after 10 s."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}  # fmt: skip
    full_env.pop("AGENTRUN_AGENT", None)
    full_env.update(env or {})
    with tempfile.NamedTemporaryFile(prefix="agentrun-server-", suffix=".log",
                                     delete=False) as log:  # fmt: skip
        log_path = Path(log.name)
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *args] if python else list(args), cwd=cwd, env=full_env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{server.output()}")
            try:
                if httpx.get(server.base_url + health_path, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not healthy in {timeout} s:\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        stop(proc)
        log_path.unlink(missing_ok=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server and every worker it forked (its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # Workers left behind by a supervisor that died first.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
