"""Report ingestion against PostgreSQL, through the real REST API (uvicorn in a subprocess):

1. reports/s through `POST /v1/reports/batch` (batches of 1,000);
2. p50/p99 latency of single `POST /v1/reports` at a fixed offered rate (open loop: requests are sent
   on schedule whether or not earlier ones have returned, so slow answers cannot hide queueing);
3. the limit: the raw insert rate of the same rows (reports and their audit events) with plain
   SQLAlchemy Core `executemany` on the same database.

Targets (issue 3): batch ingestion >= 50% of the raw insert rate; single-report p99 <= 50 ms at 200
requests/s. Last line: one JSON object with `batch_fraction_of_raw_insert` and `single_p99_ms`.

    .venv/bin/python bench/ingest.py [--database-url URL] [--batches N] [--rate R] [--seconds S]
"""

import argparse
import asyncio
import base64
import dataclasses
import gc
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.migrate import upgrade_database  # noqa: E402
from service.models import AuditEvent, PendingEvent, Report  # noqa: E402
from service.reports.service import accepted_embd_id, new_report, received_event, report_digest  # noqa: E402
from service.security import Signer  # noqa: E402
from service.settings import DEV_ADMIN_TOKEN, DEV_SIGNING_KEY  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/coin_bench"


def fresh_database(url: str) -> None:
    """Drop and recreate the benchmark database, then migrate it."""
    name = sa.engine.make_url(url).database
    admin = sa.create_engine(sa.engine.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    upgrade_database(url)


def make_report(n: int) -> dict[str, Any]:
    reasoning = 500 + n % 3000
    return {
        "request_id": f"bench-{uuid.uuid4()}",
        "model": "bench-reasoner-1",
        "usage": {"input_tokens": 42, "output_tokens": reasoning + 80, "reasoning_tokens": reasoning},
        "commitment": {
            "version": "coin/1",
            "root": secrets.token_hex(32),
            "size": reasoning,
            "block_size": 256,
            "embd_id": accepted_embd_id(),
            "tokenizer_id": "qwen2",
        },
        "answer": {
            "digest": secrets.token_hex(32),
            "embedding": base64.b64encode(secrets.token_bytes(384)).decode(),
        },
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(url: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "COIN_DATABASE_URL": url, "COIN_ENV": "development", "HF_HUB_OFFLINE": "1"}
    env.pop("COIN_BROKER_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
        cwd=REPO, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the API did not start")


def provider_key(base: str, name: str) -> str:
    r = httpx.post(
        f"{base}/v1/providers", json={"name": name}, headers={"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}
    )
    r.raise_for_status()
    return str(r.json()["api_key"])


def wait_until_chained(url: str) -> None:
    """Wait until the API has linked every report's event into the audit chain (it defers them)."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        while conn.execute(sa.select(sa.func.count()).select_from(PendingEvent)).scalar():
            conn.rollback()
            time.sleep(0.002)
    engine.dispose()


def settle(url: str) -> None:
    """Let the database finish the upkeep the previous phase caused (vacuum, statistics, dirty pages),
    so that the next phase measures requests, not that upkeep landing at a random moment in it."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("VACUUM (ANALYZE)"))
        conn.execute(sa.text("CHECKPOINT"))
    engine.dispose()


def bench_batch(base: str, key: str, batches: int, url: str) -> float:
    """Reports/s from the first request until the last report's event is in the chain.

    The client's own JSON work (encoding 1,000 reports, decoding 1,000 receipts) is done outside the
    timed span: it is the client's cost, not the service's, and it shares these 2 cores."""
    payloads = [
        json.dumps({"reports": [make_report(b * 1000 + i) for i in range(1000)]}).encode()
        for b in range(batches)
    ]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    answers = []
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        client.post("/v1/reports/batch", json={"reports": [make_report(0) for _ in range(50)]})  # warm-up
        start = time.perf_counter()
        for payload in payloads:
            r = client.post("/v1/reports/batch", content=payload)
            r.raise_for_status()
            answers.append(r.content)
        wait_until_chained(url)
        elapsed = time.perf_counter() - start
    for answer in answers:
        assert all(item["status"] == 201 for item in json.loads(answer)["results"]), answer[:500]
    return batches * 1000 / elapsed


def bench_sequential(base: str, key: str, n: int) -> float:
    """Mean latency of single reports sent one at a time (ms): the server's time per report, unloaded."""
    reports = [make_report(i) for i in range(n)]
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        for warm in [make_report(-1) for _ in range(20)]:
            client.post("/v1/reports", json=warm)
        start = time.perf_counter()
        for report in reports:
            r = client.post("/v1/reports", json=report)
            assert r.status_code == 201, r.text[:300]
        return (time.perf_counter() - start) / n * 1000


class KeepAliveClient:
    """Just enough HTTP/1.1 to POST JSON over keep-alive connections, for the open-loop load.

    The load generator shares the 2 cores with the server it measures: httpx's AsyncClient spends
    milliseconds of CPU per request, which at 200/s takes a good share of the machine from the server.
    This one writes pre-encoded requests and reads the status line, headers and body."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.head = (
            f"Host: {host}:{port}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        )
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def post(self, path: str, body: bytes) -> int:
        while self.idle:
            reader, writer = self.idle.pop()
            try:
                return await self._exchange(reader, writer, path, body)
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()  # the server closed this idle connection (keep-alive timeout): next one
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened += 1
        return await self._exchange(reader, writer, path, body)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes
    ) -> int:
        writer.write(
            f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
        await reader.readexactly(int(headers["content-length"]))  # uvicorn sizes every JSON answer
        self.idle.append((reader, writer))
        return int(head[0].split(" ", 2)[1])

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def bench_single(base: str, key: str, rate: float, seconds: float) -> tuple[list[float], Counter[str]]:
    """Latencies (ms) of single reports sent on schedule, and the count of each answer that was not 201."""
    bodies = [json.dumps(make_report(i)).encode() for i in range(int(rate * seconds))]
    url = httpx.URL(base)
    client = KeepAliveClient(url.host, url.port or 80, key)
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    # The load generator must not pause on its own: a full collection over this process's objects would
    # show up as server latency. Freeze what exists (the bodies included).
    gc.collect()
    gc.freeze()
    # Warm-up (connections, caches, the server's thread pool): not measured.
    await asyncio.gather(
        *(client.post("/v1/reports", json.dumps(make_report(-1)).encode()) for _ in range(50))
    )

    async def one(body: bytes, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        sent = time.perf_counter()
        # A failed request counts in the latencies too: leaving it out would flatter the tail.
        try:
            code = await client.post("/v1/reports", body)
            if code != 201:
                failures[str(code)] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            failures[type(exc).__name__] += 1
        latencies.append((time.perf_counter() - sent) * 1000)

    start = time.perf_counter() + 0.2
    await asyncio.gather(*(one(body, start + k / rate) for k, body in enumerate(bodies)))
    client.close()
    return latencies, failures


def bench_raw(url: str, n: int) -> float:
    """The rows the API writes per report — the report with its signed receipt, and its chained audit
    event, built by the API's own functions outside the timed span — inserted with plain executemany."""
    engine = sa.create_engine(url)
    signer = Signer(DEV_SIGNING_KEY, "raw-insert-secret")
    provider = uuid.uuid4()
    reports = []
    for k in range(n):
        body = make_report(k)
        reports.append(new_report(signer, provider, body, report_digest(body), retention_days=30).row)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO providers (id, name, name_key, created_at) VALUES (:id, :name, :name, now())"),
                     {"id": provider, "name": f"raw-{provider}"})  # fmt: skip
        head = conn.execute(
            sa.select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
        ).one()
    # Random stand-ins for the hashes (`prev_hash` and `hash` are unique), linked as a chain would be.
    events = []
    prev_hash = head.hash
    for k, row in enumerate(reports):
        link = secrets.token_hex(32)
        event = dataclasses.asdict(received_event(row))
        events.append({**event, "seq": head.seq + 1 + k, "prev_hash": prev_hash, "hash": link})
        prev_hash = link
    start = time.perf_counter()
    for chunk in range(0, n, 1000):
        with engine.begin() as conn:
            now = datetime.now(UTC)
            conn.execute(sa.insert(Report), reports[chunk : chunk + 1000])
            conn.execute(
                sa.insert(AuditEvent),
                [{**e, "occurred_at": now} for e in events[chunk : chunk + 1000]],
            )
    elapsed = time.perf_counter() - start
    engine.dispose()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=os.environ.get("COIN_BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--batches", type=int, default=5, help="batches of 1,000 per timed run")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each: batch, then raw")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (as `coin api --workers`)"
    )
    args = parser.parse_args()

    fresh_database(args.database_url)
    port = free_port()
    api = start_api(args.database_url, port, args.workers)
    base = f"http://127.0.0.1:{port}"
    batch_rates: list[float] = []
    raw_rates: list[float] = []
    try:
        key = provider_key(base, "bench-batch")
        # Both rates move by a third between minutes on a shared 2-core machine: measure them in turns
        # and compare the best of each, so that neither is favoured by a quiet moment.
        for _ in range(args.rounds):
            batch_rates.append(bench_batch(base, key, args.batches, args.database_url))
            raw_rates.append(bench_raw(args.database_url, args.batches * 1000))
        sequential_ms = bench_sequential(base, provider_key(base, "bench-sequential"), 300)
        settle(args.database_url)
        latencies, failures = asyncio.run(
            bench_single(base, provider_key(base, "bench-single"), args.rate, args.seconds)
        )
    finally:
        api.terminate()
        api.wait(timeout=30)
    batch_rate, raw_rate, n = max(batch_rates), max(raw_rates), args.batches * 1000
    q = statistics.quantiles(latencies, n=100)
    summary = {
        "batch_reports_per_s": round(batch_rate, 1),
        "batch_runs_per_s": [round(r) for r in batch_rates],
        "raw_runs_rows_per_s": [round(r) for r in raw_rates],
        "raw_insert_rows_per_s": round(raw_rate, 1),
        "batch_fraction_of_raw_insert": round(batch_rate / raw_rate, 4),
        "sequential_single_ms": round(sequential_ms, 2),
        "workers": args.workers,
        "single_rate_per_s": args.rate,
        "single_requests": len(latencies),
        "single_failures": dict(failures),
        "single_p50_ms": round(q[49], 2),
        "single_p99_ms": round(q[98], 2),
        "single_max_ms": round(max(latencies), 2),
    }
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus; database {sa.engine.make_url(args.database_url).render_as_string()}"
    )
    print(f"batch: {batch_rate:,.0f} reports/s (best of {args.rounds} runs of {n}); raw executemany: "
          f"{raw_rate:,.0f} reports/s (best of {args.rounds}) ({batch_rate / raw_rate:.1%})")  # fmt: skip
    print(f"single, one at a time: {sequential_ms:.1f} ms per report")
    print(
        f"single at {args.rate:.0f}/s for {args.seconds:.0f}s ({args.workers} worker(s)): p50 {q[49]:.1f} ms, "
        f"p99 {q[98]:.1f} ms, max {max(latencies):.1f} ms; not 201: {dict(failures) or 'none'}"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
