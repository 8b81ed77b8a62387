"""One fix to BentoML 1.4's HTTP stack, applied when the service module is imported.

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
"""

from __future__ import annotations

import asyncio
from typing import Any

from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse

_ORIGINAL = traffic.TimeoutMiddleware


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


def install() -> None:
    """Make BentoML build its apps with :class:`CancellingTimeoutMiddleware` (idempotent)."""
    if traffic.TimeoutMiddleware not in (_ORIGINAL, CancellingTimeoutMiddleware):
        raise RuntimeError("bentoml's TimeoutMiddleware was replaced by someone else")
    traffic.TimeoutMiddleware = CancellingTimeoutMiddleware
