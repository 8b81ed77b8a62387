"""Three changes to BentoML 1.4's HTTP stack, applied when the service module is imported
(in each worker all three; in BentoML's arbiter only the socket half of the third, see
:func:`install`); workers also get retries in the async-task store
(:mod:`spam_serving.result_store_patch`).

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

The third spreads connections over the workers. BentoML's arbiter (circus) binds one listening
socket and every worker accepts from it; an idle worker's event loop accepts everything that
is pending at once, so keep-alive clients that connect together (a load balancer's pool, a
benchmark's 32 clients) mostly land on one worker while the other idles. Measured here at 32
clients: 19/13 connections gave 967 rps, 29/3 727, 31/1 539, 32/0 502. The standard fix
(nginx ``reuseport``, gunicorn ``--reuse-port``) is ``SO_REUSEPORT``: each worker listens on a
socket of its own and the kernel spreads new connections over them. circus has that option,
but it only recognises a socket named in the watcher's command, where BentoML never names it.
So, with ``SPAM_SERVE_REUSE_PORT`` (default on): in the arbiter the API socket is bound with
``SO_REUSEPORT`` and not listened on (:func:`_bind_reserved`), which holds the port; in each
worker, uvicorn's ``startup`` swaps that inherited socket for its own listening one on the same
address (:func:`own_listener`). A worker listens only once its model is loaded (uvicorn starts
listening after the lifespan start-up), and a worker only swaps a socket the arbiter prepared
this way, so either half alone changes nothing.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from typing import TYPE_CHECKING, Any

from bentoml._internal.context import server_context
from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse

from spam_serving import result_store_patch

if TYPE_CHECKING:
    import uvicorn
    from circus.sockets import CircusSocket

_ORIGINAL = traffic.TimeoutMiddleware
_ORIGINAL_STARTUP: Any = None
"""uvicorn's own ``Server.startup``, kept on first install in a worker."""
_ORIGINAL_BIND: Any = None
"""circus' own ``CircusSocket.bind_and_listen``, kept on first install outside a worker."""
API_SOCKET_NAME = "_bento_api_server"
"""The name BentoML gives its HTTP socket (``_bentoml_impl.server.serving.API_SERVER_NAME``)."""


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


def original_otel_middleware() -> type:
    """OpenTelemetry's own ASGI middleware class (as first imported here)."""
    return _otel_classes()[0]


def server_span_only_middleware() -> type:
    """OpenTelemetry's ASGI middleware with ``exclude_spans=["receive", "send"]`` by default:
    one server span per request, no span per ASGI message."""
    return _otel_classes()[1]


@functools.cache
def _otel_classes() -> tuple[type, type]:
    """Built on first use, not at import: importing OpenTelemetry's ASGI middleware costs
    ~0.2 s of CPU, which BentoML's arbiter (it imports the service module too) does not need."""
    from opentelemetry.instrumentation import asgi as otel_asgi

    original = otel_asgi.OpenTelemetryMiddleware

    class ServerSpanOnlyMiddleware(original):
        def __init__(self, app: Any, *args: Any, exclude_spans: list | None = None, **kw: Any):
            if exclude_spans is None:
                exclude_spans = ["receive", "send"]
            super().__init__(app, *args, exclude_spans=exclude_spans, **kw)

    return original, ServerSpanOnlyMiddleware


def _bind_reserved(self: CircusSocket) -> None:
    """``CircusSocket.bind_and_listen`` for BentoML's API socket: bind it with
    ``SO_REUSEPORT`` and do not listen. The bound socket holds the port (nothing else without
    ``SO_REUSEPORT`` can take it) and, not listening, is never handed a connection: every
    connection goes to one of the workers' own sockets. Other sockets bind as before."""
    if self.name != API_SOCKET_NAME or self.is_unix:
        return _ORIGINAL_BIND(self)
    self.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    self.bind((self.host, self.port))
    self.setblocking(False)
    self.host, self.port = self.getsockname()[:2]


def own_listener(sock: socket.socket) -> socket.socket:
    """A worker's own ``SO_REUSEPORT`` socket on ``sock``'s address when ``sock`` is the
    arbiter's reserved one (bound, ``SO_REUSEPORT``, not listening); else ``sock`` itself.
    uvicorn listens on what this returns. The inherited copy is closed: the arbiter keeps the
    port reserved with its own."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return sock
    reserved = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) and not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    )
    if not reserved:
        return sock
    own = socket.socket(sock.family, socket.SOCK_STREAM)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    own.bind(sock.getsockname())
    own.setblocking(False)
    sock.close()
    return own


async def _startup_on_own_sockets(self: uvicorn.Server, sockets: list | None = None) -> None:
    """``uvicorn.Server.startup`` serving :func:`own_listener` sockets."""
    if sockets is not None:
        sockets = [own_listener(s) for s in sockets]
    await _ORIGINAL_STARTUP(self, sockets=sockets)


def install(trace_asgi_messages: bool = False, reuse_port: bool = True) -> None:
    """What each process of ``bentoml serve`` needs (idempotent). In a worker (BentoML sets
    its ``worker_index`` before it loads the service): :func:`install_app_patches`. Anywhere
    else, which is BentoML's arbiter when this runs at the service module's import: only the
    socket binding, without importing what the app patches need (uvicorn, OpenTelemetry: ~0.25
    s of CPU before the arbiter spawns any worker, measured). A script or test that builds the
    service's ASGI app in its own process calls :func:`install_app_patches` itself."""
    if server_context.worker_index is None:
        _install_bind(_can_reuse(reuse_port))
    else:
        install_app_patches(trace_asgi_messages, reuse_port)


def install_app_patches(trace_asgi_messages: bool = False, reuse_port: bool = True) -> None:
    """Make BentoML build its apps with :class:`CancellingTimeoutMiddleware` and, unless
    ``trace_asgi_messages``, :func:`server_span_only_middleware`; with ``reuse_port``, make
    uvicorn serve each worker's own listening socket (idempotent)."""
    import uvicorn
    from opentelemetry.instrumentation import asgi as otel_asgi

    global _ORIGINAL_STARTUP
    original_otel, span_only = _otel_classes()
    if _ORIGINAL_STARTUP is None:
        _ORIGINAL_STARTUP = uvicorn.Server.startup
    if traffic.TimeoutMiddleware not in (_ORIGINAL, CancellingTimeoutMiddleware):
        raise RuntimeError("bentoml's TimeoutMiddleware was replaced by someone else")
    if otel_asgi.OpenTelemetryMiddleware not in (original_otel, span_only):
        raise RuntimeError("OpenTelemetry's ASGI middleware was replaced by someone else")
    if uvicorn.Server.startup not in (_ORIGINAL_STARTUP, _startup_on_own_sockets):
        raise RuntimeError("uvicorn's Server.startup was replaced by someone else")
    traffic.TimeoutMiddleware = CancellingTimeoutMiddleware
    result_store_patch.install()
    otel_asgi.OpenTelemetryMiddleware = original_otel if trace_asgi_messages else span_only
    uvicorn.Server.startup = (
        _startup_on_own_sockets if _can_reuse(reuse_port) else _ORIGINAL_STARTUP
    )


def _can_reuse(reuse_port: bool) -> bool:
    """Per-worker sockets are asked for and the platform has ``SO_REUSEPORT``."""
    return reuse_port and hasattr(socket, "SO_REUSEPORT")


def _install_bind(reuse: bool) -> None:
    """Patch circus' socket binding. Workers skip this: they never bind, and importing circus
    would cost each of them ~0.2 s of start-up (measured)."""
    from circus.sockets import CircusSocket

    global _ORIGINAL_BIND
    if _ORIGINAL_BIND is None:
        _ORIGINAL_BIND = CircusSocket.bind_and_listen
    if CircusSocket.bind_and_listen not in (_ORIGINAL_BIND, _bind_reserved):
        raise RuntimeError("circus' CircusSocket.bind_and_listen was replaced by someone else")
    CircusSocket.bind_and_listen = _bind_reserved if reuse else _ORIGINAL_BIND
