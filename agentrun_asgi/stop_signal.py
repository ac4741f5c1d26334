"""Begin the app's shutdown at SIGTERM where the ASGI server would tell it only after its drain.

granian (2.8) handles SIGTERM in its workers with ``loop.add_signal_handler`` and sends the
lifespan shutdown only once every connection has closed: a stream in flight held the stop up
until it ended, or until ``--workers-kill-timeout`` killed the worker (no error frame, no
shutdown hooks). A loop's signal handlers are run from its wakeup fd, whatever Python-level
handler the signal has; that one is the loop's no-op. Replaced by one that also begins the
app's shutdown, the server's own handler still runs, and streams get ``shutdown_grace`` and
their error frame. Only a loop's no-op is replaced: a server that handles the signal in Python
itself (uvicorn, gunicorn's workers) is left alone, as is a signal nobody handles (hypercorn's
workers, which their parent tells).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

#: The Python-level handlers event loops set for a signal they handle (asyncio's, uvloop's), and
#: this module's own (another server in the process, mounted beside this one, took it first).
_CHAINABLE = frozenset({"_sighandler_noop", "_Loop__sighandler", "begin_shutdown_then"})

Handler = Callable[[int, FrameType | None], Any]


class StopSignal:
    """SIGTERM begins ``begin`` (a shutdown) on the running loop, then goes on as before."""

    __slots__ = ("begin", "installed")

    def __init__(self, begin: Callable[[], None]) -> None:
        self.begin = begin
        #: (ours, the one it replaced) while installed.
        self.installed: tuple[Handler, Handler] | None = None

    def install(self) -> None:
        """At startup: take SIGTERM over from a loop's no-op, on the main thread only."""
        if self.installed is not None or threading.current_thread() is not threading.main_thread():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another event loop (trio): its handlers are its own
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous) or getattr(previous, "__name__", None) not in _CHAINABLE:
            return

        async def begin() -> None:  # a task: the shutdown reads the loop's clock through anyio
            self.begin()

        def begin_shutdown_then(signum: int, frame: FrameType | None) -> None:
            try:
                loop.call_soon_threadsafe(lambda: loop.create_task(begin()))
            except RuntimeError:  # the loop is closed: nothing of this app is left to stop
                pass
            previous(signum, frame)

        signal.signal(signal.SIGTERM, begin_shutdown_then)
        self.installed = (begin_shutdown_then, previous)

    def uninstall(self) -> None:
        """At shutdown: give the signal back, unless someone replaced ours since."""
        installed, self.installed = self.installed, None
        if installed is None or threading.current_thread() is not threading.main_thread():
            return
        ours, previous = installed
        if signal.getsignal(signal.SIGTERM) is ours:
            signal.signal(signal.SIGTERM, previous)
