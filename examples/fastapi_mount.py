r"""The agent inside an existing FastAPI app, next to the app's own routes.

Serve it:   uvicorn examples.fastapi_mount:app --port 9000
Try it:     curl http://127.0.0.1:9000/agent/v1/chat/completions \
              -d '{"messages":[{"role":"user","content":"hi"}]}'
Clients:    openai.OpenAI(base_url="http://127.0.0.1:9000/agent/v1", api_key="unused")

The mount sets the ASGI ``root_path``; the agent server routes on the path relative to it, so
``/agent/v1/chat/completions`` reaches its ``/v1/chat/completions``, streaming included. A
mounted app gets no lifespan events (Starlette, under FastAPI, sends them to the outer app
only), so the host's lifespan runs the server's startup and shutdown: its hooks, its own
``lifespan`` and the shutdown grace for streams in flight.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from agentrun_asgi import AgentRequest, AgentRunServer


async def invoke_agent(request: AgentRequest) -> AsyncIterator[str]:
    raw = request.raw_request
    # The request view has the attribute names Starlette's Request made familiar.
    tenant = raw.headers.get("x-tenant", "nobody") if raw is not None else "nobody"
    yield "Hello "
    yield f"from the mounted agent, {tenant}."


server = AgentRunServer(invoke_agent=invoke_agent)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await server.startup()
    try:
        yield
    finally:
        await server.shutdown()


app = FastAPI(title="host app", lifespan=lifespan)


@app.get("/status")
def status() -> dict[str, str]:
    return {"app": "host", "agent": "/agent/v1"}


app.mount("/agent", server.as_fastapi_app())

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=9000)
