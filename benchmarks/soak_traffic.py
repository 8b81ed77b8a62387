"""The soak's traffic, from its own process: mixed requests against one service for a fixed
time, every outcome recorded as a JSON line.

Mix (by weight): raw mail to ``/predict``, JSON fields to ``/predict``, ``/predict_batch`` of
10-30, ``/feedback`` for an earlier answer, async jobs (submit, poll, fetch) and hostile
messages. A connection that breaks (a worker killed under it) is retried up to twice, as a
mail server or a load balancer would; the record says so. ``python -m
benchmarks.soak_traffic --url ... --key ... --seconds ... --messages ... --out ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import time

import aiohttp

WEIGHTS = {
    "predict_raw": 45,
    "predict_json": 10,
    "batch": 15,
    "feedback": 15,
    "async": 5,
    "hostile": 10,
}
CLIENTS = 6
RETRIES = 2


def hostile_bodies() -> list[bytes]:
    """Small hostile messages (the full-size ones are the CPU benchmark's)."""
    head = b"From: x@example.biz\nSubject: hi\n"
    return [
        head + b"Content-Type: text/html\n\n" + b"<div>" * 5_000 + b"win" + b"</div>" * 5_000,
        head + b"".join(b"X-H%d: v\n" % i for i in range(5_000)) + b"\nbody",
        head.replace(b"hi", b"=?utf-8?b?d2lu?= " * 3_000) + b"\nbody",
        head
        + b'Content-Type: multipart/mixed; boundary="b"\n\n'
        + b"--b\nContent-Type: text/plain\n\nx\n" * 2_000
        + b"--b--\n",
    ]


class Traffic:
    def __init__(self, url: str, key: str, messages: list[tuple[bytes, int]], seed: int) -> None:
        self.url = url
        self.headers = {"X-API-Key": key}
        self.messages = messages
        self.rng = random.Random(seed)
        self.answered: list[tuple[str, int]] = []  # (prediction id, true label) for feedback
        self.hostile = hostile_bodies()
        self.t0 = time.monotonic()

    def _msg(self) -> tuple[dict, int]:
        raw, label = self.rng.choice(self.messages)
        return {"raw_base64": base64.b64encode(raw).decode(), "explain": False}, label

    async def _post(self, session, path: str, **kw) -> tuple[int, dict | None, int, str | None]:
        """(status, JSON body, retries, error): status 0 when every attempt broke."""
        error = None
        for attempt in range(RETRIES + 1):
            try:
                async with session.post(self.url + path, headers=self.headers, **kw) as r:
                    try:
                        body = await r.json(content_type=None)
                    except (ValueError, aiohttp.ContentTypeError):
                        body = None
                    return r.status, body, attempt, None
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:200]
                await asyncio.sleep(0.2)
        return 0, None, RETRIES, error

    async def one(self, session) -> dict:
        kind = self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        start = time.monotonic()
        t = start - self.t0
        ids: list[str] = []
        labels: list[int] = []
        if kind == "predict_raw":
            body, label = self._msg()
            status, out, retries, error = await self._post(session, "/predict", json=body)
            if status == 200:
                ids, labels = [out["prediction_id"]], [label]
        elif kind == "predict_json":
            raw, label = self.rng.choice(self.messages)
            text = raw.decode("latin-1").split("\n\n", 1)[-1][:3000]
            body = {"subject": "soak", "body": text, "explain": False}
            status, out, retries, error = await self._post(session, "/predict", json=body)
            if status == 200:
                ids, labels = [out["prediction_id"]], [label]
        elif kind == "batch":
            picked = [self._msg() for _ in range(self.rng.randint(10, 30))]
            body = {"messages": [m for m, _ in picked]}
            status, out, retries, error = await self._post(session, "/predict_batch", json=body)
            if status == 200:
                ids = [p["prediction_id"] for p in out["predictions"]]
                labels = [lab for _, lab in picked]
        elif kind == "feedback":
            if not self.answered:
                return await self.one(session)
            pid, label = self.rng.choice(self.answered)
            body = {"prediction_id": pid, "label": "spam" if label else "ham"}
            status, out, retries, error = await self._post(session, "/feedback", json=body)
        elif kind == "async":
            picked = [self._msg() for _ in range(20)]
            status, out, retries, error = await self._post(
                session, "/predict_async/submit", json={"messages": [m for m, _ in picked]}
            )
            if status == 200:
                status, out, error = await self._finish_async(session, out["task_id"])
                done = [p for p in out or [] if "prediction_id" in p]
                if status == 200:
                    ids = [p["prediction_id"] for p in done]
                    labels = [picked[p["index"]][1] for p in done]
        else:
            raw = self.rng.choice(self.hostile)
            body = {"raw_base64": base64.b64encode(raw).decode(), "explain": False}
            status, out, retries, error = await self._post(session, "/predict", json=body)
            if status == 200:
                ids, labels = [out["prediction_id"]], [1]
        self.answered.extend(zip(ids, labels, strict=True))
        reason = out.get("error") if isinstance(out, dict) and status != 200 else None
        return {
            "t": round(t, 3),
            "ms": round(1000 * (time.monotonic() - start), 1),
            "kind": kind,
            "status": status,
            "ids": ids,
            "retries": retries,
            "reason": reason,
            "error": error,
        }

    async def _finish_async(self, session, task_id: str) -> tuple[int, list | None, str | None]:
        """Poll the task until it ends, then fetch its results; a connection broken under a
        poll (a worker killed) is retried up to ``RETRIES`` times in a row, as for posts."""
        params = {"task_id": task_id}
        broken = 0
        for _ in range(200):
            try:
                async with session.get(
                    self.url + "/predict_async/status", params=params, headers=self.headers
                ) as r:
                    state = (await r.json(content_type=None)).get("status")
                broken = 0
                if state in ("completed", "failed", "canceled"):
                    break
            except (aiohttp.ClientConnectionError, ValueError) as exc:
                broken += 1
                if broken > RETRIES:
                    return 0, None, f"status: {type(exc).__name__}"
            await asyncio.sleep(0.1)
        error = None
        for _ in range(RETRIES + 1):
            try:
                async with session.get(
                    self.url + "/predict_async/get", params=params, headers=self.headers
                ) as r:
                    body = await r.json(content_type=None)
                    results = body.get("results") if isinstance(body, dict) else None
                    return r.status, results, None
            except (aiohttp.ClientConnectionError, ValueError) as exc:
                error = f"get: {type(exc).__name__}"
                await asyncio.sleep(0.2)
        return 0, None, error

    async def run(self, seconds: float, out) -> None:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def client() -> None:
                while time.monotonic() - self.t0 < seconds:
                    record = await self.one(session)
                    out.write(json.dumps(record) + "\n")
                    out.flush()

            await asyncio.gather(*(client() for _ in range(CLIENTS)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--messages", required=True, help="JSON file: [[base64 raw, label], ...]")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with open(args.messages) as f:
        messages = [(base64.b64decode(r), int(y)) for r, y in json.load(f)]
    traffic = Traffic(args.url, args.key, messages, args.seed)
    with open(args.out, "w") as out:
        asyncio.run(traffic.run(args.seconds, out))


if __name__ == "__main__":
    main()
