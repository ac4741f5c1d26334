"""A lazy, read-only view of an ASGI HTTP request.

Attribute names are the ones Starlette's ``Request`` made familiar (agents written for the
AgentRun SDK read them from ``request.raw_request``); nothing is computed until asked for.
"""

from __future__ import annotations

import gc
import ipaddress
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from functools import lru_cache
from types import EllipsisType
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from .errors import ClientDisconnect, ProtocolError
from .types import Receive, Scope

if TYPE_CHECKING:
    from .guard import Run

DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024
#: RFC 8259 section 8.1 lets a JSON parser ignore it, and ``json.loads`` of bytes (so the
#: ``json()`` of Starlette and FastAPI) does; orjson refuses it, so a body that fails to parse
#: is tried again without it (the error path only: a valid body pays nothing).
UTF8_BOM = b"\xef\xbb\xbf"
#: Bodies from this size up are parsed with the cyclic garbage collector paused (``loads``).
LARGE_BODY = 1024 * 1024


def loads(body: bytes) -> Any:
    """``orjson.loads``, with the cyclic GC paused for a large body.

    Each few hundred containers a parse makes start a collection that walks them all again,
    none of them garbage: 10 MiB of small arrays (well within the default body limit) held
    the event loop, every other client with it, 1.5 s instead of 0.4 s. A small body is
    parsed as is (one comparison), since it makes too few containers for that to matter.
    """
    if len(body) < LARGE_BODY or not gc.isenabled():
        return orjson.loads(body)
    gc.disable()
    try:
        return orjson.loads(body)
    finally:
        gc.enable()


def route_path(scope: Scope) -> str:
    """The path relative to the mount point (ASGI spec: ``path`` includes ``root_path``)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        rest = path[len(root_path) :]
        if not rest or rest[0] == "/":
            return rest or "/"
    return path


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of one header, without building a mapping (hot path)."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


class Address(NamedTuple):
    host: str
    port: int


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only headers; ``[]`` gives a repeated name's first value and
    ``getlist`` all of them, while ``keys()``, ``values()``, ``items()``, iteration and ``len``
    go over every header line, a repeated name as often as it came (as Starlette's do)."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw

    def __getitem__(self, key: str) -> str:
        name = key.lower().encode("latin-1")
        for k, v in self.raw:
            if k.lower() == name:
                return v.decode("latin-1")
        raise KeyError(key)

    def getlist(self, key: str) -> list[str]:
        name = key.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self.raw if k.lower() == name]

    def keys(self) -> list[str]:  # type: ignore[override]
        return [k.decode("latin-1").lower() for k, _ in self.raw]

    def values(self) -> list[str]:  # type: ignore[override]
        return [v.decode("latin-1") for _, v in self.raw]

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in self.raw]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.raw)

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


class QueryParams(Mapping[str, str]):
    """Query string parameters; the last value wins on ``[]``, ``getlist`` returns them all."""

    __slots__ = ("_dict", "_items")

    def __init__(self, query_string: bytes | str) -> None:
        if isinstance(query_string, bytes):
            query_string = query_string.decode("latin-1")
        self._items = parse_qsl(query_string, keep_blank_values=True)
        self._dict = dict(self._items)

    def __getitem__(self, key: str) -> str:
        return self._dict[key]

    def getlist(self, key: str) -> list[str]:
        return [v for k, v in self._items if k == key]

    def multi_items(self) -> list[tuple[str, str]]:
        """Every pair in order, a repeated name as often as it came."""
        return list(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __str__(self) -> str:
        """The pairs encoded again (``a=1&b=x+y``), as Starlette's ``str(query_params)``."""
        return urlencode(self._items)

    def __repr__(self) -> str:
        return f"QueryParams({self._items!r})"


class URL:
    """The request URL as Starlette's ``Request.url`` builds it; ``str()`` gives it whole.

    The path is the decoded ``scope["path"]`` with ``?``, ``#`` and ``\\`` escaped (not
    ``raw_path``), the authority is a Host header only if it is a well-formed one (else the
    ``server`` address, an IPv6 one bracketed), and the query is UTF-8 (Latin-1 if it is not).
    """

    __slots__ = ("netloc", "path", "query", "scheme")

    def __init__(self, scope: Scope) -> None:
        self.scheme: str = scope.get("scheme", "http")
        self.netloc: str = authority(scope, self.scheme)
        path: str = scope["path"]
        self.path: str = path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
        query: bytes = scope.get("query_string", b"")
        try:
            self.query: str = query.decode()
        except UnicodeDecodeError:
            self.query = query.decode("latin-1")

    @property
    def hostname(self) -> str | None:
        """The host, lower-cased and without brackets or port (``urlsplit``'s, as Starlette's)."""
        return urlsplit(f"//{self.netloc}").hostname

    @property
    def port(self) -> int | None:
        """The port the client named (or the server's when it differs from the default)."""
        return urlsplit(f"//{self.netloc}").port

    @property
    def is_secure(self) -> bool:
        return self.scheme in ("https", "wss")

    def __str__(self) -> str:
        url = f"{self.scheme}://{self.netloc}{self.path}"
        return f"{url}?{self.query}" if self.query else url

    def __eq__(self, other: object) -> bool:
        """Equal to a URL or string of the same text, as Starlette's ``URL`` is."""
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"URL({str(self)!r})"


DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def authority(scope: Scope, scheme: str) -> str:
    """The URL's ``host[:port]``: a well-formed Host header, else the server address."""
    host = header(scope, b"host")
    if host is not None and valid_host(text := host.decode("latin-1")):
        return text
    server = scope.get("server")
    if not server:
        return ""
    name, port = server
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    return name if port in (None, DEFAULT_PORTS.get(scheme)) else f"{name}:{port}"


@lru_cache(maxsize=1)
def host_pattern() -> re.Pattern[str]:
    """Starlette's Host grammar (compiled on first use: importing the package stays cheap)."""
    return re.compile(
        r"(?P<host>[a-z0-9._~%!$&'()*+,;=-]+|\[(?:(?P<ipv6>[a-f0-9]*:[a-f0-9.:]+)|"
        r"(?-i:v)[a-f0-9]+\.[a-z0-9._~!$&'()*+,;=:-]+)\])(?::(?P<port>[0-9]+))?",
        re.IGNORECASE,
    )


def valid_host(host: str) -> bool:
    """A Host header that cannot change the URL's path or authority (``a/b``, ``u@h``), with a
    port that fits 16 bits; any other is ignored for the server address, as Starlette does."""
    match = host_pattern().fullmatch(host)
    if match is None:
        return False
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return False
    port = (match["port"] or "").lstrip("0")
    return len(port) <= 5 and int(port or "0") <= 65535


class State:
    """``request.state.name``: attribute access over a dict, as Starlette's ``State``."""

    __slots__ = ("_state",)

    def __init__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "_state", state)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._state[key]
        except KeyError:
            raise AttributeError(f"'State' object has no attribute '{key}'") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self._state[key] = value

    def __delattr__(self, key: str) -> None:
        del self._state[key]

    def __getitem__(self, key: str) -> Any:
        return self._state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._state[key] = value


def parse_cookies(line: str) -> dict[str, str]:
    """One ``Cookie`` header's pairs, as Starlette parses them (after Django: lenient, since
    browsers are; a chunk without ``=`` is a value with an empty name)."""
    from http.cookies import _unquote  # rare: imported on use

    cookies: dict[str, str] = {}
    for chunk in line.split(";"):
        key, sep, value = chunk.partition("=")
        if not sep:
            key, value = "", chunk
        key, value = key.strip(), value.strip()
        if key or value:
            cookies[key] = _unquote(value)
    return cookies


class Request:
    """The request an endpoint serves: scope and receive, read lazily, body capped in size."""

    __slots__ = (
        "_body", "_content_length", "_cookies", "_headers", "_json", "_query_params",
        "complete", "max_body_size", "receive", "run", "scope", "started",
    )  # fmt: skip

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        content_length: bytes | EllipsisType | None = ...,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.max_body_size = max_body_size
        #: The Content-Length header's value, when the caller already looked (``...``: not yet).
        self._content_length = content_length
        #: The response head went out (set by ``run_stream``; the guard answers errors by it).
        self.started = False
        #: The response's last byte went out (set by ``run_stream``): from then on uvicorn
        #: answers ``receive()`` with ``http.disconnect``, which no longer means the client left.
        self.complete = False
        #: The guard's record of this request's run, made only when one is needed.
        self.run: Run | None = None
        self._body: bytes | None = None
        self._headers: Headers | None = None
        self._query_params: QueryParams | None = None

    @property
    def method(self) -> str:
        return self.scope["method"]  # type: ignore[no-any-return]

    @property
    def path(self) -> str:
        return self.scope["path"]  # type: ignore[no-any-return]

    @property
    def path_params(self) -> dict[str, str]:
        """The route's path parameters (``{name}`` segments), as Starlette's ``Request`` has."""
        return self.scope.get("path_params") or {}

    @property
    def url(self) -> URL:
        return URL(self.scope)

    @property
    def base_url(self) -> URL:
        """The app's root URL (``scheme://host/root_path/``), as Starlette's, to build links on."""
        scope = self.scope
        root: str = scope.get("app_root_path", scope.get("root_path", ""))
        path = root if root.endswith("/") else f"{root}/"
        return URL({**scope, "path": path, "query_string": b""})

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self.scope["headers"])
        return self._headers

    @property
    def query_params(self) -> QueryParams:
        if self._query_params is None:
            self._query_params = QueryParams(self.scope.get("query_string", b""))
        return self._query_params

    @property
    def cookies(self) -> dict[str, str]:
        """The ``Cookie`` headers' pairs, parsed as Starlette (and browsers) read them."""
        try:
            return self._cookies
        except AttributeError:  # first use: the slot is left unset by ``__init__``
            self._cookies: dict[str, str] = {}
            for line in self.headers.getlist("cookie"):
                self._cookies.update(parse_cookies(line))
            return self._cookies

    @property
    def state(self) -> State:
        """Attribute access to ``scope["state"]`` (the lifespan's state, what middleware put)."""
        return State(self.scope.setdefault("state", {}))

    @property
    def client(self) -> Address | None:
        client = self.scope.get("client")
        return Address(client[0], client[1]) if client else None

    async def stream(self) -> AsyncIterator[bytes]:
        """The body in chunks, as Starlette's ``stream()``: here one chunk, the whole body read
        under the size limit (and kept for :meth:`body`), since the run guard watches
        ``receive`` once the body is in."""
        body = await self.body()
        if body:
            yield body
        yield b""

    async def is_disconnected(self) -> bool:
        """Whether the server has seen the client leave (Starlette's name, for agents ported
        from it). The run guard watches ``receive`` itself and cancels the run when the client
        goes, so an agent sees True only in the code that runs after that (an ``except
        CancelledError`` or ``finally``); it never reads ``receive`` here, which is the guard's."""
        run = self.run
        return run is not None and run.reason == "disconnect"

    @property
    def body_read(self) -> bool:
        """The whole body has been read through :meth:`body`: ``receive`` is free to watch."""
        return self._body is not None

    async def body(self) -> bytes:
        """The whole body, refused with 413 past ``max_body_size`` before or while it is read."""
        if self._body is not None:
            return self._body
        limit = self.max_body_size
        declared = self._content_length
        if declared is ...:
            declared = header(self.scope, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise ProtocolError(400, "Invalid Content-Length header.") from None
            if length > limit:
                raise _too_large(limit)
        receive = self.receive
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        body: bytes = message.get("body", b"")
        if message.get("more_body", False):
            # Chunked or split body: count while reading and stop at the limit.
            chunks = [body]
            size = len(body)
            if size > limit:
                raise _too_large(limit)
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
        elif len(body) > limit:
            raise _too_large(limit)
        self._body = body
        return body

    async def json(self) -> Any:
        """The body parsed as JSON, once: a later call gives the same object (as Starlette's),
        not another parse. A body that is not JSON is the client's mistake (a 400)."""
        try:
            return self._json
        except AttributeError:  # first call: the slot is left unset by ``__init__``
            pass  # (parsed outside the handler, or its errors would carry this one as context)
        self._json: Any = parse_json(await self.body(), self.scope)
        return self._json


def parse_json(body: bytes, scope: Scope) -> Any:
    """A request body as JSON; :class:`InvalidJSON` (or a 415 if it came compressed) if not."""
    try:
        return loads(body)
    except orjson.JSONDecodeError as exc:
        refuse_encoded(scope)
        if body[:3] != UTF8_BOM or utf8_error(body) is not None:
            raise InvalidJSON(exc, body) from None
    try:
        return loads(body[3:])
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(exc, body[3:]) from None


def utf8_error(body: bytes) -> str | None:
    """Why a body orjson refused is not UTF-8, or None if it is. orjson checks UTF-8 before the
    syntax and words every stray byte as "surrogates not allowed" at line 1 column 1, which
    names neither the problem nor its place (in a Latin-1 body, say): this names both."""
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        return (
            f"it is not UTF-8 (byte 0x{body[exc.start]:02x} at offset {exc.start}); send JSON"
            " as UTF-8 (RFC 8259 section 8.1)"
        )
    return None


def refuse_encoded(scope: Scope) -> None:
    """415 for a body that failed to parse and was sent compressed (``Content-Encoding``): the
    server reads bodies as they come, and "not valid JSON" would not say why (RFC 9110 15.5.16).
    """
    encoding = header(scope, b"content-encoding")
    if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
        raise ProtocolError(
            415, f"Content-Encoding {encoding.decode('latin-1')!r} is not supported: send the "
            "body uncompressed.", code="unsupported_content_encoding",
            headers=[(b"accept-encoding", b"identity")],
        )  # fmt: skip


class InvalidJSON(ProtocolError, orjson.JSONDecodeError):
    """A body :meth:`Request.json` cannot parse: answered with a 400 ``invalid_json`` error, not
    the 500 of an endpoint's uncaught exception, and still the ``JSONDecodeError`` (a
    ``ValueError``) that an endpoint written for Starlette's ``json()`` may catch."""

    __slots__ = ()

    def __init__(self, error: orjson.JSONDecodeError, body: bytes) -> None:
        orjson.JSONDecodeError.__init__(self, error.msg, error.doc, error.pos)
        message = f"The request body is not valid JSON: {utf8_error(body) or error}"
        ProtocolError.__init__(self, 400, message, code="invalid_json")


def _too_large(limit: int) -> ProtocolError:
    return ProtocolError(
        413, f"Request body too large: the limit is {limit} bytes.", code="request_too_large"
    )
