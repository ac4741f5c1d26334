"""Begin the app's shutdown at SIGTERM where the ASGI server would tell it only after its drain.

granian (2.8) handles SIGTERM in its workers with ``loop.add_signal_handler`` and sends the
lifespan shutdown only once every connection has closed: a stream in flight held the stop up
until it ended, or until ``--workers-kill-timeout`` killed the worker (no error frame, no
shutdown hooks). A loop's signal handlers are run from its wakeup fd, whatever Python-level
handler the signal has; that one is the loop's no-op. Replaced by one that also begins the
app's shutdown, the server's own handler still runs, and streams get ``shutdown_grace`` and
their error frame. One handler serves every app of the process (servers mounted side by
side, stopped in any order); the last to stop gives the signal back. Only a loop's no-op is
replaced: a server that handles the signal in Python itself (uvicorn, gunicorn's workers) is
left alone, as is a signal nobody handles (hypercorn's workers, which their parent tells).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

#: The Python-level handlers event loops set for a signal they handle (asyncio's, uvloop's).
_CHAINABLE = frozenset({"_sighandler_noop", "_Loop__sighandler"})

Handler = Callable[[int, FrameType | None], Any]


class _Taken:
    """SIGTERM while it is this module's: the apps to tell, each with its loop, and the
    handler this module replaced (run after them)."""

    told: dict[StopSignal, asyncio.AbstractEventLoop] = {}
    replaced: Handler | None = None


async def _begin(begin: Callable[[], None]) -> None:
    begin()  # in a task: the shutdown reads the loop's clock through anyio


def _start(loop: asyncio.AbstractEventLoop, begin: Callable[[], None]) -> None:
    loop.create_task(_begin(begin))


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Begin each app's shutdown on its own loop, then run the loop's handler as before."""
    for stop, loop in list(_Taken.told.items()):
        try:
            loop.call_soon_threadsafe(_start, loop, stop.begin)
        except RuntimeError:  # the loop is closed: nothing of that app is left to stop
            _Taken.told.pop(stop, None)
    if _Taken.replaced is not None:
        _Taken.replaced(signum, frame)


class StopSignal:
    """SIGTERM begins ``begin`` (a shutdown) on the app's loop, then goes on as before."""

    __slots__ = ("begin",)

    def __init__(self, begin: Callable[[], None]) -> None:
        self.begin = begin

    def install(self) -> None:
        """At startup: take SIGTERM over from a loop's no-op, on the main thread only."""
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another event loop (trio): its handlers are its own
            return
        current = signal.getsignal(signal.SIGTERM)
        loops = _Taken.replaced if current is _on_sigterm else current
        if not callable(loops) or getattr(loops, "__name__", None) not in _CHAINABLE:
            return
        if getattr(loops, "__self__", loop) is not loop:
            return  # a closed uvloop's (it keeps it): no loop handles the signal
        if current is not _on_sigterm:
            # Taken (again): the apps told before whose loops have closed are gone.
            _Taken.told = {s: other for s, other in _Taken.told.items() if not other.is_closed()}
            _Taken.replaced = loops
            signal.signal(signal.SIGTERM, _on_sigterm)
        _Taken.told[self] = loop

    def uninstall(self) -> None:
        """At shutdown: no longer told. The last app told gives the signal back, unless
        someone replaced this module's handler since."""
        if _Taken.told.pop(self, None) is None or _Taken.told:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        replaced, _Taken.replaced = _Taken.replaced, None
        if replaced is not None and signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, replaced)
