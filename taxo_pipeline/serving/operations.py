"""What an operator of the service needs around every request: a request id (the client's `X-Request-ID`
when it is a sane token, else a new one; echoed in the response and named in every log line of the
request), one access-log line without bodies, and Prometheus metrics at `/metrics`.

An ASGI middleware rather than a FastAPI one: it sees every response, the ones uvicorn-level errors and
exception handlers produce included, and does not buffer bodies."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

access_log = logging.getLogger("taxo_pipeline.serving.access")

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Routes by name in the metrics; anything else is "other", so probing random paths cannot grow the label set.
ROUTES = ("/classify", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")
# Seconds: single products take tens of milliseconds, a full batch seconds, the deadline tens of seconds.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per app: tests start several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("taxo_serve_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=self.registry)  # fmt: skip
        self.latency = Histogram("taxo_serve_request_duration_seconds", "Time to answer a request, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)  # fmt: skip
        self.in_flight = Gauge("taxo_serve_in_flight", "classify requests being worked on (TAXO_SERVE_MAX_IN_FLIGHT at most)",
                               registry=self.registry)  # fmt: skip
        self.refused = Counter("taxo_serve_refused", "classify requests refused at once, by reason",
                               ["reason"], registry=self.registry)  # fmt: skip
        self.products = Counter("taxo_serve_products", "products classified", registry=self.registry)
        self.ready = Gauge("taxo_serve_ready", "1 when /readyz answers ready", registry=self.registry)
        self.sie_up = Gauge("taxo_serve_sie_up", "1 while the SIE server answers its health check", registry=self.registry)
        self.served = Gauge("taxo_serve_result", "the result being served (1), by approach, model, variant, reranker",
                            ["approach", "model", "variant", "reranker"], registry=self.registry)  # fmt: skip
        self.served_f1 = Gauge("taxo_serve_result_strict_hf1", "the served result's strict hierarchical F1",
                               registry=self.registry)  # fmt: skip


def route_of(path: str) -> str:
    return path if path in ROUTES else "other"


def request_id(scope: Scope) -> str:
    for name, value in scope.get("headers") or ():
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SANE_ID.fullmatch(text) else uuid.uuid4().hex
    return uuid.uuid4().hex


class Operations:
    """Request ids, the access log and the request metrics around `app`."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        token = REQUEST_ID.set(rid)
        status, started = 500, time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = route_of(scope["path"])
            if route != "/metrics":  # scrapes would swamp the figures and the log
                self.metrics.requests.labels(route, str(status)).inc()
                self.metrics.latency.labels(route).observe(elapsed)
                client = scope.get("client")
                access_log.info("%s %s %s %d %.1fms id=%s", f"{client[0]}:{client[1]}" if client else "-",
                                scope["method"], repr(scope["path"])[1:-1], status, elapsed * 1000, rid)  # escaped: no forged lines  # fmt: skip
            REQUEST_ID.reset(token)
