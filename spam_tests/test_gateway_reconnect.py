"""Every Nth answered request of a worker carries ``Connection: close`` so keep-alive clients
spread over the workers again (after a restart they had all piled on the survivor); public
probes and rejected requests do not count, and 0 switches it off."""

from __future__ import annotations

import asyncio

from spam_serving.gateway import GatewayMiddleware

KEY = b"k" * 24


async def _app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
    await send({"type": "http.response.body", "body": b"{}"})


def _call(gateway: GatewayMiddleware, path: str = "/predict_batch", key: bytes = KEY) -> dict:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [(b"x-api-key", key)],
    }
    asyncio.run(gateway(scope, receive, send))
    return dict(sent[0]["headers"])


def test_every_nth_answer_asks_the_client_to_reconnect():
    gateway = GatewayMiddleware(_app, (KEY,), 1000, 1000, reconnect_every=4)
    closes = [_call(gateway).get(b"connection") == b"close" for _ in range(12)]
    assert closes == [False, False, False, True] * 3
    assert _call(gateway)[b"x-a"] == b"1"  # the app's own headers stay


def test_probes_and_rejections_do_not_count_and_zero_is_off():
    gateway = GatewayMiddleware(_app, (KEY,), 1000, 1000, reconnect_every=2)
    for _ in range(5):
        _call(gateway, path="/readyz")
        _call(gateway, key=b"wrong-key-0123456789abcd")
    assert b"connection" not in _call(gateway)
    assert _call(gateway)[b"connection"] == b"close"
    off = GatewayMiddleware(_app, (KEY,), 1000, 1000, reconnect_every=0)
    assert not any(b"connection" in _call(off) for _ in range(10))
