"""Prometheus metrics of the console (``GET /metrics``), in a registry of its own, and the middleware that
records them and adds the secure headers and a ``Server-Timing`` header to every response."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.security import SECURE_HEADERS


class ConsoleMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "scheduler_web_requests",
            "Requests answered by the web console, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "scheduler_web_request_seconds",
            "Server time of web console requests, by endpoint.",
            ["endpoint"],
            registry=self.registry,
        )

        self.events = Counter(
            "scheduler_web_execution_events",
            "Execution events received from the deployment's Redis channel (they wake live tails).",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ResponseMiddleware:
    """Secure headers, ``Server-Timing: app;dur=<ms>`` (time to the response's headers) and the metrics, on
    every response, an unexpected error's 500 (``server_error``'s answer) included."""

    def __init__(
        self, app: ASGIApp, metrics: ConsoleMetrics, server_error: Callable[[Scope], Response]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.server_error = server_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed = time.perf_counter() - started
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURE_HEADERS.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode()))
                headers.append((b"server-timing", f"app;dur={elapsed * 1000:.1f}".encode()))
                message["headers"] = headers
                endpoint = getattr(scope.get("endpoint"), "__name__", "other")
                self.metrics.requests.labels(endpoint, str(message["status"])).inc()
                self.metrics.seconds.labels(endpoint).observe(elapsed)
            await send(message)

        started_response = False

        async def tracked(message: Message) -> None:
            nonlocal started_response
            started_response = started_response or message["type"] == "http.response.start"
            await send_with_headers(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            # Starlette's own 500 is sent outside every middleware (without our headers): answer here, then
            # re-raise so the server logs the traceback as before.
            if not started_response:
                await self.server_error(scope)(scope, receive, send_with_headers)
            raise
