"""The work every target does, defined once so that all of them do exactly the same.

The agent answers with a fixed list of short words ("tokens"). A request whose last user
message is ``"slow"`` gets the slow answer instead: ``SLOW_TOKENS`` words, ``SLOW_DELAY``
seconds apart (the 1000/10,000 concurrent-streams checks). Pure Python, no imports beyond the
standard library: the SDK target imports it from another interpreter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

_WORDS = (
    "the quick brown fox jumps over a lazy dog while seven small birds sing in tall green "
    "trees near an old stone bridge and the river runs cold under grey clouds that drift "
    "slowly east past hills where farmers plant corn beans and wheat every spring before rain "
    "comes back again when the wind turns north and the long nights return to the valley "
    "below our quiet town"
).split()

TOKENS: tuple[str, ...] = tuple(w + " " for w in _WORDS[:64])
assert len(TOKENS) == 64, len(TOKENS)

SLOW_PROMPT = "slow"
SLOW_TOKENS: tuple[str, ...] = TOKENS[:20]
SLOW_DELAY = 0.05

MODEL = "agentrun"
THREAD_ID = "thread-bench"
RUN_ID = "run-bench"


def plan(prompt: object) -> tuple[tuple[str, ...], float]:
    """The tokens to send for a prompt and the delay before each token after the first."""
    if prompt == SLOW_PROMPT:
        return SLOW_TOKENS, SLOW_DELAY
    return TOKENS, 0.0


async def answer(prompt: object) -> AsyncIterator[str]:
    """The agent logic every target runs: yield the planned tokens (sleeping between slow ones).

    Targets built on an agent framework pass this generator back from their ``invoke_agent``
    (a coroutine returning an async iterator, a shape both servers accept), so no target pays
    for an extra generator layer per token.
    """
    tokens, delay = plan(prompt)
    if delay:
        first = True
        for token in tokens:
            if not first:
                await asyncio.sleep(delay)
            first = False
            yield token
        return
    for token in tokens:
        yield token


def _dump(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def openai_body(stream: bool, prompt: str = "Say something.") -> bytes:
    body: dict[str, object] = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
    return _dump(body)


def agui_body(prompt: str = "Say something.") -> bytes:
    return _dump(
        {
            "threadId": THREAD_ID,
            "runId": RUN_ID,
            "state": {},
            "messages": [{"id": "msg-1", "role": "user", "content": prompt}],
            "tools": [],
            "context": [],
            "forwardedProps": {},
        }
    )
