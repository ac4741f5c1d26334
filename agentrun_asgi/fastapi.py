"""The FastAPI shim: the only module that imports FastAPI, and only when called.

FastAPI builds its OpenAPI document from its own routes, and a mounted ASGI app has none it can
see. :func:`install_openapi` therefore describes the server's routes (``server.routes``: path,
methods, name) in hand-written JSON Schema and merges them into the app's ``openapi()``; the
requests themselves still go to the mounted server, and no pydantic model is involved.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from . import __version__
from .routing import join_path
from .server import run_hooks

if TYPE_CHECKING:
    from .server import AgentRunServer


def build_fastapi_app(server: AgentRunServer, **fastapi_kwargs: Any) -> FastAPI:
    """A FastAPI app whose every path is answered by ``server``, streaming included.

    The server is mounted at the root, so that ``parent.mount("/agent", app)`` serves
    ``/agent/v1/chat/completions``: Starlette's ``Mount`` sets ``root_path``, and the server
    routes on the path relative to it. A mounted app gets no lifespan events of its own, so the
    server's startup and shutdown run from the FastAPI app's lifespan; when this app is itself
    mounted, the host's lifespan must run them (``server.startup()``, ``server.shutdown()``),
    as ``examples/fastapi_mount.py`` does. FastAPI's own
    ``/openapi.json`` and ``/docs`` stay FastAPI's, and list the server's routes.
    """

    # A ``lifespan`` of the caller's runs inside the server's, never instead of it: the server's
    # hooks, its own lifespan and its shutdown grace must run either way.
    inner: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = fastapi_kwargs.pop(
        "lifespan", None
    )
    # FastAPI runs ``on_startup`` / ``on_shutdown`` (and ``@app.on_event``) handlers only when
    # it has no ``lifespan``, and this app always has one: they run from it, or never would.
    # Taken out of the keywords too: older Starlette refuses them beside a ``lifespan``.
    on_startup = list(fastapi_kwargs.pop("on_startup", None) or ())
    on_shutdown = list(fastapi_kwargs.pop("on_shutdown", None) or ())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        await server.startup()
        try:
            await run_hooks(app.router.on_startup)
            try:
                # The state the server's own lifespan yielded reaches each request's
                # ``scope["state"]`` here too, as it does when the server is the ASGI app.
                if inner is None:
                    yield dict(server.state) or None
                else:
                    async with inner(app) as state:
                        if isinstance(state, Mapping):
                            yield {**server.state, **state}
                        else:
                            yield dict(server.state) or state
            finally:
                await run_hooks(app.router.on_shutdown)
        finally:
            await server.shutdown()

    fastapi_kwargs["lifespan"] = lifespan
    fastapi_kwargs.setdefault("title", "agentrun-asgi")
    fastapi_kwargs.setdefault("version", __version__)  # FastAPI's own default is "0.1.0"
    app = FastAPI(**fastapi_kwargs)
    app.router.on_startup.extend(on_startup)
    app.router.on_shutdown.extend(on_shutdown)
    app.mount("/", server)
    install_openapi(app, server)
    return app


def install_openapi(app: FastAPI, server: AgentRunServer, prefix: str = "") -> None:
    """Make ``app.openapi()`` list ``server``'s routes, under ``prefix`` where it is mounted.

    For a host app that mounts the server itself: ``host.mount("/agent", server)`` then
    ``install_openapi(host, server, "/agent")``.
    """
    previous: Callable[[], dict[str, Any]] = app.openapi
    merged = False

    def openapi() -> dict[str, Any]:
        nonlocal merged
        # FastAPI caches the document in ``openapi_schema``; merge once into each new one.
        if app.openapi_schema is None or not merged:
            schema = previous()
            paths = schema.setdefault("paths", {})
            for path, operations in openapi_paths(server, prefix).items():
                paths.setdefault(path, {}).update(operations)
            app.openapi_schema = schema
            merged = True
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def openapi_paths(server: AgentRunServer, prefix: str = "") -> dict[str, dict[str, Any]]:
    """OpenAPI ``paths`` entries for the server's routes (HEAD, implied by GET, is left out)."""
    paths: dict[str, dict[str, Any]] = {}
    used_ids: set[str] = set()
    for route in server.routes:
        path = join_path(prefix, route.path) if prefix else route.path
        path = path.replace(":path}", "}")  # OpenAPI names a rest-of-path parameter plainly
        spec = _KNOWN.get(route.name) or _generic(route.name, path)
        for method in route.methods:
            if method.upper() == "HEAD":
                continue
            operation: dict[str, Any] = {
                "tags": [spec.get("tag", "agent")],
                "summary": spec["summary"],
                "description": spec.get("description", ""),
                "operationId": _unique_id(route.name or path, method, used_ids),
                "responses": spec.get("responses") or _JSON_RESPONSE,
            }
            if "requestBody" in spec and method.upper() in ("POST", "PUT", "PATCH"):
                operation["requestBody"] = spec["requestBody"]
            parameters = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in re.findall(r"{([^}/]+)}", path)
            ]
            if parameters:
                operation["parameters"] = parameters
            paths.setdefault(path, {})[method.lower()] = operation
    return paths


def _unique_id(name: str, method: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "route"
    candidate = base
    if candidate in used:
        candidate = f"{base}_{method.lower()}"
    n = 2
    while candidate in used:
        candidate = f"{base}_{method.lower()}_{n}"
        n += 1
    used.add(candidate)
    return candidate


def _generic(name: str, path: str) -> dict[str, Any]:
    return {"summary": name or path, "description": "A route of a protocol handler.",
            "requestBody": _body({"type": "object"}, required=False)}  # fmt: skip


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
}  # fmt: skip
_ERRORS = {"400": {"description": "Invalid request",
                   "content": {"application/json": {"schema": _ERROR}}}}  # fmt: skip
_JSON_RESPONSE = {"200": {"description": "OK", "content": {"application/json": {"schema": {}}}}}
_SSE = {"text/event-stream": {"schema": {"type": "string"}}}
_MESSAGES = {"type": "array", "minItems": 1, "items": {
    "type": "object", "required": ["role"], "properties": {
        "role": {"type": "string",
                 "enum": ["system", "developer", "user", "assistant", "tool", "function"]},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}},
                              {"type": "null"}]},
        "name": {"type": "string"}, "tool_call_id": {"type": "string"},
        "tool_calls": {"type": "array", "items": {"type": "object"}}}}}  # fmt: skip
_SAMPLING = {
    "model": {"type": "string", "default": "agentrun"},
    "stream": {"type": "boolean", "default": False},
    "tools": {"type": "array", "items": {"type": "object"}},
    "tool_choice": {"anyOf": [{"type": "string"}, {"type": "object"}]},
    "temperature": {"type": "number"}, "top_p": {"type": "number"},
    "user": {"type": "string"},
}  # fmt: skip


def _page_file(summary: str, content_type: str) -> dict[str, Any]:
    """A playground file: not JSON, so not the generic route's JSON answer."""
    return {"tag": "playground", "summary": summary, "description": "Part of the built-in "
            "chat page (see the playground's own URL); 304 on a matching If-None-Match.",
            "responses": {"200": {"description": summary,
                                  "content": {content_type: {"schema": {"type": "string"}}}},
                          "304": {"description": "Not modified"}}}  # fmt: skip


#: Descriptions of the built-in routes, by ``Route.name``.
_KNOWN: dict[str, dict[str, Any]] = {
    "playground.page": _page_file("The playground page", "text/html"),
    "playground.app.js": _page_file("The playground's script", "text/javascript"),
    "playground.app.css": _page_file("The playground's style sheet", "text/css"),
    "playground.icon.svg": _page_file("The playground's icon", "image/svg+xml"),
    "openai.chat_completions": {
        "tag": "OpenAI", "summary": "Create a chat completion",
        "description": "OpenAI Chat Completions: a `chat.completion` JSON object, or with "
                       "`stream: true` an SSE stream of `chat.completion.chunk` objects ending "
                       "with `data: [DONE]`.",
        "requestBody": _body({"type": "object", "required": ["messages"], "properties": {
            "messages": _MESSAGES, **_SAMPLING,
            "stream_options": {"type": "object",
                               "properties": {"include_usage": {"type": "boolean"}}},
            "max_tokens": {"type": "integer"}, "max_completion_tokens": {"type": "integer"},
            "stop": {"anyOf": [{"type": "string"}, {"type": "array",
                                                    "items": {"type": "string"}}]},
            "n": {"type": "integer"}}}),
        "responses": {"200": {"description": "A completion, or its chunks when streaming",
                              "content": {"application/json": {"schema": {"type": "object"}},
                                          **_SSE}}, **_ERRORS},
    },
    "openai.models": {
        "tag": "OpenAI", "summary": "List models",
        "description": "The model ids this server answers to (`object: list`).",
        "responses": {"200": {"description": "The model list", "content": {"application/json": {
            "schema": {"type": "object", "properties": {
                "object": {"type": "string"},
                "data": {"type": "array", "items": {"type": "object"}}}}}}}},
    },
    "openai.model": {
        "tag": "OpenAI", "summary": "Retrieve a model",
        "description": "One model this server answers to (`object: model`); 404 with code "
                       "`model_not_found` for any other id.",
        "responses": {"200": {"description": "The model", "content": {"application/json": {
            "schema": {"type": "object", "properties": {
                "id": {"type": "string"}, "object": {"type": "string"},
                "created": {"type": "integer"}, "owned_by": {"type": "string"}}}}}},
            "404": {"description": "No such model",
                    "content": {"application/json": {"schema": _ERROR}}}},
    },
    "openai.responses": {
        "tag": "OpenAI", "summary": "Create a model response",
        "description": "OpenAI Responses API: a `response` object, or with `stream: true` the "
                       "`response.*` server-sent events.",
        "requestBody": _body({"type": "object", "required": ["input"], "properties": {
            "input": {"anyOf": [{"type": "string"},
                                {"type": "array", "items": {"type": "object"}}]},
            "instructions": {"type": "string"}, "max_output_tokens": {"type": "integer"},
            **_SAMPLING}}),
        "responses": {"200": {"description": "A response, or its events when streaming",
                              "content": {"application/json": {"schema": {"type": "object"}},
                                          **_SSE}}, **_ERRORS},
    },
    "agui.run": {
        "tag": "AG-UI", "summary": "Run the agent (AG-UI)",
        "description": "AG-UI 1.0: a `RunAgentInput` in, an SSE stream of events out, from "
                       "`RUN_STARTED` to `RUN_FINISHED` or `RUN_ERROR`.",
        "requestBody": _body({"type": "object", "properties": {
            "threadId": {"type": "string"}, "runId": {"type": "string"},
            "parentRunId": {"type": "string"}, "state": {},
            "messages": {"type": "array", "items": {"type": "object"}},
            "tools": {"type": "array", "items": {"type": "object"}},
            "context": {"type": "array", "items": {"type": "object"}},
            "forwardedProps": {}, "resume": {"type": "array", "items": {"type": "object"}}}}),
        "responses": {"200": {"description": "The run's events", "content": _SSE}, **_ERRORS},
    },
    "health": {
        "tag": "server", "summary": "Health check",
        "description": "`{\"status\": \"ok\"}`; 503 once shutdown has begun.",
        "responses": {"200": {"description": "Serving", "content": {"application/json": {
            "schema": {"type": "object", "properties": {"status": {"type": "string"}}}}}}},
    },
}  # fmt: skip
