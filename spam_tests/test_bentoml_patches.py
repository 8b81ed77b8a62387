"""The TimeoutMiddleware fix: same behaviour as BentoML's, without holding every answered
request in memory for the whole timeout. Run on uvloop, the loop BentoML serves with."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import os
import socket
import weakref

import pytest
import uvicorn
import uvloop
from bentoml._internal.server.base_app import BaseAppFactory
from bentoml._internal.server.http import traffic
from circus.sockets import CircusSocket

from spam_serving import bentoml_patches
from spam_serving.bentoml_patches import CancellingTimeoutMiddleware

REQUEST_STATE: contextvars.ContextVar = contextvars.ContextVar("request_state")


class RequestState:
    """Stands in for what a request's context holds (its OpenTelemetry span, ...)."""


def _app(delay_s: float = 0.0):
    async def app(scope, receive, send):
        await asyncio.sleep(delay_s)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def _serve(middleware, n: int) -> tuple[list[weakref.ref], list[dict]]:
    """``n`` requests through ``middleware``; weak references to their request state."""
    refs, sent = [], []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def one():
        # what an outer middleware (OpenTelemetry's) puts in the request's context
        state = RequestState()
        REQUEST_STATE.set(state)
        refs.append(weakref.ref(state))
        del state
        await middleware({"type": "http", "path": "/predict"}, receive, send)

    for _ in range(n):  # each request in its own task and context, as uvicorn runs them
        await asyncio.get_running_loop().create_task(one(), context=contextvars.Context())
    return refs, sent


def _alive_after(middleware_cls, timeout_s: float) -> int:
    async def main():
        refs, _ = await _serve(middleware_cls(_app(), timeout=timeout_s), 20)
        await asyncio.sleep(0.05)
        gc.collect()
        return sum(r() is not None for r in refs)

    return uvloop.run(main())


def test_requests_are_freed_once_answered():
    assert _alive_after(CancellingTimeoutMiddleware, timeout_s=30) <= 1


def test_bentomls_own_middleware_still_holds_them_for_the_timeout():
    """The reason for the patch. If this starts failing, BentoML fixed it upstream: drop
    ``spam_serving/bentoml_patches.py``."""
    assert bentoml_patches._ORIGINAL is not CancellingTimeoutMiddleware
    assert _alive_after(bentoml_patches._ORIGINAL, timeout_s=30) >= 19


def test_a_slow_request_still_gets_a_504_with_a_json_reason():
    async def main():
        _, sent = await _serve(CancellingTimeoutMiddleware(_app(delay_s=1.0), timeout=0.1), 1)
        return sent

    sent = uvloop.run(main())
    assert sent[0]["status"] == 504
    assert "0.1 seconds" in json.loads(sent[1]["body"])["error"]


def test_bentoml_builds_its_apps_with_the_patched_class():
    bentoml_patches.install_app_patches()  # what a worker's import of the service does

    assert traffic.TimeoutMiddleware is CancellingTimeoutMiddleware

    class Factory(BaseAppFactory):
        name = "probe"

    factory = Factory(timeout=30, max_concurrency=None)
    assert [m.cls for m in factory.middlewares] == [CancellingTimeoutMiddleware]
    bentoml_patches.install_app_patches()  # idempotent


def test_bentoml_imports_the_otel_middleware_when_it_builds_the_app():
    """The OpenTelemetry swap only works while BentoML imports the class inside the app
    factory (not at module level); if this fails, the patch silently does nothing."""
    import inspect

    import _bentoml_impl.server.app as bento_app
    from opentelemetry.instrumentation import asgi as otel_asgi

    bentoml_patches.install_app_patches()

    assert otel_asgi.OpenTelemetryMiddleware is bentoml_patches.server_span_only_middleware()
    assert not hasattr(bento_app, "OpenTelemetryMiddleware")
    source = inspect.getsource(bento_app.ServiceAppFactory)
    assert "from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware" in source


def test_install_refuses_to_replace_someone_elses_middleware(monkeypatch):
    monkeypatch.setattr(traffic, "TimeoutMiddleware", type("Other", (), {}))
    with pytest.raises(RuntimeError, match="replaced by someone else"):
        bentoml_patches.install_app_patches()


def _spans_for_one_request(middleware_cls) -> list[str]:
    """Names of the spans one request records through ``middleware_cls``, built with the
    arguments BentoML passes (_bentoml_impl.server.app), on an in-memory exporter."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    request_ids = []
    middleware = middleware_cls(
        _app(),
        excluded_urls=None,
        default_span_details=None,
        server_request_hook=lambda span, scope: request_ids.append(span.context.span_id),
        client_request_hook=None,
        tracer_provider=provider,
    )
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "scheme": "http",
        "server": ("127.0.0.1", 3100),
        "headers": [],
        "query_string": b"",
        "http_version": "1.1",
    }

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        pass

    uvloop.run(middleware(scope, receive, send))
    assert len(request_ids) == 1 and request_ids[0]  # BentoML's request id source is intact
    return [span.name for span in exporter.get_finished_spans()]


def test_one_server_span_per_request_without_per_message_spans():
    spans = _spans_for_one_request(bentoml_patches.server_span_only_middleware())
    assert spans == ["POST /predict"]


def test_opentelemetry_default_records_a_span_per_asgi_message():
    """What the default costs: the child spans the patch leaves out."""
    spans = _spans_for_one_request(bentoml_patches.original_otel_middleware())
    assert "POST /predict" in spans and len(spans) >= 3
    assert any(name.endswith("http send") for name in spans)


def test_trace_asgi_messages_setting_restores_opentelemetrys_class():
    from opentelemetry.instrumentation import asgi as otel_asgi

    try:
        bentoml_patches.install_app_patches(trace_asgi_messages=True)
        assert otel_asgi.OpenTelemetryMiddleware is bentoml_patches.original_otel_middleware()
        bentoml_patches.install_app_patches()
        assert otel_asgi.OpenTelemetryMiddleware is bentoml_patches.server_span_only_middleware()
    finally:
        bentoml_patches.install_app_patches()


def _reserved_socket() -> CircusSocket:
    bentoml_patches.install()  # sets the original bind aside
    sock = CircusSocket(name=bentoml_patches.API_SOCKET_NAME, host="127.0.0.1", port=0)
    bentoml_patches._bind_reserved(sock)
    return sock


def _is_listening(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


def test_arbiter_reserves_the_api_port_without_listening():
    """BentoML's API socket: bound with SO_REUSEPORT (the port is held) but not listening,
    so no connection can wait on it; any other circus socket binds and listens as before."""
    reserved = _reserved_socket()
    try:
        assert reserved.port > 0 and not _is_listening(reserved)
        assert reserved.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        with pytest.raises(ConnectionRefusedError):  # nothing waits there yet
            socket.create_connection(("127.0.0.1", reserved.port), timeout=2).close()
        with socket.socket() as squatter, pytest.raises(OSError):  # held against the rest
            squatter.bind(("127.0.0.1", reserved.port))
        other = CircusSocket(name="some_dependency", host="127.0.0.1", port=0)
        bentoml_patches._bind_reserved(other)
        assert _is_listening(other) and not other.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        other.close()
    finally:
        reserved.close()


def test_each_worker_gets_its_own_listener_on_the_reserved_port():
    reserved = _reserved_socket()
    port = reserved.port
    inherited = socket.socket(fileno=os.dup(reserved.fileno()))  # what a worker is handed
    try:
        first = bentoml_patches.own_listener(inherited)
        second = bentoml_patches.own_listener(socket.socket(fileno=os.dup(reserved.fileno())))
        assert first is not inherited and inherited.fileno() == -1  # the copy is closed
        assert first.getsockname()[1] == second.getsockname()[1] == port
        first.listen()
        second.listen()
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # now it answers
        first.close()
        second.close()
        # an ordinary listening socket (reuse_port off, or another server) is left alone
        with socket.create_server(("127.0.0.1", 0)) as plain:
            assert bentoml_patches.own_listener(plain) is plain
    finally:
        reserved.close()


def test_install_switches_the_socket_patches_with_the_setting():
    bentoml_patches.install()
    bentoml_patches.install_app_patches()
    try:
        bentoml_patches.install(reuse_port=False)
        bentoml_patches.install_app_patches(reuse_port=False)
        assert CircusSocket.bind_and_listen is bentoml_patches._ORIGINAL_BIND
        assert uvicorn.Server.startup is bentoml_patches._ORIGINAL_STARTUP
        bentoml_patches.install(reuse_port=True)
        bentoml_patches.install_app_patches(reuse_port=True)
        assert CircusSocket.bind_and_listen is bentoml_patches._bind_reserved
        assert uvicorn.Server.startup is bentoml_patches._startup_on_own_sockets
    finally:
        bentoml_patches.install()
        bentoml_patches.install_app_patches()


def test_workers_leave_circus_alone():
    """In a worker (BentoML sets ``worker_index`` before loading the service) install patches
    the app and uvicorn, not circus: workers never bind, and importing circus cost each ~0.2 s
    of start-up."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from bentoml._internal.context import server_context\n"
        "server_context.worker_index = 1\n"
        "from spam_serving import bentoml_patches\n"
        "bentoml_patches.install()\n"
        "import uvicorn\n"
        "assert uvicorn.Server.startup is bentoml_patches._startup_on_own_sockets\n"
        "print('circus.sockets' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_the_arbiter_imports_the_service_without_the_model_path_or_the_app_stack():
    """BentoML's arbiter imports the service module (not as a worker) before it spawns any
    worker: it gets the socket patch, and neither the model path (numpy, pyarrow, ONNX
    Runtime) nor what only workers need (uvicorn, OpenTelemetry's ASGI middleware), which
    cost ~0.5 s of every cold start (measured); a worker gets all of it."""
    import subprocess
    import sys

    heavy = ["numpy", "pyarrow", "onnxruntime", "uvicorn", "opentelemetry.instrumentation.asgi"]
    code = (
        "import sys\n"
        "import spam_serving.service\n"
        "from circus.sockets import CircusSocket\n"
        "from spam_serving import bentoml_patches\n"
        "assert CircusSocket.bind_and_listen is bentoml_patches._bind_reserved\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"

    worker = (
        "from bentoml._internal.context import server_context\n"
        "server_context.worker_index = 1\n"
        "import uvicorn\n"
        "from spam_serving import bentoml_patches\n"
        "from spam_serving.service import SpamClassifier\n"
        "assert uvicorn.Server.startup is bentoml_patches._startup_on_own_sockets\n"
        "print(sorted(SpamClassifier.apis))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", worker], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "predict" in out.stdout and "feedback" in out.stdout
