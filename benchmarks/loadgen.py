"""Closed-loop HTTP load generator, run as its own process against 127.0.0.1.

``N`` clients each send a request, wait for the answer, send the next, for a fixed time (and
at most ``--max-requests``). Prints one JSON line: requests, errors by status, rps and latency
percentiles. aiohttp on one event loop: the cheapest Python client per request, which matters
because it shares the machine's 2 cores with the server under test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import numpy as np


async def _client(
    session: aiohttp.ClientSession,
    url: str,
    bodies: list[bytes],
    headers: dict[str, str],
    offset: int,
    deadline: float,
    budget: list[int],
    latencies: list[float],
    statuses: Counter,
) -> None:
    i = offset
    while time.perf_counter() < deadline and budget[0] > 0:
        budget[0] -= 1
        body = bodies[i % len(bodies)]
        i += 1
        start = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                status = resp.status
        except aiohttp.ClientError as exc:
            status = type(exc).__name__
        latencies.append(time.perf_counter() - start)
        statuses[status] += 1


async def run(
    url: str,
    bodies: list[bytes],
    headers: dict[str, str],
    concurrency: int,
    duration_s: float,
    max_requests: int,
    warmup_s: float,
) -> dict:
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def phase(seconds: float, budget: list[int], lat: list, stat: Counter) -> None:
            deadline = time.perf_counter() + seconds
            await asyncio.gather(
                *(
                    _client(session, url, bodies, headers, k * 7, deadline, budget, lat, stat)
                    for k in range(concurrency)
                )
            )

        if warmup_s > 0:
            await phase(warmup_s, [10**9], [], Counter())
        latencies: list[float] = []
        statuses: Counter = Counter()
        start = time.perf_counter()
        await phase(duration_s, [max_requests], latencies, statuses)
        elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000.0
    ok = statuses.get(200, 0)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "ok": ok,
        "errors": {str(k): v for k, v in statuses.items() if k != 200},
        "seconds": round(elapsed, 3),
        "rps": round(ok / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--bodies", required=True, type=Path, help="JSON list of request bodies")
    p.add_argument("--header", action="append", default=[], help="Name: value")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--max-requests", type=int, default=200_000)
    p.add_argument("--warmup", type=float, default=1.0)
    args = p.parse_args(argv)
    if not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        sys.exit("load is only generated against 127.0.0.1")
    bodies = [json.dumps(b).encode() for b in json.loads(args.bodies.read_text())]
    headers = {"content-type": "application/json"}
    for h in args.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    result = asyncio.run(
        run(
            args.url,
            bodies,
            headers,
            args.concurrency,
            args.duration,
            args.max_requests,
            args.warmup,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
