r"""The agent inside a Starlette app: ``Mount("/agent", app=server)``, streaming included.

Serve it:   uvicorn examples.starlette_mount:app --port 9000
Try it:     curl -N http://127.0.0.1:9000/agent/v1/chat/completions \
              -d '{"stream":true,"messages":[{"role":"user","content":"hi"}]}'
            curl http://127.0.0.1:9000/status
Clients:    openai.OpenAI(base_url="http://127.0.0.1:9000/agent/v1", api_key="unused")

The server is a plain ASGI app, so ``Mount`` takes it as is: the mount sets the ASGI
``root_path`` and the server routes on the rest of the path. Starlette sends lifespan events to
the outer app only, so the outer lifespan runs the server's startup and shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from agentrun_asgi import AgentRequest, AgentRunServer


async def invoke_agent(request: AgentRequest) -> AsyncIterator[str]:
    last = request.last_user_message
    yield "Hello "
    yield f"from Starlette: {last.text if last else ''}"


server = AgentRunServer(invoke_agent=invoke_agent)


async def status(request: Request) -> JSONResponse:
    return JSONResponse({"app": "host", "agent": "/agent/v1"})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await server.startup()
    try:
        yield
    finally:
        await server.shutdown()


app = Starlette(routes=[Route("/status", status), Mount("/agent", app=server)],
                lifespan=lifespan)  # fmt: skip

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=9000)
