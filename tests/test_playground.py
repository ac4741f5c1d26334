"""The playground's routes and files, without a browser (tests/test_playground_browser.py has one).

Served by a real uvicorn: content types, the security headers, HEAD, ETag revalidation, the
route table with the page on and off, a custom path, a FastAPI mount prefix, API keys; and
the shipped files themselves: no external URL, no inline script or style (which the CSP would
block anyway), and the placeholders all filled.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrun_asgi import AgentRunServer, OpenAIProtocolHandler
from agentrun_asgi.demo import demo_agent
from agentrun_asgi.playground import STATIC_DIR, PlaygroundHandler

PAGE_FILES = {
    "/playground": "text/html; charset=utf-8",
    "/playground/app.js": "text/javascript; charset=utf-8",
    "/playground/app.css": "text/css; charset=utf-8",
    "/playground/icon.svg": "image/svg+xml",
}


def _attrs(html: str) -> dict[str, str]:
    tag = re.search(r"<html([^>]*)>", html)
    assert tag is not None
    return dict(re.findall(r'data-(\w+)="([^"]*)"', tag.group(1)))


def _asset_refs(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_page_and_assets_with_security_headers(serve: Any) -> None:
    with serve(AgentRunServer(demo_agent)) as base:
        responses = {path: httpx.get(base + path) for path in PAGE_FILES}
    for path, content_type in PAGE_FILES.items():
        r = responses[path]
        assert r.status_code == 200, path
        assert r.headers["content-type"] == content_type
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-cache"
        csp = [d.strip() for d in r.headers["content-security-policy"].split(";")]
        assert csp[0] == "default-src 'self'"
        assert "frame-ancestors 'none'" in csp
        assert "unsafe" not in r.headers["content-security-policy"]
        assert int(r.headers["content-length"]) == len(r.content) > 0
    html = responses["/playground"].text
    assert _attrs(html) == {"page": "playground", "openai": "v1/chat/completions",
                            "agui": "ag-ui/agent"}  # fmt: skip
    # From /playground, relative asset URLs must name the last segment to stay under it.
    assert _asset_refs(html) == ["playground/icon.svg", "playground/app.css", "playground/app.js"]
    assert responses["/playground/app.js"].content == (STATIC_DIR / "playground.js").read_bytes()
    assert "{{" not in html


def test_trailing_slash_page_refers_to_assets_beside_it(serve: Any) -> None:
    with serve(AgentRunServer(demo_agent)) as base:
        html = httpx.get(base + "/playground/").text
    assert _asset_refs(html) == ["icon.svg", "app.css", "app.js"]


def test_head_and_etag_revalidation(serve: Any) -> None:
    with serve(AgentRunServer(demo_agent)) as base, httpx.Client(base_url=base) as client:
        get = client.get("/playground/app.js")
        head = client.head("/playground/app.js")
        again = client.get("/playground/app.js", headers={"if-none-match": get.headers["etag"]})
        stale = client.get("/playground/app.js", headers={"if-none-match": '"other"'})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["etag"] == get.headers["etag"]
    assert again.status_code == 304 and again.content == b""
    assert again.headers["content-security-policy"] == get.headers["content-security-policy"]
    assert stale.status_code == 200 and stale.content == get.content


def test_route_present_by_default_and_absent_when_off(serve: Any) -> None:
    on = AgentRunServer(demo_agent)
    off = AgentRunServer(demo_agent, playground=False)
    assert {r.path for r in on.routes} >= set(PAGE_FILES)
    assert not [r for r in off.routes if r.name.startswith("playground")]
    with serve(off) as base:
        r = httpx.get(base + "/playground")
        post = httpx.post(base + "/ag-ui/agent", json={})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert post.status_code == 200  # the agent is still served


def test_custom_path_and_prefixes_are_written_into_the_page(serve: Any) -> None:
    server = AgentRunServer(
        demo_agent,
        protocols=[OpenAIProtocolHandler()],
        prefix_overrides={"OpenAIProtocolHandler": "/api/openai"},
        playground_path="/tools/chat/",
    )
    with serve(server) as base:
        r = httpx.get(base + "/tools/chat")
        js = httpx.get(base + "/tools/chat/app.js")
        old = httpx.get(base + "/playground")
    assert r.status_code == 200 and js.status_code == 200 and old.status_code == 404
    # No AG-UI handler: written empty, and the page disables that protocol.
    assert _attrs(r.text) == {"page": "tools/chat", "openai": "api/openai/chat/completions",
                              "agui": ""}  # fmt: skip
    assert _asset_refs(r.text)[0] == "chat/icon.svg"


def test_prefix_override_moves_the_page_too() -> None:
    server = AgentRunServer(demo_agent, prefix_overrides={"PlaygroundHandler": "/ui"})
    assert "/ui/app.js" in {r.path for r in server.routes}


def test_served_under_a_fastapi_mount(serve: Any) -> None:
    from fastapi import FastAPI

    host = FastAPI()
    host.mount("/agent", AgentRunServer(demo_agent).as_fastapi_app())
    with serve(host) as base:
        page = httpx.get(base + "/agent/playground")
        css = httpx.get(base + "/agent/playground/app.css")
        root = httpx.get(base + "/playground")
    assert page.status_code == 200 and css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    # The page path is written without the mount prefix; the script finds it in the URL.
    assert _attrs(page.text)["page"] == "playground"
    assert root.status_code == 404


def test_page_is_open_when_api_keys_are_on(serve: Any) -> None:
    with serve(AgentRunServer(demo_agent, api_keys=["k"])) as base:
        pages = [httpx.get(base + path).status_code for path in PAGE_FILES]
        trailing = httpx.get(base + "/playground/").status_code
        refused = httpx.post(base + "/v1/chat/completions", json={"messages": []})
        other = httpx.get(base + "/playground/secret")
    assert pages == [200] * len(PAGE_FILES) and trailing == 200
    assert refused.status_code == 401  # the endpoints themselves still need the key
    assert other.status_code == 401  # only the page's own paths are open


def test_handler_alone_uses_default_endpoints() -> None:
    handler = PlaygroundHandler()
    assert [r.path for r in handler.routes()] == ["", "/app.js", "/app.css", "/icon.svg"]
    assert handler.paths == list(PAGE_FILES)
    assert handler._page is None  # nothing read or rendered before the first request
    handler._load()
    assert handler._page is not None
    assert _attrs(handler._page.body.decode())["agui"] == "ag-ui/agent"


# -- the files themselves ----------------------------------------------------------------------

STATIC_FILES = sorted(p for p in STATIC_DIR.iterdir() if p.is_file())


@pytest.mark.parametrize("path", STATIC_FILES, ids=lambda p: p.name)
def test_no_external_urls(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".svg":  # the XML namespace is a name, never fetched
        text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert not re.findall(r"(?i)\b(?:https?|wss?|ftp):|//[a-z0-9.-]+\.[a-z]{2,}/", text)
    assert "@import" not in text
    assert not re.findall(r"url\(", text)


def test_html_has_no_inline_script_style_or_handlers() -> None:
    html = (STATIC_DIR / "playground.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert "<style" not in html
    assert not re.findall(r"\sstyle=", html)
    assert not re.findall(r"\son[a-z]+=", html)


def test_script_never_parses_agent_output_as_html() -> None:
    js = (STATIC_DIR / "playground.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function"):  # fmt: skip
        assert sink not in js
    assert "localStorage" not in js  # the API key lives in sessionStorage only
