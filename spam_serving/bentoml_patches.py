"""Two changes to BentoML 1.4's HTTP stack, applied when the service module is imported.

``TimeoutMiddleware`` (``traffic.timeout``) schedules ``loop.call_later(timeout, ...)`` for
every request and never cancels it. The timer handle holds the request's ``contextvars``
context, which holds its OpenTelemetry span, so every answered request stays in memory for
the whole timeout (30 s here). Measured on this service at ~1,000 rps: ~120k extra live
objects per worker (spans, locks, deques, futures, timers), and every full garbage collection
walking them: 8-9 per worker in 12 s, up to 230 ms each, every in-flight request stalled
(that was most of the p99). The timeout cannot be switched off (BentoML requires a positive
``traffic.timeout``), so this replaces the middleware with the same behaviour plus cancelling
the timer once the response has started. BentoML imports the class when it builds the app,
so patching the module attribute before that is enough; ``install`` checks it still can.

The second is a setting BentoML does not expose: its OpenTelemetry ASGI middleware records,
besides the request's server span, a child span for every ASGI message (``http receive`` per
body chunk, ``http send`` for the response start and body). On ``/predict`` those child spans
were ~8% of a worker's Python time under load, for trace detail nobody reads. OpenTelemetry's
middleware has an ``exclude_spans`` option for exactly this; BentoML builds the middleware
without it (and imports the class when it builds the app), so ``install`` swaps in a subclass
whose default excludes them. The server span, its attributes and BentoML's request id (taken
from it) are unchanged; ``SPAM_TRACE_ASGI_MESSAGES=true`` restores the child spans.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bentoml._internal.server.http import traffic
from opentelemetry.instrumentation import asgi as otel_asgi
from starlette.responses import JSONResponse

_ORIGINAL = traffic.TimeoutMiddleware
_ORIGINAL_OTEL = otel_asgi.OpenTelemetryMiddleware


class CancellingTimeoutMiddleware(_ORIGINAL):
    """BentoML's ``TimeoutMiddleware`` (504 when no response has started within
    ``timeout`` seconds) whose timer is cancelled as soon as the response starts."""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message: dict) -> None:
            if not waiter.done():
                waiter.set_result(None)
                timer.cancel()
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except TimeoutError:
            if fut.cancel():
                body = {"error": f"Not able to process the request in {self.timeout} seconds"}
                await JSONResponse(body, status_code=504)(scope, receive, send)
        else:
            await fut
        finally:
            timer.cancel()


class ServerSpanOnlyMiddleware(_ORIGINAL_OTEL):
    """OpenTelemetry's ASGI middleware with ``exclude_spans=["receive", "send"]`` by default:
    one server span per request, no span per ASGI message."""

    def __init__(self, app: Any, *args: Any, exclude_spans: list | None = None, **kw: Any):
        if exclude_spans is None:
            exclude_spans = ["receive", "send"]
        super().__init__(app, *args, exclude_spans=exclude_spans, **kw)


def install(trace_asgi_messages: bool = False) -> None:
    """Make BentoML build its apps with :class:`CancellingTimeoutMiddleware` and, unless
    ``trace_asgi_messages``, :class:`ServerSpanOnlyMiddleware` (idempotent)."""
    if traffic.TimeoutMiddleware not in (_ORIGINAL, CancellingTimeoutMiddleware):
        raise RuntimeError("bentoml's TimeoutMiddleware was replaced by someone else")
    if otel_asgi.OpenTelemetryMiddleware not in (_ORIGINAL_OTEL, ServerSpanOnlyMiddleware):
        raise RuntimeError("OpenTelemetry's ASGI middleware was replaced by someone else")
    traffic.TimeoutMiddleware = CancellingTimeoutMiddleware
    otel_asgi.OpenTelemetryMiddleware = (
        _ORIGINAL_OTEL if trace_asgi_messages else ServerSpanOnlyMiddleware
    )
