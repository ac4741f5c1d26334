"""Prometheus metrics, opt-in (``AgentRunServer(metrics=True)``), through ``prometheus-client``.

``prometheus_client`` is imported only when a server asks for metrics, and each server keeps
its metrics in a registry of its own (``server.metrics.registry``), so several servers in one
process never clash. What is measured, per HTTP request, by :class:`MetricsMiddleware`:

- ``agentrun_requests_total{route,method,status}``: requests answered (status 499: the client
  left before any response began);
- ``agentrun_request_duration_seconds{route,method}``: time until the app was done with the
  request (a stream: until it ended);
- ``agentrun_streams_in_flight{route}``: ``text/event-stream`` responses still being written;
- ``agentrun_stream_frames_total{route}``: SSE frames written (one per blank-line terminator);
- ``agentrun_agent_errors_total{route}``: requests during which an agent (or endpoint)
  failed with an exception, counted once per request. The server logs every such failure with
  its traceback on the ``agentrun_asgi`` logger (README: "the traceback goes to the log");
  a filter on that logger marks the request, so a failure mid-stream (a 200 whose last frame
  is an error) is counted too, at no cost to the stream itself.

``route`` is the route's name (``openai.chat_completions``, ``agui.run``, ``health``...), or
``unmatched`` for a path no route has: a label never takes a value from the client, so a
scanner cannot grow the series. Unknown methods count as ``OTHER``.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from time import perf_counter
from typing import TYPE_CHECKING

from .middleware.access_log import ReceiveWatch, is_event_stream
from .requests import Request, route_path
from .responses import send_bytes, sends_request_id
from .types import ASGIApp, ASGIMessage, Endpoint, Receive, Scope, Send

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .routing import Router

#: Seconds; agent runs range from a health check to minutes-long streams.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


class _Observed:
    """What the log filter learns about the request being measured."""

    __slots__ = ("failed",)

    def __init__(self) -> None:
        self.failed = False


_OBSERVED: ContextVar[_Observed | None] = ContextVar("agentrun_metrics", default=None)


class AgentErrorFilter(logging.Filter):
    """Marks the measured request as failed when an error is logged with its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.levelno >= logging.ERROR:
            observed = _OBSERVED.get()
            if observed is not None:
                observed.failed = True
        return True


def _install_error_filter() -> None:
    target = logging.getLogger("agentrun_asgi")
    if not any(isinstance(f, AgentErrorFilter) for f in target.filters):
        target.addFilter(AgentErrorFilter())


class Metrics:
    """One server's metrics and the endpoint that exposes them (text exposition format)."""

    def __init__(self, namespace: str = "agentrun") -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise ImportError(
                "metrics=True needs the prometheus-client package: "
                "pip install 'agentrun-asgi[metrics]'"
            ) from exc
        self.registry: CollectorRegistry = prom.CollectorRegistry()
        registry = self.registry
        # Process, platform and GC facts, as a default prometheus-client registry has them.
        prom.ProcessCollector(registry=registry)
        prom.PlatformCollector(registry=registry)
        prom.GCCollector(registry=registry)
        self.requests = prom.Counter(
            "requests", "HTTP requests answered.", ("route", "method", "status"),
            namespace=namespace, registry=registry,
        )  # fmt: skip
        self.duration = prom.Histogram(
            "request_duration_seconds", "Time until the app was done with a request.",
            ("route", "method"), namespace=namespace, registry=registry,
            buckets=DURATION_BUCKETS,
        )  # fmt: skip
        self.streams_in_flight = prom.Gauge(
            "streams_in_flight", "Event streams (SSE) being written.", ("route",),
            namespace=namespace, registry=registry,
        )  # fmt: skip
        self.stream_frames = prom.Counter(
            "stream_frames", "SSE frames written.", ("route",),
            namespace=namespace, registry=registry,
        )  # fmt: skip
        self.agent_errors = prom.Counter(
            "agent_errors", "Requests during which the agent or endpoint raised.", ("route",),
            namespace=namespace, registry=registry,
        )  # fmt: skip
        self._generate = prom.generate_latest
        self._content_type = [(b"content-type", prom.CONTENT_TYPE_LATEST.encode("latin-1"))]
        _install_error_filter()

    @sends_request_id
    async def endpoint(self, request: Request, send: Send) -> None:
        """``GET /metrics``: the registry in Prometheus' text format."""
        await send_bytes(send, 200, self._generate(self.registry), self._content_type)


class MetricsMiddleware:
    """Measures every request it wraps into ``metrics`` (see the module docstring)."""

    __slots__ = ("_names", "app", "metrics", "router")

    def __init__(self, app: ASGIApp, metrics: Metrics, router: Router) -> None:
        self.app = app
        self.metrics = metrics
        self.router = router
        self._names: dict[Endpoint, str] = {
            route.endpoint: route.name or route.path for route in router.routes
        }

    def route_name(self, scope: Scope) -> str:
        method = scope["method"]
        match = self.router.match(route_path(scope), method)  # the dispatcher's choice
        endpoint = None if match is None else match[0].get(method)
        return UNMATCHED if endpoint is None else self._names.get(endpoint, UNMATCHED)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.metrics
        start = perf_counter()
        route = self.route_name(scope)
        method = scope["method"]
        if method not in _METHODS:
            method = "OTHER"
        observed = _Observed()
        token = _OBSERVED.set(observed)
        status: int | None = None
        frames: int | None = None
        watch = ReceiveWatch(receive)

        async def send_observed(message: ASGIMessage) -> None:
            nonlocal status, frames
            kind = message["type"]
            if kind == "http.response.body":
                if frames is not None:
                    frames += message.get("body", b"").count(b"\n\n")
            elif kind == "http.response.start":
                await send(message)  # recorded once it went out, as in the access log
                status = message["status"]
                if is_event_stream(message):
                    frames = 0
                    metrics.streams_in_flight.labels(route).inc()
                return
            await send(message)

        try:
            await self.app(scope, watch, send_observed)
        finally:
            _OBSERVED.reset(token)
            if status is None:
                status = watch.unanswered_status()
            metrics.duration.labels(route, method).observe(perf_counter() - start)
            metrics.requests.labels(route, method, str(status)).inc()
            if frames is not None:
                metrics.streams_in_flight.labels(route).dec()
                if frames:
                    metrics.stream_frames.labels(route).inc(frames)
            if observed.failed:
                metrics.agent_errors.labels(route).inc()
