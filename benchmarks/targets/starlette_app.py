"""The same routes and bytes as the floor, from a plain Starlette app (the middle reference).

Endpoints use Starlette's ``Request``, ``Response`` and ``StreamingResponse`` the way an app
author would; headers are passed (and ``x-request-id`` set last) so that their order matches
the project's.
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..workload import MODEL, answer
from .wire import agui_frames, completion_body, last_content, openai_frames, request_id

_JSON = {"content-type": "application/json"}
_SSE = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


def _with_id(response: Response) -> Response:
    response.headers["x-request-id"] = request_id().decode()
    return response


async def chat_completions(request: Request) -> Response:
    data = orjson.loads(await request.body())
    model = data.get("model") or MODEL
    tokens = answer(last_content(data))
    if data.get("stream"):
        return _with_id(StreamingResponse(openai_frames(tokens, model), headers=_SSE))
    content = "".join([token async for token in tokens])
    return _with_id(Response(completion_body(content, model), headers=_JSON))


async def agui_run(request: Request) -> Response:
    data = orjson.loads(await request.body())
    return _with_id(StreamingResponse(agui_frames(answer(last_content(data)), data), headers=_SSE))


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/ag-ui/agent", agui_run, methods=["POST"]),
    ]
)
