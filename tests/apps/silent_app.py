"""An app whose agent streams one frame, then waits silently until it is stopped: served in a
subprocess by tests that stop it from outside. Its ``finally`` appends ``finally`` to the file
named by ``AGENTRUN_TEST_MARK``, so the test sees the agent was cancelled."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import anyio

from agentrun_asgi import AgentRequest, AgentRunServer


async def invoke_agent(request: AgentRequest) -> AsyncIterator[str]:
    try:
        yield "tick "
        await anyio.sleep_forever()  # an LLM call that takes its time
    finally:
        with open(os.environ["AGENTRUN_TEST_MARK"], "a") as mark:
            mark.write("finally\n")


app = AgentRunServer(invoke_agent)
