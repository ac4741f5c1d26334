"""AG-UI human in the loop and shared state: the agent asks for approval, the client resumes.

Run 1 ends with ``RUN_FINISHED`` whose ``outcome`` is an interrupt; run 2 carries
``resume: [{"interruptId", "status", "payload"}]``, which the agent reads on ``request.resume``.

Serve it:              python examples/agui_hitl.py                 (http://127.0.0.1:9000)
Then run the client:   python examples/agui_hitl.py client [URL]

Or by hand::

    curl -N http://127.0.0.1:9000/ag-ui/agent -H 'content-type: application/json' -d '{
      "threadId": "t1", "runId": "r1",
      "messages": [{"id": "m1", "role": "user", "content": "delete the draft"}]}'
    # ... data: {"type":"RUN_FINISHED","threadId":"t1","runId":"r1","outcome":{"type":"interrupt",
    #            "interrupts":[{"id":"approval-t1","reason":"approval", ...}]}}

    curl -N http://127.0.0.1:9000/ag-ui/agent -H 'content-type: application/json' -d '{
      "threadId": "t1", "runId": "r2",
      "messages": [{"id": "m1", "role": "user", "content": "delete the draft"}],
      "resume": [{"interruptId": "approval-t1", "status": "resolved",
                  "payload": {"approved": true}}]}'
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

from agentrun_asgi import AgentEvent, AgentRequest, AgentRunServer, EventType

APPROVAL_SCHEMA = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}},
    "required": ["approved"],
}


def _answer(request: AgentRequest, interrupt_id: str) -> dict[str, Any] | None:
    for entry in request.resume or ():
        if entry.get("interruptId") == interrupt_id:
            return entry
    return None


async def approval_agent(request: AgentRequest) -> AsyncIterator[str | AgentEvent]:
    """Asks before acting; acts (or not) once the resumed run brings the answer."""
    last = request.last_user_message
    task = last.text if last is not None else "do nothing"
    interrupt_id = f"approval-{request.thread_id}"
    answer = _answer(request, interrupt_id)
    if answer is None:
        # Shared state: AG-UI front-ends render it live (STATE_SNAPSHOT, then JSON Patch deltas).
        yield AgentEvent(EventType.STATE, {"snapshot": {"task": task, "status": "awaiting"}})
        yield f"I am about to {task}. "
        # The run ends here: RUN_FINISHED with an interrupt outcome (AG-UI 1.0).
        yield AgentEvent(
            EventType.HITL,
            {"id": interrupt_id, "type": "approval", "prompt": f"May I {task}?",
             "options": ["approve", "reject"], "schema": APPROVAL_SCHEMA},
        )  # fmt: skip
        return
    payload = answer.get("payload") or {}
    approved = answer.get("status") == "resolved" and bool(payload.get("approved"))
    status = "done" if approved else "refused"
    patch = [{"op": "replace", "path": "/status", "value": status}]
    yield AgentEvent(EventType.STATE, {"delta": patch})
    if approved:
        yield f"Approved, so I did it: {task}."
    else:
        yield "Not approved: I left everything as it was."


server = AgentRunServer(approval_agent)
app = server  # uvicorn examples.agui_hitl:app


def run_client(
    base_url: str, approve: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Both runs of the round trip against a running server; returns each run's events."""
    import httpx
    import orjson

    def run(body: dict[str, Any]) -> list[dict[str, Any]]:
        url = base_url.rstrip("/") + "/ag-ui/agent"
        with httpx.stream("POST", url, json=body, headers={"accept": "text/event-stream"},
                          timeout=10) as response:  # fmt: skip
            response.raise_for_status()
            raw = response.read()
        return [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]

    messages = [{"id": "m1", "role": "user", "content": "delete the draft"}]
    first = run({"threadId": "t1", "runId": "r1", "messages": messages})
    outcome = first[-1].get("outcome") or {}
    interrupt = outcome["interrupts"][0]
    print(f"run 1 asks: {interrupt.get('message')} (interrupt {interrupt['id']})")
    said = "".join(e["delta"] for e in first if e["type"] == "TEXT_MESSAGE_CONTENT")
    messages.append({"id": "m2", "role": "assistant", "content": said})
    resume = [{"interruptId": interrupt["id"], "status": "resolved",
               "payload": {"approved": approve}}]  # fmt: skip
    second = run({"threadId": "t1", "runId": "r2", "messages": messages, "resume": resume})
    reply = "".join(e["delta"] for e in second if e["type"] == "TEXT_MESSAGE_CONTENT")
    print(f"run 2 answers: {reply}")
    return first, second


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        run_client(sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:9000")
    else:
        server.start(host="127.0.0.1", port=9000)
