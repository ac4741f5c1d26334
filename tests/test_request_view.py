"""``request.raw_request`` against Starlette's ``Request``, over generated ASGI HTTP scopes.

Agents written for Starlette or FastAPI read ``method``, ``url``, ``headers``,
``query_params``, ``client``, ``cookies``, ``state``, ``body()`` and ``json()`` and expect
Starlette's values: both classes take a scope and a receive, so each value is compared on
the same scope. Where the two differ on purpose, a test below says what ours does instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request as StarletteRequest

from agentrun_asgi.requests import Request

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

#: Starlette up to 1.7 (the last release for Python 3.10) left a ``?``, ``#`` or ``\\`` of the
#: decoded path bare in ``url``, where it ends the path; later releases escape them, as ours does.
STARLETTE_ESCAPES_PATH = str(StarletteRequest(
    {"type": "http", "path": "/?", "query_string": b"", "headers": [], "server": ("h", 80)}
).url) == "http://h/%3F"  # fmt: skip
PATH_CHARS = "ab-_.~é中%+;=:@!$&'()*, " + ("?#\\" if STARLETTE_ESCAPES_PATH else "")
SEGMENT = st.text(st.sampled_from(list(PATH_CHARS)), max_size=6)
PIECE = st.sampled_from(["a", "b", "a+b", "a%20b", "", "%FF", "%C3%A9", "x%3Dy", "%26", "é",
                         "+", "%2B", ";", "a=b=c"])  # fmt: skip
HOSTS = [b"example.com", b"example.com:8000", b"[::1]:8000", b"[::1]", b"EXAMPLE.com:80", b"h:443",
         b"bad host", b"a/b", b"u@h", b"h:99999", b"h:", b"127.0.0.1:1", b"[zz]:1"]  # fmt: skip
NAMES = [b"x-a", b"x-b", b"content-type", b"cookie", b"accept"]
KEYS = ["x-a", "X-A", "Content-Type", "COOKIE", "x-zz", "host", "Host"]
PARAMS = ["a", "b", "a b", "é", "x=y", "&", "\ufffd", "+", "zz", ""]


@st.composite
def scopes(draw: st.DrawFn) -> dict[str, Any]:
    """HTTP scopes as servers make them: lowercase header names, a server address, UTF-8."""
    root = draw(st.sampled_from(["", "/mnt", "/m é"]))
    path = root + "/" + "/".join(draw(st.lists(SEGMENT, max_size=4)))
    items = draw(st.lists(st.one_of(PIECE, st.tuples(PIECE, PIECE).map("=".join)), max_size=5))
    value = st.binary(max_size=6).map(lambda b: bytes(c for c in b if c not in b"\r\n\0"))
    headers = draw(st.lists(st.tuples(st.sampled_from(NAMES), value), max_size=5))
    host = draw(st.none() | st.sampled_from(HOSTS))
    if host is not None:
        headers.insert(draw(st.integers(0, len(headers))), (b"host", host))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "M-SEARCH"])),
        "scheme": draw(st.sampled_from(["http", "https"])), "path": path, "root_path": root,
        "query_string": "&".join(items).encode(), "headers": headers,
        "server": draw(st.tuples(st.sampled_from(["127.0.0.1", "::1", "example.com"]),
                                 st.sampled_from([80, 443, 8000]))),
        "client": draw(st.none() | st.tuples(st.sampled_from(["1.2.3.4", "::1"]),
                                             st.integers(1, 65535))),
    }  # fmt: skip
    if draw(st.booleans()):
        scope["raw_path"] = quote(path, safe="/:@!$&'()*+,;=-._~").encode()
    return scope


def both(scope: dict[str, Any]) -> tuple[Request, StarletteRequest]:
    return Request(dict(scope), receive_of([])), StarletteRequest(dict(scope))


def same(scope: dict[str, Any], reads: dict[str, Callable[[Any], Any]]) -> None:
    ours, theirs = both(scope)
    for name, read in reads.items():
        assert outcome(read, ours) == outcome(read, theirs), (name, scope)


def outcome(read: Callable[[Any], Any], request: Any) -> Any:
    try:
        return read(request)
    except Exception as exc:  # the same exception type is the same outcome
        return type(exc)


@given(scopes())
@SETTINGS
def test_url_matches_starlette(scope: dict[str, Any]) -> None:
    same(scope, {
        "method": lambda r: r.method, "str(url)": lambda r: str(r.url),
        "url.path": lambda r: r.url.path, "url.query": lambda r: r.url.query,
        "url.scheme": lambda r: r.url.scheme, "url.netloc": lambda r: r.url.netloc,
        "url.hostname": lambda r: r.url.hostname, "url.port": lambda r: r.url.port,
        "url.is_secure": lambda r: r.url.is_secure,
        "base_url": lambda r: str(r.base_url),
        "url == str": lambda r: r.url == str(StarletteRequest(scope).url),
    })  # fmt: skip


def test_url_of_ipv6_server_and_forged_host() -> None:
    """The server address ``::1`` is bracketed (``::1:8000`` is no authority), and a Host
    header that would move the URL's authority or path (``u@h``, ``a/b``) is not believed."""
    scope = {"type": "http", "method": "GET", "scheme": "http", "path": "/v1/x",
             "query_string": b"", "server": ("::1", 8000),
             "headers": [(b"host", b"u@evil")]}  # fmt: skip
    url = Request(scope, receive_of([])).url
    assert (str(url), url.hostname, url.port) == ("http://[::1]:8000/v1/x", "::1", 8000)


def test_url_path_is_decoded_as_starlette_has_it() -> None:
    scope = {"type": "http", "method": "GET", "scheme": "https", "path": "/a b/é?#",
             "raw_path": b"/a%20b/%C3%A9%3F%23", "query_string": "q=é".encode(),
             "server": ("h", 443), "headers": []}  # fmt: skip
    url = Request(scope, receive_of([])).url
    assert (url.path, url.query, str(url)) == ("/a b/é%3F%23", "q=é", "https://h/a b/é%3F%23?q=é")
    if STARLETTE_ESCAPES_PATH:
        assert url == str(StarletteRequest(scope).url)


def test_url_of_a_query_that_is_not_utf8() -> None:
    """On purpose: Starlette's ``url`` raises UnicodeDecodeError (an agent's 500 for a client's
    stray byte); ours reads such a query as Latin-1, as ``query_params`` reads every query."""
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"q=\xff",
             "server": ("h", 80), "headers": []}  # fmt: skip
    with pytest.raises(UnicodeDecodeError):
        str(StarletteRequest(scope).url)
    assert str(Request(scope, receive_of([])).url) == "http://h/?q=\xff"


def mapping_reads(of: Callable[[Any], Any], key: str) -> dict[str, Callable[[Any], Any]]:
    """What an agent reads of a multi-dict (headers, query parameters), by name."""
    return {
        "[]": lambda r: of(r)[key], "get": lambda r: of(r).get(key),
        "getlist": lambda r: of(r).getlist(key), "in": lambda r: key in of(r),
        "iter": lambda r: list(of(r)), "len": lambda r: len(of(r)),
        "items": lambda r: list(of(r).items()), "dict": lambda r: dict(of(r)),
    }  # fmt: skip


@given(scopes(), st.sampled_from(KEYS))
@SETTINGS
def test_headers_match_starlette(scope: dict[str, Any], key: str) -> None:
    same(scope, {
        **mapping_reads(lambda r: r.headers, key),
        "keys": lambda r: list(r.headers.keys()), "values": lambda r: list(r.headers.values()),
        "dict(items)": lambda r: dict(r.headers.items()),
    })  # fmt: skip


@given(scopes(), st.sampled_from(PARAMS))
@SETTINGS
def test_query_params_match_starlette(scope: dict[str, Any], key: str) -> None:
    same(scope, {
        **mapping_reads(lambda r: r.query_params, key),
        "multi_items": lambda r: r.query_params.multi_items(),
        "str": lambda r: str(r.query_params),
    })  # fmt: skip


COOKIE = st.sampled_from(["a=1", "b=x y", ' c="q\\"d" ', "noeq", "=v", "k=", "a=2", ""])


@given(scopes(), st.lists(st.lists(COOKIE, max_size=4).map(";".join), max_size=2))
@SETTINGS
def test_client_cookies_state_match_starlette(scope: dict[str, Any], cookies: list[str]) -> None:
    scope["headers"] += [(b"cookie", line.encode()) for line in cookies]
    scope["path_params"] = {"id": "7"}
    same(scope, {
        "client": lambda r: r.client, "path_params": lambda r: r.path_params,
        "cookies": lambda r: r.cookies, "state": lambda r: hasattr(r.state, "absent"),
    })  # fmt: skip


def test_state_is_scope_state() -> None:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "state": {"db": 1}}
    request = Request(scope, receive_of([]))
    request.state.user = "u"
    assert (request.state.db, request.state["user"]) == (1, "u")
    assert scope["state"] == {"db": 1, "user": "u"}
    with pytest.raises(AttributeError):
        request.state.absent  # noqa: B018


def receive_of(chunks: list[bytes]) -> Any:
    last = len(chunks) - 1
    messages = [{"type": "http.request", "body": c, "more_body": i < last}
                for i, c in enumerate(chunks)]  # fmt: skip
    messages = messages or [{"type": "http.request", "body": b""}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


BODIES = [b'{"a": [1, 2.5, "\\u00e9"]}', b"[]", b"null", b"\xef\xbb\xbf[1]", "[\"é\"]".encode()]


@given(st.sampled_from(BODIES), st.integers(1, 4))
@SETTINGS
def test_body_and_json_match_starlette(body: bytes, pieces: int) -> None:
    chunks = [body[i : i + pieces] for i in range(0, len(body), pieces)]
    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}

    async def read(request: Any) -> tuple[bytes, Any, bytes, bool]:
        parsed = await request.json()
        return await request.body(), parsed, await request.body(), parsed is await request.json()

    ours = asyncio.run(read(Request(scope, receive_of(list(chunks)))))
    theirs = asyncio.run(read(StarletteRequest(scope, receive_of(list(chunks)))))
    assert ours == theirs


@given(st.sampled_from(BODIES), st.integers(1, 4))
@SETTINGS
def test_stream_gives_the_body_as_starlette_s_does(body: bytes, pieces: int) -> None:
    """``stream()`` ends with an empty chunk, as Starlette's; ours comes in one piece (read
    whole under the size limit), so the chunks joined are what is compared, and the last."""
    chunks = [body[i : i + pieces] for i in range(0, len(body), pieces)]
    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}

    async def read(request: Any) -> tuple[bytes, bytes]:
        got = [chunk async for chunk in request.stream()]
        return b"".join(got), got[-1]

    ours = asyncio.run(read(Request(scope, receive_of(list(chunks)))))
    theirs = asyncio.run(read(StarletteRequest(scope, receive_of(list(chunks)))))
    assert ours == theirs


@pytest.mark.parametrize("body", [b"{bad", b"", b"[1] x", b"\xff", b'{"a": 1,}'])
@pytest.mark.parametrize("caught", [json.JSONDecodeError, ValueError])
def test_invalid_json_is_caught_as_starlette_s_is(body: bytes, caught: type[Exception]) -> None:
    """Starlette raises ``json.JSONDecodeError`` (or, for bytes that are not UTF-8, a
    ``UnicodeDecodeError``): both ``ValueError``. Ours is the same kind, and a 400 if uncaught."""
    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}

    async def parse(request: Any, catch: tuple[type[Exception], ...]) -> str:
        try:
            await request.json()
        except catch:
            return "caught"
        return "parsed"

    starlette = StarletteRequest(scope, receive_of([body]))
    assert asyncio.run(parse(starlette, (caught, UnicodeDecodeError))) == "caught"
    assert asyncio.run(parse(Request(scope, receive_of([body])), (caught,))) == "caught"
