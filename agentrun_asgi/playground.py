"""The built-in playground: a static page, served by the app itself, that chats with its agent.

``GET {path}`` (default ``/playground``) answers one self-contained page: HTML, CSS and plain
JavaScript shipped as package data in ``static/``, with no build step and nothing fetched from
outside the server. The page calls the server's own OpenAI and AG-UI endpoints through URLs
relative to where it was loaded, so it keeps working under a mount prefix or ``root_path``.

The paths are decided at :meth:`bind`; the files are read, rendered and hashed once, on the
first request for any of them (not at startup: a server that is never asked for its page
should not start slower for it). After that a request only picks a precomputed body and header
list and sends it. The page never needs inline code, so its Content-Security-Policy allows
only its own origin.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .protocols.agui import AGUIProtocolHandler
from .protocols.base import ProtocolHandler
from .protocols.openai import OpenAIProtocolHandler
from .requests import Request, header
from .routing import Route, join_path
from .types import RawHeaders, Send

if TYPE_CHECKING:
    from .server import AgentRunServer

STATIC_DIR = Path(__file__).parent / "static"

#: Same-origin only, and no inline script or style (CSP Level 3, ``default-src``); no framing,
#: since the page may hold an API key (``frame-ancestors``, which ``default-src`` does not cover).
CONTENT_SECURITY_POLICY = (
    b"default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_COMMON: RawHeaders = [
    # Not versioned by URL, so always revalidated (RFC 9111 5.2.2.4); the ETag makes it cheap.
    (b"cache-control", b"no-cache"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_HTML = b"text/html; charset=utf-8"
_ASSETS = {  # served name -> (file in static/, Content-Type)
    "app.js": ("playground.js", b"text/javascript; charset=utf-8"),
    "app.css": ("playground.css", b"text/css; charset=utf-8"),
    "icon.svg": ("playground.svg", b"image/svg+xml"),  # else browsers ask for /favicon.ico
}


class _Static:
    """One precomputed response: body, full header list, and its ETag for 304s."""

    __slots__ = ("body", "etag", "headers", "not_modified")

    def __init__(self, body: bytes, content_type: bytes) -> None:
        import hashlib

        self.body = body
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
        self.headers: RawHeaders = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"etag", self.etag),
            *_COMMON,
        ]
        self.not_modified: RawHeaders = [(b"etag", self.etag), *_COMMON]

    async def send(self, request: Request, send: Send) -> None:
        scope = request.scope
        if header(scope, b"if-none-match") == self.etag:  # RFC 9110 13.1.2
            await send({"type": "http.response.start", "status": 304,
                        "headers": self.not_modified})  # fmt: skip
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        # HEAD gets GET's headers, Content-Length included, and no body (RFC 9110 9.3.2).
        body = b"" if scope["method"] == "HEAD" else self.body
        await send({"type": "http.response.body", "body": body})


class PlaygroundHandler(ProtocolHandler):
    """Serves the playground page and its assets (script, style sheet, icon) under ``path``.

    The page learns the paths of the OpenAI and AG-UI endpoints from ``data-`` attributes of
    its root element, written at :meth:`bind` from the server's own handlers and prefixes (a
    protocol the server does not serve is written empty, and the page disables it).
    """

    name = "playground"

    def __init__(self, path: str = "/playground") -> None:
        self.path = join_path(path, "")
        self._urls = ("/v1/chat/completions", "/ag-ui/agent")
        self._page: _Static | None = None
        self._page_slash: _Static | None = None
        self._assets: dict[str, _Static] = {}

    def get_prefix(self) -> str | None:
        return self.path

    def bind(self, server: AgentRunServer) -> None:
        super().bind(server)
        openai = agui = ""
        for handler in server.protocols:
            if not openai and isinstance(handler, OpenAIProtocolHandler):
                openai = join_path(server.prefix_for(handler), "/chat/completions")
            elif not agui and isinstance(handler, AGUIProtocolHandler):
                agui = join_path(server.prefix_for(handler), "")
        self.path = join_path(server.prefix_for(self), "")
        self._urls = (openai, agui)
        self._page = self._page_slash = None  # rendered again, with these paths

    def _load(self) -> None:
        """Read the files and render the page (the first request for any of them)."""
        if not self._assets:
            self._assets = {
                name: _Static((STATIC_DIR / filename).read_bytes(), content_type)
                for name, (filename, content_type) in _ASSETS.items()
            }
        if self._page is None:
            self._render(self.path, *self._urls)

    def _render(self, page: str, openai: str, agui: str) -> None:
        """The page twice: loaded as ``.../playground`` and as ``.../playground/``.

        Asset URLs are relative, so they resolve under any prefix; only the last segment of the
        page path differs between the two (``playground/app.js`` against ``app.js``).
        """
        from html import escape

        last = page.rstrip("/").rsplit("/", 1)[-1]
        values = {
            "page": page.strip("/"),
            "openai": openai.strip("/"),
            "agui": agui.strip("/"),
        }
        text = (STATIC_DIR / "playground.html").read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", escape(value, quote=True))
        self._page_slash = _Static(text.replace("{{assets}}", "").encode(), _HTML)
        no_slash = text.replace("{{assets}}", escape(last) + "/" if last else "")
        self._page = _Static(no_slash.encode(), _HTML)

    def routes(self) -> Sequence[Route]:
        return (
            Route("", self.page, ("GET",), "playground.page"),
            *(Route("/" + name, self._asset(name), ("GET",), f"playground.{name}")
              for name in _ASSETS),
        )  # fmt: skip

    async def page(self, request: Request, send: Send) -> None:
        if self._page is None:
            self._load()
        page = self._page_slash if request.scope["path"].endswith("/") else self._page
        assert page is not None
        await page.send(request, send)

    def _asset(self, name: str) -> Callable[[Request, Send], Awaitable[None]]:
        async def asset(request: Request, send: Send) -> None:
            if not self._assets:
                self._load()
            await self._assets[name].send(request, send)

        return asset

    @property
    def paths(self) -> list[str]:
        """Every path this handler answers (the server leaves them open when keys are on)."""
        return [join_path(self.path, route.path) for route in self.routes()]
