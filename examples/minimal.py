r"""The smallest agent: a plain sync function that returns a string.

Serve it:   python examples/minimal.py                     (http://127.0.0.1:9000)
Try it:     curl http://127.0.0.1:9000/v1/chat/completions \
              -d '{"messages":[{"role":"user","content":"hi"}]}'

The function runs in a worker thread, so blocking calls inside it never stall the server.
"""

from __future__ import annotations

from agentrun_asgi import AgentRequest, AgentRunServer


def invoke_agent(request: AgentRequest) -> str:
    last = request.last_user_message
    return f"You said: {last.text if last else ''}"


server = AgentRunServer(invoke_agent=invoke_agent)

if __name__ == "__main__":
    server.start(port=9000)
