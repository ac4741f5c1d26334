"""Calls the user's agent and turns every shape it may return into one async stream.

The stream's items are ``str`` (a TEXT delta, kept bare so that the common case allocates no
event) and ``AgentEvent``. Sync code never runs on the event loop: a sync function runs in a
worker thread, and so does each ``next()`` of a sync generator. Closing the stream (``aclose()``,
as the protocols do when the client goes away) closes the agent's generator where it lives: an
async one by ``aclose()``, a sync one by ``close()`` in a worker thread, right after the
``next()`` in flight returns (a thread cannot be interrupted), so the agent's ``finally`` runs.

Cancellation never waits for a thread: a cancelled run leaves a sync function to finish on its
own (its result is dropped) and leaves a sync generator's ``next()`` in flight to close the
generator itself, in its thread, as soon as it returns. So a run stopped by a disconnect or a
deadline answers at once even while the agent blocks its thread, and the thread goes back to
the pool when the agent's code lets go of it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from inspect import GEN_SUSPENDED, getgeneratorstate
from types import AsyncGeneratorType, GeneratorType
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

from .models import AgentEvent, AgentRequest, AgentResponse, EventType, text_of

if TYPE_CHECKING:
    from .requests import Request

logger = logging.getLogger("agentrun_asgi")

StreamItem = str | AgentEvent
AgentFunc = Callable[[AgentRequest], Any]

_DONE = object()


class _Raised:
    """An exception of the agent's code in a worker thread, brought back as a value.

    Raised across the thread boundary it would be held by anyio's future, in a frame of its own
    traceback: a reference cycle keeping the request (its body, the agent's frames) alive until
    the cyclic garbage collector runs.
    """

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc: Exception | None = _as_error(exc)

    def reraise(self) -> NoReturn:
        exc = self.exc
        assert exc is not None
        self.exc = None
        try:
            raise exc
        finally:
            del exc  # not left in this frame, which the traceback holds


def _as_error(exc: BaseException) -> Exception:
    """What the agent's code raised in a worker thread, as an error of its run.

    ``SystemExit`` and ``KeyboardInterrupt`` raised there are not the process's (signals reach
    the main thread only; ``sys.exit()`` in a thread ends that thread): raised as themselves on
    the event loop they passed for a shutdown (a 503 the OpenAI clients retry) or cut a stream
    short. A ``StopIteration`` cannot leave a coroutine: Python names the coroutine instead.
    """
    if isinstance(exc, Exception) and not isinstance(exc, StopIteration):
        return exc
    text = str(exc)
    error = RuntimeError(f"the agent raised {type(exc).__name__}" + (f": {text}" if text else ""))
    error.__cause__ = exc
    return error


def agent_error(exc: BaseException, request: Request | None) -> Exception | None:
    """What an agent raised on the event loop, as an error of its run; None if it stops the run.

    An ``Exception`` is the run's error as it is. A ``CancelledError`` that nobody sent is the
    agent's own: the guard did not stop the run, and the task has no cancellation pending (the
    agent awaited something cancelled elsewhere). Taken for a stop, it was answered "shutting
    down" (a 503 the OpenAI clients retry). Before Python 3.11 a task does not count its
    cancellations: every one is a stop. ``SystemExit`` and ``KeyboardInterrupt`` stay the
    process's (unlike in a worker thread, see :func:`_as_error`): on the loop's thread a signal
    handler raises them in whatever code runs, the agent's too.
    """
    if isinstance(exc, Exception):
        return exc
    if not isinstance(exc, asyncio.CancelledError):
        return None
    run = getattr(request, "run", None)
    if run is not None and run.reason is not None:
        return None  # the guard's stop
    task = asyncio.current_task() if asyncio._get_running_loop() is not None else None
    cancelling = getattr(task, "cancelling", None)
    if cancelling is None or cancelling():
        return None  # a cancellation from outside (the ASGI server, a host app), or unknown
    return _as_error(exc)


def _call(func: Callable[[Any], Any], arg: Any) -> Any:
    """``func(arg)`` in a worker thread, an exception returned as a :class:`_Raised`."""
    try:
        return func(arg)
    except BaseException as exc:
        return _Raised(exc)


class AgentOutputError(TypeError):
    """The agent returned or yielded something no protocol can send."""


#: Sync iterators of stopped runs, left to the step in flight to close when its ``next()``
#: returns; shutdown waits for them (:func:`closed_after_stops`) so that their ``finally``
#: runs before the process exits.
_left_to_close: set[_SyncStepper] = set()


async def closed_after_stops() -> None:
    """Return once the sync iterators of stopped runs are closed (their steps returned)."""
    while _left_to_close:
        await anyio.sleep(0.01)


class _SyncStepper:
    """Steps a sync iterator from worker threads, and closes it when no ``next()`` is running.

    ``generator.close()`` cannot interrupt a ``next()`` running in another thread (it raises
    "generator already executing"), so a close asked for during a step is left to that step,
    which performs it in its own thread right after ``next()`` returns. A generator that never
    started or has ended is closed on the spot: closing it runs none of its code.

    Every step and the close run in one context, copied from the request's when the stepper is
    made: a worker thread gets a fresh copy per call, which would lose what a step sets (a
    tracing span entered before a ``yield``) and fail the token reset in the ``finally``.
    """

    __slots__ = ("busy", "closing", "context", "iterator", "lock")

    def __init__(self, iterator: Iterator[Any]) -> None:
        self.iterator = iterator
        self.context = contextvars.copy_context()
        self.lock = threading.Lock()
        self.busy = False
        self.closing = False

    def step(self) -> Any:
        with self.lock:
            if self.closing:
                return _DONE
            self.busy = True
        close_now = False
        try:
            # StopIteration cannot cross a thread boundary through a future: a sentinel does.
            return self.context.run(next, self.iterator)
        except StopIteration:
            return _DONE
        except BaseException as exc:
            return _Raised(exc)
        finally:
            with self.lock:
                self.busy = False
                close_now = self.closing
            if close_now:
                raised = self._close()
                _left_to_close.discard(self)
                if raised is not None:  # the run has ended: only the log can be told
                    logger.warning("the agent failed while it was being closed",
                                   exc_info=raised.exc)  # fmt: skip

    def close(self) -> bool:
        """Ask for the close, on the event loop; True if the caller must then run
        :meth:`finish` in a worker thread: the iterator has code of its own to run."""
        with self.lock:
            self.closing = True  # no step starts after this
            if self.busy:
                _left_to_close.add(self)
                return False  # the step in flight closes it
        iterator = self.iterator
        if type(iterator) is GeneratorType and getgeneratorstate(iterator) != GEN_SUSPENDED:
            iterator.close()
            return False
        return hasattr(iterator, "close")

    def finish(self) -> _Raised | None:
        """The close itself, in a worker thread, once :meth:`close` asked for it."""
        return self._close()

    def _close(self) -> _Raised | None:
        close = getattr(self.iterator, "close", None)
        if close is not None:
            try:
                self.context.run(close)
            except BaseException as exc:
                return _Raised(exc)
        return None


#: What an OpenAI assistant message (``message.model_dump()``) has beyond AgentResponse's fields.
#: An agent that relays another OpenAI-compatible API returns such a dict; these keys are taken
#: when they add nothing an AgentResponse cannot say (None, empty, ``role: "assistant"``).
_MESSAGE_ONLY = ("role", "refusal", "annotations", "audio", "function_call")


def _from_dict(value: dict[str, Any]) -> AgentResponse:
    try:
        return AgentResponse(**value)
    except TypeError:
        pass
    fields = {key: item for key, item in value.items() if key not in _MESSAGE_ONLY}
    role = value.get("role", "assistant")
    if role != "assistant":
        raise AgentOutputError(
            f"agent returned a message dict with role {role!r}; an answer is the assistant's"
        )
    unsupported = [key for key in ("annotations", "audio", "function_call") if value.get(key)]
    refusal = value.get("refusal")
    if refusal:
        if fields.get("content"):
            unsupported.append("refusal")
        else:
            fields["content"] = refusal  # the model's refusal is the text its client shows
    unknown = sorted(set(fields) - set(AgentResponse.__slots__))
    if unknown:
        raise AgentOutputError(
            f"agent returned a dict with unknown keys {unknown}; expected AgentResponse fields"
            " (content, reasoning_content, tool_calls, usage, finish_reason, events) or an"
            " OpenAI assistant message"
        )
    if unsupported:  # named apart: "unknown" would be wrong of an OpenAI message's own keys
        raise AgentOutputError(
            f"agent returned an OpenAI assistant message with {unsupported}, which an answer"
            " cannot carry (it has content, reasoning_content, tool_calls, usage)"
        )
    return AgentResponse(**fields)


def expand(item: Any) -> list[StreamItem]:
    """The stream items one raw agent item stands for (the slow path: not a str or AgentEvent).

    A list (README: an agent may return or yield one) is each of its items in turn, and an
    answer's ``events`` are expanded too: a yielded answer is what the same answer returned is.
    """
    if item is None:
        return []
    if isinstance(item, str):
        return [str(item)]
    if isinstance(item, AgentEvent):
        return [item]
    parts: Iterable[Any]
    if isinstance(item, AgentResponse):
        parts = item.to_events()
    elif isinstance(item, dict):
        parts = _from_dict(item).to_events()
    elif isinstance(item, (list, tuple)):
        parts = item
    else:
        raise AgentOutputError(
            f"agent yielded an unsupported value of type {type(item).__name__}; yield str,"
            " AgentEvent, AgentResponse, a dict of its fields, or a list of them"
        )
    return [one for part in parts
            for one in ((part,) if type(part) is AgentEvent else expand(part))]  # fmt: skip


class _Items:
    """An async iterator over items already in memory (a returned str, list, AgentResponse)."""

    __slots__ = ("_iterator",)

    def __init__(self, items: Iterable[Any]) -> None:
        self._iterator = iter(items)

    def __aiter__(self) -> _Items:
        return self

    async def __anext__(self) -> Any:
        for item in self._iterator:
            return item
        raise StopAsyncIteration

    async def aclose(self) -> None:
        return None


def _thread_runner() -> Callable[..., Awaitable[Any]]:
    """anyio's ``to_thread.run_sync``, imported on first need, not with the package: only sync
    agents and sync iterators use worker threads, and the module is ~5M instructions of import."""
    import anyio.to_thread

    return anyio.to_thread.run_sync


async def _step_in_threads(stepper: _SyncStepper) -> AsyncGenerator[Any, None]:
    step = stepper.step
    run_sync = _thread_runner()  # an async agent may return a sync iterator too
    try:
        while True:
            value = await run_sync(step, abandon_on_cancel=True)
            if value is _DONE:
                return
            if type(value) is _Raised:
                value.reraise()
            yield value
    finally:
        if stepper.close():
            # A limiter of its own: the close ends a run that held a thread already, and does
            # not queue behind new runs for one (a stopped stream would wait for its last frame
            # until some other agent let go of its thread).
            with anyio.CancelScope(shield=True):
                raised = await run_sync(stepper.finish, limiter=anyio.CapacityLimiter(1))
            if raised is not None:
                raised.reraise()


def iterate(result: Any) -> AsyncIterator[Any]:
    """An async iterator of raw items over whatever the agent returned."""
    kind = type(result)
    if kind is str or kind is AgentEvent:
        return _Items((result,))
    if isinstance(result, (str, AgentEvent, AgentResponse, dict)) or result is None:
        return _Items(expand(result))
    if isinstance(result, (list, tuple)):
        return _Items(result)
    if isinstance(result, (bytes, bytearray, memoryview)):
        # Iterable, but of ints: say what was returned, not what iterating it gives.
        raise AgentOutputError(
            f"agent returned an unsupported value of type {kind.__name__}; return str"
            " (decode bytes first), dict, AgentResponse, AgentEvent, or a generator"
        )
    if isinstance(result, AsyncIterable):
        return result.__aiter__()
    if isinstance(result, Iterable):
        return _step_in_threads(_SyncStepper(iter(result)))
    raise AgentOutputError(
        f"agent returned an unsupported value of type {kind.__name__}; return str, dict,"
        " AgentResponse, AgentEvent, a list of them, or a (sync or async) generator"
    )


async def aclose(items: AsyncIterator[Any]) -> None:
    """Close an item iterator if it can be closed (async generators: their ``finally`` runs)."""
    close = getattr(items, "aclose", None)
    if close is not None:
        await close()


def call_problem(func: Any) -> tuple[str, str] | None:
    """Why ``func`` cannot be called as ``func(request)``, read from its signature: ("asgi", ...)
    for an ASGI app, ("arguments", signature) else; None if it can, or has no signature to read
    (some builtins: the first call tells). Refused when the server is built, since every request
    would otherwise be a 500 whose cause is far from the mistake."""
    try:
        signature = inspect.signature(func, follow_wrapped=False)  # what is called, decorated
    except (TypeError, ValueError):
        return None
    if _binds(signature, 1):
        return None
    return ("asgi" if _binds(signature, 3) else "arguments", str(signature))


def _binds(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*([None] * count))
    except TypeError:
        return False
    return True


class Invoker:
    """Holds the agent function, and what kind of callable it is, decided once."""

    __slots__ = ("_run_sync", "func", "is_async", "is_async_gen", "is_sync_gen")

    def __init__(self, func: AgentFunc) -> None:
        if not callable(func):
            raise TypeError(f"invoke_agent must be callable, got {type(func).__name__}")
        problem = call_problem(func)
        if problem is not None:
            kind, signature = problem
            if kind == "asgi":
                raise TypeError("invoke_agent is an ASGI app, not an agent function")
            raise TypeError(f"invoke_agent must take one argument, the request: {signature}")
        self.func = func
        target: Any = func
        while isinstance(target, functools.partial):
            target = target.func
        if not inspect.isroutine(target):
            target = getattr(target, "__call__", target)  # noqa: B004
        self.is_async_gen = inspect.isasyncgenfunction(target)
        self.is_async = inspect.iscoroutinefunction(target)
        self.is_sync_gen = inspect.isgeneratorfunction(target)
        self._run_sync: Callable[..., Awaitable[Any]] | None = None
        if not (self.is_async or self.is_async_gen):
            self._run_sync = _thread_runner()  # here, not on a first request

    async def open(self, request: AgentRequest) -> AsyncIterator[Any]:
        """Call the agent: an async iterator of its raw items, with no layer of our own.

        The hot path: an async generator agent (or an async function returning an async
        iterator) is iterated directly. Items are not checked here: ``str`` and ``AgentEvent``
        are ready to encode, anything else goes through :func:`expand`. Exceptions from the
        agent propagate, from this call or from the iteration.
        """
        func = self.func
        if self.is_async_gen:
            return func(request)  # type: ignore[no-any-return]
        result: Any
        if self.is_async:
            result = await func(request)
        elif self.is_sync_gen:
            result = func(request)  # creating a generator runs none of its code
        else:
            result = await self._run_sync(  # type: ignore[misc]
                _call, func, request, abandon_on_cancel=True
            )
            if type(result) is _Raised:
                result.reraise()
        if type(result) is AsyncGeneratorType:
            return result
        return await self.adapt(result)

    async def adapt(self, result: Any) -> AsyncIterator[Any]:
        """An async iterator over what the agent returned (awaited first if awaitable).

        For a caller that awaited the agent itself (``is_async``: no frame of ours around it).
        """
        while inspect.isawaitable(result):
            result = await result
        return iterate(result)

    async def stream(self, request: AgentRequest) -> AsyncGenerator[StreamItem, None]:
        """Run the agent: only ``str`` (text) and ``AgentEvent`` items, every shape expanded.

        The convenient form for custom protocols; closing it closes the agent's generator.
        """
        items: AsyncIterator[Any] | None = None
        try:
            items = await self.open(request)
            async for value in items:
                if type(value) is str or type(value) is AgentEvent:
                    yield value
                else:
                    for item in expand(value):
                        yield item
        except BaseException as exc:
            error = agent_error(exc, request.raw_request)
            if error is None or error is exc:
                error = None  # it would hold its own traceback's frame: a cycle
                raise
            try:
                raise error from exc
            finally:
                error = None  # its traceback holds this frame: no cycle left behind
        finally:
            if items is not None:
                await aclose(items)


def event_text(item: StreamItem) -> str | None:
    """The text delta an item carries if it is a TEXT item (a bare ``str`` or a TEXT event)."""
    if type(item) is str:
        return item
    if isinstance(item, AgentEvent) and item.event == EventType.TEXT:
        return text_of(item.data.get("delta") or "")
    return None
