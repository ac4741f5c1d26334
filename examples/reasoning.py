r"""An agent that thinks out loud before it answers: ``REASONING`` events, then text.

Serve it:   python examples/reasoning.py                   (http://127.0.0.1:9000)
Try it:     curl -N http://127.0.0.1:9000/v1/chat/completions -d '{"stream":true,
              "messages":[{"role":"user","content":"Is 97 prime?"}]}'

Reasoning reaches each protocol in its own shape: ``delta.reasoning_content`` on Chat
Completions (``message.reasoning_content`` without streaming), a ``REASONING_*`` block on AG-UI,
and a ``reasoning`` output item (``response.reasoning_text.delta`` events) on the Responses API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from agentrun_asgi import AgentEvent, AgentRequest, AgentRunServer, EventType

DELAY = 0.02


def is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


async def invoke_agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
    last = request.last_user_message
    words = (last.text if last else "").replace("?", " ").split()
    numbers = [int(w) for w in words if w.isdigit()]
    n = numbers[0] if numbers else 97
    yield AgentEvent(EventType.REASONING, {"delta": f"I need to check whether {n} is prime. "})
    await asyncio.sleep(DELAY)
    limit = int(n**0.5)
    yield AgentEvent(EventType.REASONING,
                     {"delta": f"Trying divisors from 2 to {limit}. "})  # fmt: skip
    await asyncio.sleep(DELAY)
    answer = "is prime" if is_prime(n) else "is not prime"
    yield AgentEvent(EventType.REASONING, {"delta": f"So {n} {answer}."})
    for i, word in enumerate(f"{n} {answer}.".split(" ")):
        yield word if i == 0 else " " + word
        await asyncio.sleep(DELAY)


server = AgentRunServer(invoke_agent=invoke_agent)

if __name__ == "__main__":
    server.start(host="127.0.0.1", port=9000)
