"""Sustained load on a running API: single reports at a fixed offered rate (open loop), for minutes.

Every request is sent on schedule whether or not earlier ones have returned, so a slow server cannot
hide its queue; each latency is measured from the moment the request was due. The resilience suite
runs it beside audits (tests/integration/resilience/test_load.py: 200/s for 10 min in `make
resilience`, 20 s in `make test`); it also measures the first seconds after an API restart.

    .venv/bin/python bench/load.py --url http://127.0.0.1:8000 --admin-token TOKEN [--rate 200] [--seconds 600]

Last line: one JSON object with the rate, requests, failures and p50/p99/max in ms.
"""

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ingest import KeepAliveClient, make_report  # noqa: E402


async def offered_load(host: str, port: int, key: str, rate: float, seconds: float) -> dict[str, Any]:
    """Single `POST /v1/reports` at `rate` per second for `seconds`: latencies from the due time, and the
    count of every answer that was not 201. Bodies are made ahead, in chunks of a few seconds, so that
    ten minutes of load do not hold 120,000 reports in memory at once."""
    client = KeepAliveClient(host, port, key)
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    total = int(rate * seconds)
    chunk = int(rate * 5) or 1
    gc.collect()
    gc.freeze()  # the generator must not pause for a collection and blame the server for it

    async def one(body: bytes, due: float) -> None:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        try:
            code = await client.post("/v1/reports", body)
            if code != 201:
                failures[str(code)] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            failures[type(exc).__name__] += 1
        latencies.append((time.perf_counter() - due) * 1000)

    start = time.perf_counter() + 0.2
    tasks: list[asyncio.Task[None]] = []
    for first in range(0, total, chunk):
        bodies = [json.dumps(make_report(k)).encode() for k in range(first, min(total, first + chunk))]
        # Made before their turn: wait until just before the first of them is due.
        await asyncio.sleep(max(0.0, start + first / rate - 0.5 - time.perf_counter()))
        tasks += [asyncio.create_task(one(body, start + (first + k) / rate)) for k, body in enumerate(bodies)]
        tasks = [task for task in tasks if not task.done()]
    await asyncio.gather(*tasks)
    client.close()
    gc.unfreeze()
    q = statistics.quantiles(latencies, n=100)
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "requests": len(latencies),
        "failures": dict(failures),
        "p50_ms": round(q[49], 1),
        "p99_ms": round(q[98], 1),
        "max_ms": round(max(latencies), 1),
    }


def run(url: str, key: str, rate: float, seconds: float) -> dict[str, Any]:
    parsed = httpx.URL(url)
    return asyncio.run(offered_load(parsed.host, parsed.port or 80, key, rate, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--admin-token", required=True, help="to register the load's provider")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=600.0)
    args = parser.parse_args()
    response = httpx.post(
        f"{args.url}/v1/providers",
        json={"name": f"load-{uuid.uuid4().hex[:8]}"},
        headers={"Authorization": f"Bearer {args.admin_token}"},
    )
    response.raise_for_status()
    figures = run(args.url, response.json()["api_key"], args.rate, args.seconds)
    print(
        f"{figures['requests']} reports at {args.rate:.0f}/s: p50 {figures['p50_ms']} ms, p99 "
        f"{figures['p99_ms']} ms, max {figures['max_ms']} ms; not 201: {figures['failures'] or 'none'}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
