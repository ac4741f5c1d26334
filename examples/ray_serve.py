r"""Scale out with Ray Serve: the same server on two replicas behind Serve's HTTP proxy.

Install:    pip install "agentrun-asgi[ray]"
Serve it:   python examples/ray_serve.py                   (http://127.0.0.1:8000, or $PORT)
Try it:     curl -N http://127.0.0.1:8000/v1/chat/completions \
              -d '{"stream":true,"messages":[{"role":"user","content":"hi"}]}'

Each replica builds its own server (``build_server`` runs there) and says which process
answered, so repeated requests show the load spread over both. Streams pass through the
proxy frame by frame. On a running cluster, deploy ``app`` with ``serve run`` or a Serve
config file instead; the replicas must then be able to import this module (``serve run
examples.ray_serve:app --working-dir .`` ships it to them).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from agentrun_asgi import AgentRequest, AgentRunServer
from agentrun_asgi.ray_serve import deployment


async def invoke_agent(request: AgentRequest) -> AsyncIterator[str]:
    last = request.last_user_message
    for word in f"Replica {os.getpid()} heard: {last.text if last else ''}".split(" "):
        yield word + " "
        await asyncio.sleep(0.05)


def build_server() -> AgentRunServer:
    """Called on each replica when it starts."""
    return AgentRunServer(invoke_agent)


# A bound Serve application: ``serve.run(app)``, or ``serve run examples.ray_serve:app``.
app = deployment(build_server, num_replicas=2, ray_actor_options={"num_cpus": 0.5})

if __name__ == "__main__":
    import time

    import ray
    from ray import serve

    port = int(os.environ.get("PORT", "8000"))
    ray.init(include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app, name="agentrun", route_prefix="/")
    print(f"Serving on http://127.0.0.1:{port} with 2 replicas; Ctrl+C to stop.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
