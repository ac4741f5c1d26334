"""The server object, unchanged, under each ASGI server: uvicorn, hypercorn, granian, gunicorn.

Each test starts the real server as a subprocess on a free loopback port serving
``tests.apps.agent_app:app``, waits for ``/health``, then runs what a server could break: the
official ``openai`` client streaming and not, an AG-UI run parsed from its SSE body, and a
Responses API stream. The process group is always stopped, also when the test fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import openai
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agui_verify import parse_sse, verify
from apps.agent_app import ANSWER
from apps.process import free_port, server_process

APP = "tests.apps.agent_app:app"
#: gunicorn's uvicorn worker that tells the app when it stops (the one the README names).
WORKER = "agentrun_asgi.gunicorn.UvicornWorker"
USER: Any = [{"role": "user", "content": "hi"}]


def _commands(port: int) -> dict[str, list[str]]:
    bind = f"127.0.0.1:{port}"
    return {
        "uvicorn": ["-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning"],
        "hypercorn": ["-m", "hypercorn", APP, "--bind", bind, "--log-level", "warning"],
        "granian": ["-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port",
                    str(port), "--log-level", "warning", APP],
        "gunicorn": ["-m", "gunicorn", APP, "--worker-class", WORKER,
                     "--bind", bind, "--workers", "2", "--log-level", "warning"],
    }  # fmt: skip


_NEEDS = {"uvicorn": ("uvicorn",), "hypercorn": ("hypercorn",), "granian": ("granian",),
          "gunicorn": ("gunicorn", "uvicorn_worker")}  # fmt: skip


def exercise(base: str) -> None:
    """OpenAI stream and non-stream, AG-UI run, Responses stream: all through one server."""
    oai = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=10)
    whole = oai.chat.completions.create(model="m", messages=USER)
    assert whole.choices[0].message.content == ANSWER
    assert whole.choices[0].message.model_extra == {"reasoning_content": "thinking"}
    chunks = list(oai.chat.completions.create(model="m", messages=USER, stream=True))
    assert len(chunks) > 3, "the answer should arrive in several chunks"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"
    tool = list(oai.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "use a tool"}], stream=True))
    calls = [c.choices[0].delta.tool_calls[0] for c in tool if c.choices[0].delta.tool_calls]
    assert calls[0].id == "call_1" and calls[0].function.name == "lookup"  # type: ignore[union-attr]
    assert "".join(c.function.arguments or "" for c in calls) == '{"q": "x"}'  # type: ignore[union-attr]

    run = {"threadId": "t1", "runId": "r1", "messages": [{"id": "m1", "role": "user",
                                                          "content": "hi"}]}  # fmt: skip
    r = httpx.post(base + "/ag-ui/agent", json=run, headers={"accept": "text/event-stream"},
                   timeout=10)  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = verify(parse_sse(r.content))
    assert events[0]["type"] == "RUN_STARTED" and events[-1]["type"] == "RUN_FINISHED"
    assert (events[0]["threadId"], events[-1]["runId"]) == ("t1", "r1")
    text = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == ANSWER

    stream = list(oai.responses.create(model="m", input="hi", stream=True))
    assert stream[0].type == "response.created" and stream[-1].type == "response.completed"
    assert stream[-1].response.output_text == ANSWER  # type: ignore[union-attr]


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "granian", "gunicorn"])
def test_under_asgi_server(server: str) -> None:
    missing = [m for m in _NEEDS[server] if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{server} is not installed (missing: {', '.join(missing)})")
    port = free_port()
    with server_process(_commands(port)[server], port) as proc:
        try:
            exercise(proc.base_url)
        except BaseException:
            print(proc.output())  # shown by pytest with the failure
            raise


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"stream": True, "messages": USER}),
    ("/ag-ui/agent", {"messages": [{"id": "1", "role": "user", "content": "hi"}]}),
])  # fmt: skip
def test_gunicorn_stop_ends_streams_with_their_error_frame(path: str, body: Any) -> None:
    """A deploy stops gunicorn with SIGTERM: a stream in flight gets ``shutdown_grace`` (0.5 s
    here), then its protocol's error frame, and the master exits 0. uvicorn-worker's own worker
    never told the app: the stream ran on until ``--graceful-timeout`` and was cut mid-body."""
    missing = [m for m in _NEEDS["gunicorn"] if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"gunicorn is not installed (missing: {', '.join(missing)})")
    port = free_port()
    args = ["-m", "gunicorn", "tests.apps.agent_app:endless", "--worker-class", WORKER,
            "--bind", f"127.0.0.1:{port}", "--workers", "2", "--graceful-timeout", "30",
            "--log-level", "warning"]  # fmt: skip
    with server_process(args, port) as proc:
        lines: list[str] = []
        first = threading.Event()

        def read_stream() -> None:
            with httpx.stream("POST", proc.base_url + path, json=body, timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        lines.append(line[5:].strip())
                        first.set()

        reader = threading.Thread(target=read_stream, daemon=True)
        reader.start()
        assert first.wait(30)
        proc.proc.send_signal(signal.SIGTERM)  # the master, as a deploy does
        reader.join(20)  # grace 0.5 s, and ample room for a slow machine; 30 s cut it before
        assert not reader.is_alive(), "the stream was still open 20 s after SIGTERM"
        try:
            code = proc.proc.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail("gunicorn was still running 20 s after SIGTERM")
        output = proc.output()
    last = json.loads(lines[-1])
    error = last if path == "/ag-ui/agent" else last["error"]
    assert error["code"] == "server_shutting_down", lines[-3:]
    assert code == 0 and "Traceback" not in output, output


# -- stops under hypercorn and granian ---------------------------------------------------------
# What the README ("Any ASGI server") says of how these servers stop, pinned. hypercorn tells the
# app only after its own drain, so ``shutdown_grace`` plays no part: it cancels the requests
# still running at its ``--graceful-timeout`` (1 s here, 3 s by default), which the app turns
# into their error frames and 503s. granian's workers handle SIGTERM with their event loop, so
# the app hooks in and begins its own shutdown (``stop_signal.py``). The app is
# ``tests.apps.agent_app:endless``, whose agent, hook and ends are noted in a file (``marks``).

ENDLESS = "tests.apps.agent_app:endless"
AGUI_RUN = {"messages": [{"id": "1", "role": "user", "content": "hi"}]}


def _needs(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


class InFlight(threading.Thread):
    """One request, made in a thread: what its call returned (or raised) once it ended."""

    def __init__(self, call: Any) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.result: Any = None

    def run(self) -> None:
        self.result = self.call()

    def outcome(self) -> Any:
        self.join(20)  # a hang guard: every request here ends within seconds of the stop
        assert not self.is_alive(), "the request was still open 20 s after the stop"
        return self.result


def openai_stream(base: str) -> tuple[list[Any], Exception | None]:
    """The official client's chunks of a Chat Completions stream, and what ended it early."""
    oai = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=30)
    chunks: list[Any] = []
    try:
        for chunk in oai.chat.completions.create(model="m", messages=USER, stream=True):
            chunks.append(chunk)
    except (openai.APIError, httpx.HTTPError) as exc:
        return chunks, exc
    return chunks, None


def openai_whole(base: str) -> Any:
    """A non-stream completion: the answer, or the error the official client raised."""
    oai = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=30)
    try:
        return oai.chat.completions.create(model="m", messages=USER)
    except (openai.APIError, httpx.HTTPError) as exc:
        return exc


def agui_body(base: str) -> tuple[bytes, Exception | None]:
    """An AG-UI run's SSE body as it came, and what cut it off (None: it ended whole)."""
    body = b""
    try:
        with httpx.stream("POST", base + "/ag-ui/agent", json=AGUI_RUN, timeout=30) as r:
            for data in r.iter_bytes():
                body += data
    except httpx.HTTPError as exc:
        return body, exc
    return body, None


def start_requests(base: str, marks: Path) -> list[InFlight]:
    """An OpenAI stream, an AG-UI stream and a JSON request, each with its agent running."""
    flights = [InFlight(lambda: openai_stream(base)), InFlight(lambda: agui_body(base)),
               InFlight(lambda: openai_whole(base))]  # fmt: skip
    for flight in flights:
        flight.start()
    wait_for_marks(marks, "started", 3)
    return flights


def read_marks(marks: Path) -> list[str]:
    return marks.read_text().split() if marks.exists() else []


def wait_for_marks(marks: Path, what: str, count: int) -> None:
    deadline = time.monotonic() + 20  # a hang guard
    while read_marks(marks).count(what) < count:
        assert time.monotonic() < deadline, f"no {count} {what!r} marks: {read_marks(marks)}"
        time.sleep(0.02)


def exit_code(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(20)  # a hang guard
    except subprocess.TimeoutExpired:
        pytest.fail("the server was still running 20 s after the stop")


class Stopped(NamedTuple):
    """What the three requests of ``start_requests`` got when the server was stopped."""

    chunks: list[Any]
    stream_error: Any
    body: bytes
    cut: Any
    answer: Any
    code: int
    output: str


def stop_in_flight(
    args: list[str], port: int, marks: Path, stop: Callable[[subprocess.Popen[bytes]], None]
) -> Stopped:
    """Start the server, put three requests in flight, ``stop`` it, and gather what they got."""
    with server_process(args, port, env={"AGENTRUN_TEST_MARKS": str(marks)}) as proc:
        stream, agui, whole = start_requests(proc.base_url, marks)
        stop(proc.proc)
        chunks, stream_error = stream.outcome()
        body, cut = agui.outcome()
        answer = whole.outcome()
        code = exit_code(proc.proc)
        return Stopped(chunks, stream_error, body, cut, answer, code, proc.output())


def assert_stopped_whole(got: Stopped, marks: Path) -> None:
    """Each request was stopped and answered whole: the streams with their error frame, the
    JSON request with a 503; the agents closed, then the hooks."""
    stream_error, output = got.stream_error, got.output
    assert got.chunks and isinstance(stream_error, openai.APIError), (stream_error, output)
    assert not isinstance(stream_error, openai.APIConnectionError), (stream_error, output)
    assert stream_error.code == "server_shutting_down"
    assert got.cut is None, (got.cut, got.body[-200:])
    events = verify(parse_sse(got.body))
    assert events[-1]["type"] == "RUN_ERROR" and events[-1]["code"] == "server_shutting_down"
    assert isinstance(got.answer, openai.InternalServerError), got.answer
    assert got.answer.status_code == 503 and got.answer.code == "server_shutting_down"
    assert read_marks(marks) == ["started"] * 3 + ["closed"] * 3 + ["shutdown"]


def hypercorn_args(worker: str, port: int) -> list[str]:
    return ["-m", "hypercorn", ENDLESS, "-k", worker, "--bind", f"127.0.0.1:{port}",
            "--graceful-timeout", "1", "--log-level", "warning"]  # fmt: skip


#: hypercorn 0.18's asyncio worker awaits ``Server.wait_closed()`` before its graceful timeout,
#: and from Python 3.12 that waits for every connection: a stream holds the stop up forever
#: (https://github.com/pgjones/hypercorn/issues/308). Nothing in the worker tells the app.
HYPERCORN_WAITS_FOREVER = pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="hypercorn#308: no graceful timeout on Python 3.12+"
)


@pytest.mark.parametrize("worker", [pytest.param("asyncio", marks=HYPERCORN_WAITS_FOREVER),
                                    "trio"])  # fmt: skip
def test_hypercorn_stop_ends_requests_in_flight_at_its_graceful_timeout(
    worker: str, tmp_path: Path
) -> None:
    """SIGTERM (to hypercorn, as a deploy sends it): at ``--graceful-timeout`` hypercorn cancels
    what still runs; each stream ends with its protocol's error frame, a JSON request gets a
    503, the agents are closed, then the shutdown hooks run and hypercorn exits 0. Under the
    trio worker the cancellation is trio's, through the app's anyio cancel scopes."""
    _needs("hypercorn", *(["trio"] if worker == "trio" else []))
    marks = tmp_path / "marks"
    port = free_port()
    got = stop_in_flight(hypercorn_args(worker, port), port, marks,
                         lambda proc: proc.send_signal(signal.SIGTERM))  # fmt: skip
    assert_stopped_whole(got, marks)
    assert got.code == 0
    assert "agentrun_asgi/" not in got.output, got.output  # no traceback through the package


def test_hypercorn_without_workers_ends_requests_in_flight_after_the_grace(
    tmp_path: Path,
) -> None:
    """``-w 0`` (hypercorn's asyncio loop in its own process, every Python): the loop handles
    SIGTERM, the app hooks in there and begins its shutdown at once, so streams get
    ``shutdown_grace`` and their error frame, a JSON request a 503, then the hooks run. The
    way to stop streams under hypercorn's asyncio worker on Python 3.12+ (hypercorn#308)."""
    _needs("hypercorn")
    marks = tmp_path / "marks"
    port = free_port()
    args = [*hypercorn_args("asyncio", port), "--graceful-timeout", "60", "-w", "0"]
    got = stop_in_flight(args, port, marks, lambda proc: proc.send_signal(signal.SIGTERM))
    assert_stopped_whole(got, marks)
    assert got.code == 0


@pytest.mark.parametrize("worker", ["asyncio", "trio"])
def test_hypercorn_workers_die_at_a_sigterm_of_their_own(worker: str, tmp_path: Path) -> None:
    """SIGTERM to hypercorn's whole process group (systemd's default ``KillMode``): its worker
    processes have no handler for it and die at once; streams are cut off, nothing else runs."""
    _needs("hypercorn", *(["trio"] if worker == "trio" else []))
    marks = tmp_path / "marks"
    port = free_port()
    got = stop_in_flight(hypercorn_args(worker, port), port, marks,
                         lambda proc: os.killpg(proc.pid, signal.SIGTERM))  # fmt: skip
    assert got.chunks and isinstance(got.stream_error, openai.APIConnectionError), got  # cut
    assert got.cut is not None and b"RUN_ERROR" not in got.body
    assert isinstance(got.answer, openai.APIConnectionError), got.answer
    assert "closed" not in read_marks(marks) and "shutdown" not in read_marks(marks)


def granian_args(port: int, *extra: str) -> list[str]:
    return ["-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", *extra, ENDLESS]  # fmt: skip


#: How granian is stopped: by a deploy (SIGTERM), by Docker's ``STOPSIGNAL SIGINT`` (to the main
#: process), by Ctrl+C (SIGINT to the whole process group, workers included).
_GRANIAN_STOPS: dict[str, Any] = {
    "SIGTERM": lambda proc: proc.send_signal(signal.SIGTERM),
    "SIGINT": lambda proc: proc.send_signal(signal.SIGINT),
    "Ctrl+C": lambda proc: os.killpg(proc.pid, signal.SIGINT),
}


@pytest.mark.parametrize(("loop", "stop"), [
    ("asyncio", "SIGTERM"), ("uvloop", "SIGTERM"), ("uvloop", "SIGINT"), ("uvloop", "Ctrl+C"),
])  # fmt: skip
def test_granian_stop_ends_requests_in_flight_after_the_grace(
    loop: str, stop: str, tmp_path: Path
) -> None:
    """SIGTERM to granian: the app begins its shutdown at once (its SIGTERM handler runs
    before granian's), so streams get ``shutdown_grace`` and their error frame, a JSON request
    a 503; granian's drain then ends, the hooks run and granian exits 0. Before, granian told
    the app only after its drain, which a stream held up until it ended or until
    ``--workers-kill-timeout`` (the backstop here) killed the worker: cut, no hooks. SIGINT
    comes to the same: granian's main process answers it with a SIGTERM to each worker."""
    _needs("granian", loop)
    marks = tmp_path / "marks"
    port = free_port()
    args = granian_args(port, "--loop", loop, "--workers-kill-timeout", "10")
    got = stop_in_flight(args, port, marks, _GRANIAN_STOPS[stop])
    assert_stopped_whole(got, marks)
    assert got.code == 0 and "Killing" not in got.output, got.output
