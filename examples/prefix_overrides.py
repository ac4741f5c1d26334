r"""Moving a protocol to another path: OpenAI at ``/api/v1`` instead of ``/v1``.

Serve it:   python examples/prefix_overrides.py            (http://127.0.0.1:9000)
Try it:     curl http://127.0.0.1:9000/api/v1/chat/completions \
              -d '{"messages":[{"role":"user","content":"hi"}]}'
Clients:    openai.OpenAI(base_url="http://127.0.0.1:9000/api/v1", api_key="unused")

``prefix_overrides`` is keyed by the handler's class name; it wins over the handler's own
``get_prefix()``. The old ``/v1`` paths then answer 404.
"""

from __future__ import annotations

from agentrun_asgi import AgentRequest, AgentRunServer, OpenAIProtocolHandler


def invoke_agent(request: AgentRequest) -> str:
    return "Served from /api/v1."


server = AgentRunServer(
    invoke_agent=invoke_agent,
    protocols=[OpenAIProtocolHandler()],
    prefix_overrides={"OpenAIProtocolHandler": "/api/v1"},
)

if __name__ == "__main__":
    server.start(port=9000)
