"""A prefix tree over path segments, built once at construction and only read per request.

Paths are split on ``/`` with empty segments dropped, so a trailing slash (or a doubled one)
reaches the same route. A segment written ``{name}`` matches any one segment and is passed to the
endpoint in ``scope["path_params"]``; a last segment written ``{name:path}`` matches the rest of
the path, one segment or more, slashes included (an id such as ``org/model``). A literal segment
wins over a parameter at the same place, a parameter over a rest-of-path one, and each is tried
when the one before it leads nowhere, or (``match(path, method)``) has no route for the
request's method: 405 is for a path no route takes that method at.
Two routes that would answer the same method on the same path raise at construction, and so
does any other use of braces (Starlette's ``{id:int}``, a part-segment ``{name}.json``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .types import Endpoint

_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint at ``path`` for ``methods``; ``name`` is for logs and route listings."""

    path: str
    endpoint: Endpoint
    methods: Sequence[str] = ("POST",)
    name: str = ""

    def with_prefix(self, prefix: str) -> Route:
        return Route(join_path(prefix, self.path), self.endpoint, self.methods, self.name)


class RouteConflict(ValueError):
    """Two routes answer the same method on the same path."""


class _Node:
    """One path segment's place in the tree. A plain class: nobody outside this module sees it,
    and a dataclass costs ~1 ms to create at import (``python -m benchmarks`` measures start-up)."""

    __slots__ = (
        "allow", "auto_head", "children", "endpoints", "param", "param_name", "routes", "tail",
        "tail_name",
    )  # fmt: skip

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.param_name = ""
        #: The node of a ``{name:path}`` segment here: it takes every segment from here on.
        self.tail: _Node | None = None
        self.tail_name = ""
        self.endpoints: dict[str, Endpoint] = {}
        self.routes: dict[str, Route] = {}
        self.allow = b""
        self.auto_head = False


#: A path that exists: its endpoints by method, its ``Allow`` value, and its path parameters.
Match = tuple[dict[str, Endpoint], bytes, "dict[str, str] | None"]


def join_path(prefix: str, path: str) -> str:
    joined = "/".join(s for s in (*prefix.split("/"), *path.split("/")) if s)
    return "/" + joined


class Router:
    __slots__ = ("_root", "_static", "routes", "static")

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._root = _Node()
        #: Parameterless paths written the canonical way: one dict lookup, no tree walk.
        self._static: dict[str, _Node] = {}
        #: The same paths' endpoints by method, for a caller that routes in line (the dispatcher).
        self.static: dict[str, dict[str, Endpoint]] = {}
        self.routes: list[Route] = []
        for route in routes:
            self.add(route)

    def add(self, route: Route) -> None:
        if isinstance(route.methods, str):
            # Iterated, "GET" would register the methods G, E and T.
            raise TypeError(f"{route.path}: methods takes a sequence such as ({route.methods!r},)")
        node = self._root
        segments = _segments(route.path)
        for i, segment in enumerate(segments):
            if segment.startswith("{") and segment.endswith("}"):
                _check_param(route.path, segment)
                rest = segment.endswith(":path}")
                if rest and i != len(segments) - 1:
                    raise ValueError(f"{route.path}: {segment} must be the last segment")
                node = _param_node(node, "tail" if rest else "param", segment, route.path)
            else:
                if "{" in segment or "}" in segment:  # else a literal no request would ever match
                    raise ValueError(
                        f"{route.path}: {segment} is not a parameter: one is a whole segment,"
                        " {name} or a last {name:path}"
                    )
                node = node.children.setdefault(segment, _Node())
        explicit = [m.upper() for m in route.methods]
        for method in explicit:
            other = node.routes.get(method)
            if other is not None and not (method == "HEAD" and node.auto_head):
                raise RouteConflict(
                    f"{method} {route.path} is claimed twice: by {other.name or other.endpoint!r}"
                    f" and by {route.name or route.endpoint!r}"
                )
            node.routes[method] = route
            node.endpoints[method] = route.endpoint
            if method == "HEAD":
                node.auto_head = False
        if "GET" in explicit and "HEAD" not in node.routes:
            # RFC 9110 9.3.2: HEAD is GET without the body; the ASGI server drops the body.
            node.routes["HEAD"] = route
            node.endpoints["HEAD"] = route.endpoint
            node.auto_head = True
        node.allow = ", ".join(sorted(node.endpoints, key=_method_rank)).encode()
        if not any(s.startswith("{") and s.endswith("}") for s in segments):
            # A literal path always reaches this node (literals win), so the shortcut is exact.
            canonical = "/" + "/".join(segments)
            self._static[canonical] = node
            self.static[canonical] = node.endpoints
        self.routes.append(route)

    def match(self, path: str, method: str | None = None) -> Match | None:
        """The endpoints at ``path``, or None when no route has that path (404).

        Given ``method``, a route at ``path`` that takes it is preferred to the first one found:
        ``GET /items/{id}`` still answers ``/items/special`` next to a ``POST /items/special``,
        as in Starlette, where a path match of another method is only a partial one (405 is for
        a path no route takes the method at).
        """
        found = self._match(path)
        if method is None or found is None or method in found[0]:
            return found
        return self._match_method(path, method) or found

    def _match(self, path: str) -> Match | None:
        node = self._static.get(path)
        if node is not None:
            return node.endpoints, node.allow, None
        node = self._root
        params: dict[str, str] | None = None
        passed_other = False  # a choice was made that another branch might have answered
        segments = _segments(path)
        for i, segment in enumerate(segments):
            child = node.children.get(segment)
            if child is None and node.param is not None:
                if params is None:
                    params = {}
                params[node.param_name] = segment
                child = node.param
                passed_other = passed_other or node.tail is not None
            elif child is None:
                tail = node.tail
                if tail is None or not tail.endpoints:
                    return self._match_backtracking(path) if passed_other else None
                if params is None:
                    params = {}
                params[node.tail_name] = "/".join(segments[i:])
                return tail.endpoints, tail.allow, params
            elif node.param is not None or node.tail is not None:
                passed_other = True
            node = child
        if not node.endpoints:
            return self._match_backtracking(path) if passed_other else None
        return node.endpoints, node.allow, params

    def _match_method(self, path: str, method: str) -> Match | None:
        found = _search(self._root, _segments(path), 0, method)
        if found is None:
            return None
        node, params = found
        return node.endpoints, node.allow, params or None

    def _match_backtracking(self, path: str) -> Match | None:
        """The slow path, taken only when a literal segment led to a dead end while a parameter
        at the same place might still match (``/a/b`` and ``/a/{x}/c`` for ``/a/b/c``)."""
        found = _search(self._root, _segments(path), 0)
        if found is None:
            return None
        node, params = found
        return node.endpoints, node.allow, params or None


def _search(
    node: _Node, segments: list[str], i: int, method: str | None = None
) -> tuple[_Node, dict[str, str]] | None:
    """The first node in precedence order that has ``segments`` (and, if given, ``method``)."""
    if i == len(segments):
        return (node, {}) if _serves(node, method) else None
    segment = segments[i]
    child = node.children.get(segment)
    if child is not None:
        found = _search(child, segments, i + 1, method)
        if found is not None:
            return found
    if node.param is not None:
        found = _search(node.param, segments, i + 1, method)
        if found is not None:
            found[1][node.param_name] = segment
            return found
    if node.tail is not None and _serves(node.tail, method):
        return node.tail, {node.tail_name: "/".join(segments[i:])}
    return None


def _serves(node: _Node, method: str | None) -> bool:
    return bool(node.endpoints) and (method is None or method in node.endpoints)


def _param_node(node: _Node, kind: str, segment: str, path: str) -> _Node:
    """The node of the parameter ``segment`` under ``node`` (``kind``: "param" for one segment,
    "tail" for the rest of the path), made by the first route that has it there."""
    name = segment[1:-1].removesuffix(":path")
    child: _Node | None = getattr(node, kind)
    if child is None:
        child = _Node()
        setattr(node, kind, child)
        setattr(node, f"{kind}_name", name)
    elif getattr(node, f"{kind}_name") != name:
        other = segment.replace(name, getattr(node, f"{kind}_name"), 1)
        raise RouteConflict(
            f"{path}: parameter {segment} clashes with {other} at the same place in another route"
        )
    return child


def _check_param(path: str, segment: str) -> None:
    """Refuse a parameter this router would misread: ``{id:int}`` (Starlette's converters)
    would match any segment, under the name ``id:int``."""
    name, _, kind = segment[1:-1].partition(":")
    if not name.isidentifier() or kind not in ("", "path"):
        raise ValueError(
            f"{path}: {segment} is not a parameter this router knows: {{name}} (one segment)"
            " or a last {name:path}; there are no converters"
        )


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def _method_rank(method: str) -> tuple[int, str]:
    try:
        return (_METHOD_ORDER.index(method), method)
    except ValueError:
        return (len(_METHOD_ORDER), method)
