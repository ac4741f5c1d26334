"""The servers under test, one module each; every one serves the same routes and bytes.

- ``floor``: a hand-written ASGI app, no framework: the least work that sends these bytes.
- ``starlette_app``: the same bytes from a plain Starlette app.
- ``project``: agentrun-asgi's ``AgentRunServer``.
- ``sdk_app``: the AgentRun SDK's own FastAPI server (different paths, its own wire format).
"""
