r"""A protocol of your own, served next to OpenAI by the same agent, with no change to the server.

``CustomProtocolHandler`` declares two routes under its prefix (``/custom``, derived from the
class name minus ``ProtocolHandler``):

- ``POST /custom/invoke``  ``{"input": "..."}`` -> ``{"output": "...", "events": n}`` (JSON)
- ``POST /custom/stream``  ``{"input": "..."}`` -> SSE, one ``data: {"text": "..."}`` per text
  piece, then ``data: {"done": true}``

Serve it:   python examples/custom_protocol.py             (http://127.0.0.1:9000)
Try it:     curl http://127.0.0.1:9000/custom/invoke -d '{"input":"hi"}'
            curl -N http://127.0.0.1:9000/custom/stream -d '{"input":"hi"}'
            curl http://127.0.0.1:9000/v1/chat/completions \
              -d '{"messages":[{"role":"user","content":"hi"}]}'
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import orjson

from agentrun_asgi import (
    AgentEvent,
    AgentRequest,
    AgentRunServer,
    Message,
    MessageRole,
    OpenAIProtocolHandler,
    ProtocolError,
    ProtocolHandler,
    Request,
    Route,
)
from agentrun_asgi.invoker import event_text
from agentrun_asgi.responses import send_json
from agentrun_asgi.streaming import error_message, run_stream
from agentrun_asgi.types import Send

logger = logging.getLogger(__name__)


class TextStreamEncoder:
    """Sans-IO: agent items in, SSE bytes out (the shape ``run_stream`` drives)."""

    def __init__(self) -> None:
        self.done = False

    def encode(self, item: str | AgentEvent) -> bytes:
        text = event_text(item)
        if not text:
            return b""  # this protocol sends text only
        return b"data: " + orjson.dumps({"text": text}) + b"\n\n"

    def error(self, message: str, code: str | None = None) -> bytes:
        self.done = True
        return b"data: " + orjson.dumps({"error": message}) + b"\n\n"

    def close(self) -> bytes:
        self.done = True
        return b'data: {"done":true}\n\n'


class CustomProtocolHandler(ProtocolHandler):
    """``{"input": "..."}`` in; JSON or a text-only event stream out."""

    name = "custom"

    def routes(self) -> Sequence[Route]:
        return [
            Route("/invoke", self.invoke_json, ("POST",), "custom.invoke"),
            Route("/stream", self.invoke_stream, ("POST",), "custom.stream"),
        ]

    async def _agent_request(self, request: Request, stream: bool) -> AgentRequest:
        try:
            body = await request.json()
        except orjson.JSONDecodeError:
            raise ProtocolError(400, "The body must be JSON.") from None
        text = body.get("input") if isinstance(body, dict) else None
        if not isinstance(text, str):
            # Raised before the response starts: the server answers 400 with an error body.
            raise ProtocolError(400, "'input' must be a string.", param="input")
        return AgentRequest(
            protocol=self.name,
            messages=[Message(MessageRole.USER, text)],
            stream=stream,
            raw_request=request,
        )

    async def invoke_json(self, request: Request, send: Send) -> None:
        agent_request = await self._agent_request(request, stream=False)
        pieces: list[str] = []
        count = 0
        events = self.invoke(agent_request)
        try:
            async for item in events:
                count += 1
                pieces.append(event_text(item) or "")
        except Exception as exc:
            # Nothing is sent yet: the server renders this as a JSON 500 with the message only.
            logger.exception("agent failed")
            raise ProtocolError(500, error_message(exc)) from exc
        finally:
            await events.aclose()
        await send_json(send, 200, {"output": "".join(pieces), "events": count})

    async def invoke_stream(self, request: Request, send: Send) -> None:
        agent_request = await self._agent_request(request, stream=True)
        await run_stream(request, send, self.invoke(agent_request), TextStreamEncoder())


async def invoke_agent(request: AgentRequest) -> AsyncIterator[str]:
    """One agent for every protocol: it never needs to know which one asked."""
    last = request.last_user_message
    for word in f"Echo ({request.protocol}): {last.text if last else ''}".split(" "):
        yield word + " "
        await asyncio.sleep(0)


server = AgentRunServer(
    invoke_agent=invoke_agent,
    protocols=[OpenAIProtocolHandler(), CustomProtocolHandler()],
)

if __name__ == "__main__":
    server.start(port=9000)
