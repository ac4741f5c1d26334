"""Spawning the servers under test: one uvicorn worker each, pinned to core 0, always reaped.

Every process started here is recorded; ``stop_all`` (run by the runner's ``finally`` and at
exit) kills whatever is still alive, by the process group each was started in.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import HOST

REPO = Path(__file__).resolve().parent.parent
SERVER_CORE = "0"
LOAD_CORE = "1"

_live: dict[int, subprocess.Popen[bytes]] = {}
_HELD = (signal.SIGINT, signal.SIGTERM)


@dataclass(slots=True)
class Target:
    """A server under test: its name, interpreter, ASGI app and where each route lives."""

    name: str
    python: str
    app: str  # "module:attribute"
    paths: dict[str, str] = field(default_factory=dict)  # work name -> path
    skip: str | None = None  # why it is not run, if it is not


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_command(target: Target, port: int) -> list[str]:
    command = [
        target.python, "-m", "uvicorn", target.app, "--host", HOST, "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        "--backlog", "16384",
    ]  # fmt: skip
    if _has_taskset():
        command = ["taskset", "-c", SERVER_CORE, *command]
    return command


def _has_taskset() -> bool:
    return any((Path(d) / "taskset").exists() for d in os.environ.get("PATH", "").split(":"))


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["DISABLE_BREAKING_CHANGES_WARNING"] = "1"  # the SDK's import-time banner
    # Production imports cached bytecode: let every target write and reuse its .pyc (any
    # non-empty value, "0" included, turns caching off, so the variable must go).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def spawn(target: Target, port: int) -> subprocess.Popen[bytes]:
    return start(server_command(target, port))


def start(command: list[str]) -> subprocess.Popen[bytes]:
    """Start a server in its own session and record it for ``stop_all``.

    Ctrl-C and SIGTERM are held until it is recorded: the exception either raises inside
    ``Popen`` after the fork (it waits there for the exec) would leave a server running that
    nothing knows of.
    """
    held: list[int] = []
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda sig, _: held.append(sig)) for sig in _HELD}
    try:
        proc = subprocess.Popen(
            command, cwd=REPO, env=server_env(), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        _live[proc.pid] = proc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for sig in held:
        signal.raise_signal(sig)  # now the caller's handlers see them
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (uvicorn's graceful exit), then SIGKILL to the whole group if it lingers."""
    _live.pop(proc.pid, None)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    if proc.stderr is not None:
        proc.stderr.close()


def stop_all() -> None:
    for proc in list(_live.values()):
        stop(proc)


atexit.register(stop_all)


def post_once(port: int, path: str, body: bytes, timeout: float = 10.0) -> int:
    """Status of one POST, on a fresh connection (raises OSError while nothing listens)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def wait_first_200(
    proc: subprocess.Popen[bytes],
    port: int,
    path: str,
    body: bytes,
    timeout: float = 60.0,
    start: float | None = None,
) -> float:
    """Poll until ``POST path`` answers 200; seconds since ``start`` (``perf_counter``, default
    now). Raises ``RuntimeError`` if the server dies, answers an error, or takes too long."""
    if start is None:
        start = time.perf_counter()
    deadline = start + timeout
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"server exited with {proc.returncode}:\n{err[-2000:]}")
        try:
            status = post_once(port, path, body)
        except OSError:
            status = 0
        if status == 200:
            return time.perf_counter() - start
        if status:
            raise RuntimeError(f"POST {path} answered {status}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"no 200 from {path} within {timeout:.0f} s")
        time.sleep(0.002)


def proc_status_kb(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` field in kB (VmRSS: now; VmHWM: peak since start)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


@contextlib.contextmanager
def running(target: Target, warm_path: str, warm_body: bytes) -> Iterator[tuple[int, int]]:
    """A fresh server answering 200 on ``warm_path``; yields (port, pid)."""
    port = free_port()
    proc = spawn(target, port)
    try:
        wait_first_200(proc, port, warm_path, warm_body)
        yield port, proc.pid
    finally:
        stop(proc)


def python_has(python: str, *modules: str) -> str | None:
    """None if ``python`` imports every module, else the error line."""
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    try:
        done = subprocess.run(
            [python, "-c", code, *modules], cwd=REPO, env=server_env(), capture_output=True,
            timeout=120,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit {done.returncode}"


def current_python() -> str:
    return sys.executable
