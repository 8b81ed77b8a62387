"""ASGI middleware in front of the BentoML routes: auth, environment, size limits, raw mail.

Why a middleware and not per-endpoint code: the checks must also cover BentoML's generated
task routes (``/predict_async/submit|status|get``), must run before BentoML reads and
validates the body (so a 10 MB upload is refused without being parsed), and must answer with
a JSON reason. It also turns a raw ``message/rfc822`` or ``text/plain`` body on ``/predict``
into the JSON form the API declares, so 8-bit mail reaches the parser byte for byte.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from spam_serving import metrics

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ENVIRONMENTS = {"production": "champion", "staging": "challenger"}
#: production requests the canary share sends to the challenger are logged under this name
CANARY_ENV = "production-canary"
"""``X-Environment`` value -> MLflow alias of the model that answers."""
DEFAULT_ENVIRONMENT = "production"
PUBLIC_PATHS = ("/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/schema.json", "/")
PUBLIC_PREFIXES = ("/static_content/", "/assets/")
RAW_MAIL_TYPES = ("message/rfc822", "text/plain")
_KIND_BY_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "limit_exceeded",
    503: "overloaded",
}


def load_api_keys(keys: Iterable[str], key_file: Path | None) -> tuple[bytes, ...]:
    """Keys from settings plus one per non-comment line of ``key_file`` (a mounted secret)."""
    found = [k.strip() for k in keys if k.strip()]
    if key_file is not None and Path(key_file).is_file():
        for line in Path(key_file).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found.append(line)
    return tuple(k.encode() for k in found)


def environment_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The requested environment, or None when the header names an unknown one."""
    for name, value in headers:
        if name == b"x-environment":
            env = value.decode("latin-1").strip().lower()
            return env if env in ENVIRONMENTS else None
    return DEFAULT_ENVIRONMENT


class GatewayMiddleware:
    """Pure ASGI (no per-request object allocation beyond what the checks need).

    ``reconnect_every``: every Nth answered request of this worker carries ``Connection:
    close``. Keep-alive clients otherwise stay on the worker they first reached: after a
    worker was killed and restarted, every client had reconnected to the surviving worker
    before the new one listened, and the new one idled for the rest of the soak while the
    other ran at full CPU (p50 2x). A reconnect costs a local TCP handshake; the kernel
    (``SO_REUSEPORT``) spreads the new connections again."""

    def __init__(
        self,
        app: ASGIApp,
        api_keys: tuple[bytes, ...],
        max_request_bytes: int,
        max_async_request_bytes: int,
        reconnect_every: int = 0,
    ) -> None:
        if not api_keys:
            raise ValueError(
                "no API keys configured: set SPAM_API_KEYS or SPAM_API_KEYS_FILE "
                "(make run writes one to .spam_home/serving/api_keys)"
            )
        self.app = app
        self.api_keys = api_keys
        self.max_request_bytes = max_request_bytes
        self.max_async_request_bytes = max_async_request_bytes
        self.reconnect_every = reconnect_every
        self._answered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if not self._authorized(headers):
            await _reject(send, 401, "missing or invalid API key (send it as X-API-Key)")
            return
        environment = environment_of(headers)
        if environment is None:
            allowed = ", ".join(sorted(ENVIRONMENTS))
            await _reject(send, 400, f"unknown X-Environment; use one of: {allowed}")
            return
        # decided once here; handlers read it as ``ctx.request.state.environment``
        scope.setdefault("state", {})["environment"] = environment
        if scope["method"] in ("POST", "PUT"):
            limit = (
                self.max_async_request_bytes
                if path.startswith("/predict_async")
                else self.max_request_bytes
            )
            body = await _read_body(receive, headers, limit)
            if body is None:
                await _reject(send, 413, f"request body larger than {limit} bytes")
                return
            content_type = _header(headers, b"content-type").split(";")[0].strip().lower()
            if content_type in RAW_MAIL_TYPES and path == "/predict":
                if content_type == "text/plain":
                    try:
                        text = body.decode("utf-8")
                    except UnicodeDecodeError:
                        await _reject(
                            send,
                            400,
                            "text/plain body is not valid UTF-8; send 8-bit mail "
                            "as Content-Type: message/rfc822",
                        )
                        return
                    body = json.dumps({"raw": text}).encode()
                else:
                    body = json.dumps({"raw_base64": base64.b64encode(body).decode()}).encode()
                headers = _with_json_headers(headers, len(body))
                scope = {**scope, "headers": headers}
            elif content_type not in ("", "application/json"):
                await _reject(
                    send,
                    415,
                    f"unsupported Content-Type {content_type!r}; use application/json"
                    + (" or message/rfc822" if path == "/predict" else ""),
                )
                return
            receive = _replay(body, receive)
        self._answered += 1
        close = self.reconnect_every > 0 and self._answered % self.reconnect_every == 0
        await self.app(scope, receive, _counting(send, close))

    def _authorized(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        given = b""
        for name, value in headers:
            if name == b"x-api-key":
                given = value.strip()
                break
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
        ok = False
        for key in self.api_keys:  # no early exit: time does not depend on which key matched
            ok |= hmac.compare_digest(given, key)
        return ok and bool(given)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str:
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return ""


async def _read_body(receive: Receive, headers: list, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is known to exceed ``limit``."""
    declared = _header(headers, b"content-length")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes, upstream: Receive) -> Receive:
    """Hand the buffered body on, then let the app wait on the real connection."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await upstream()

    return receive


def _with_json_headers(headers: list, length: int) -> list:
    kept = [(k, v) for k, v in headers if k not in (b"content-type", b"content-length")]
    return [
        *kept,
        (b"content-type", b"application/json"),
        (b"content-length", str(length).encode()),
    ]


def _counting(send: Send, close: bool = False) -> Send:
    """Count error responses; with ``close``, ask the client to reconnect after this one."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            if message["status"] >= 400:
                status = message["status"]
                metrics.ERRORS.labels(_KIND_BY_STATUS.get(status, f"http_{status}")).inc()
            if close:
                message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
        await send(message)

    return wrapped


async def _reject(send: Send, status: int, reason: str) -> None:
    metrics.ERRORS.labels(_KIND_BY_STATUS.get(status, f"http_{status}")).inc()
    body = json.dumps({"error": reason}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
