"""The case desk with 100,000 alerts stored: intake rate from Kafka and page latency over HTTP,
each against a reference measured in the same run.

    .venv/bin/python -m bench.bench_desk                      # figures to bench/results/desk.json
    .venv/bin/python -m bench.bench_desk --alerts 20000 --json var/desk.json   # a quick run

Starts its own Kafka broker, redis-server and PostgreSQL (fsync on, as in production) on free
loopback ports, and removes them afterwards.

* ``intake``: 100,000 alerts (20,000 customers, five model versions, 30 days) produced to a
  3-partition alert topic, then :class:`stream.desk.intake.IntakeWorker` from its start to the
  last alert committed in PostgreSQL: decoding, case grouping, idempotent inserts, offsets.
  Reference: psycopg ``COPY`` of the very same rows into a copy of the ``alerts`` table (same
  indexes) - the database's bulk-load speed with no decoding, grouping or Kafka.
* ``pages``: `riskstream run desk --no-intake --no-relay` as its own process; a signed-in
  client requests the queue (a mix of filters, sorts and pages) and random alert pages
  (event, narrative, the customer's alerts, the scored record from Redis), one at a time.
  Reference: ``GET /health`` (the same server and HTTP stack, one ``SELECT 1``), and a bare
  psycopg ``SELECT 1`` round trip.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from confluent_kafka import Producer
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session
from tqdm import tqdm

from bench.machine import machine
from schemas import (
    SUSPICIOUS_TYPOLOGIES,
    Alert,
    Channel,
    CounterpartyType,
    Direction,
    Reason,
    TransactionEvent,
    alert_id_for,
    encode,
)
from stream.desk.auth import add_user
from stream.desk.database import upgrade, utcnow
from stream.desk.intake import IntakeWorker, alert_values
from stream.desk.outbox import record_disposition
from stream.desk.tables import AlertRow, User
from stream.devenv import KafkaBroker, RedisServer, ensure_kafka_jars, ensure_topics, free_ports
from stream.devenv.postgres import PostgresServer
from stream.devenv.redis_server import ensure_redis_server_binary
from stream.settings import DeskSettings, Settings, TopicSettings, to_env

PASSWORD = "benchmark password"  # noqa: S105 - a throwaway user of a throwaway database
NARRATIVE = (
    "A retail customer sends a wire transfer of 1,250.00 EUR, far above their usual amounts, "
    "to a new beneficiary account in a high-risk jurisdiction; the third new beneficiary this "
    "week, after two incoming transfers from unrelated senders earlier the same day."
)
QUEUE_VARIANTS = [
    {},
    {"sort": "newest"},
    {"sort": "oldest"},
    {"typology": "structuring"},
    {"band": "0.9-1.0"},
    {"model": "tiny-3"},
    {"age": "7d"},
    {"status": "all", "sort": "typology"},
    {"page": "20"},
    {"typology": "mule_fan_in_out", "band": "0.7-0.9", "sort": "newest", "page": "3"},
]


def make_alert(n: int, rng: random.Random, now: datetime) -> Alert:
    customer = f"cust-{rng.randrange(20_000):05d}"
    emitted = now - timedelta(seconds=rng.randrange(30 * 86_400))
    version = f"tiny-{rng.randrange(5)}"
    event = TransactionEvent(
        event_id=f"ev-{n:07d}",
        event_time=emitted - timedelta(milliseconds=80),
        customer_id=customer,
        account_id=f"acc-{customer}",
        channel=Channel.WIRE,
        direction=Direction.OUTBOUND,
        amount_minor=rng.randrange(1_000, 10_000_000),
        currency="EUR",
        counterparty_id=f"acc-ext-{rng.randrange(50_000)}",
        counterparty_type=CounterpartyType.ACCOUNT,
        country="AE",
    )
    return Alert(
        alert_id=alert_id_for(event.event_id, version),
        mode="live",
        event=event,
        score=round(rng.uniform(0.5, 1.0), 4),
        threshold=0.5,
        typology=rng.choice(SUSPICIOUS_TYPOLOGIES),
        typology_probability=0.6,
        reasons=[
            Reason(clause="amount", text="far above their usual amounts", weight=0.3),
            Reason(clause="country", text="in a high-risk jurisdiction", weight=0.1),
        ],
        narrative=NARRATIVE,
        model_version=version,
        narrative_version="n2",
        event_time=event.event_time,
        received_at=emitted,
        scored_at=emitted,
        emitted_at=emitted,
    )


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def produce_all(settings: Settings, payloads: list[bytes], keys: list[bytes]) -> None:
    producer = Producer(
        {
            **settings.kafka.client_config(),
            "enable.idempotence": True,
            "linger.ms": 20,
            "compression.type": "lz4",
        }
    )
    for payload, key in tqdm(
        zip(payloads, keys, strict=True), total=len(payloads), desc="produce", unit="alert"
    ):
        while True:
            try:
                producer.produce(settings.topics.alerts, payload, key=key)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("alerts were not all acknowledged")


def postgres_cpu_s(postmaster: int) -> float:
    """CPU seconds (user + system) of the postmaster and its children so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if postmaster in (pid, ppid):
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def measure_intake(settings: Settings, url: str, total: int, postmaster: int) -> dict[str, float]:
    """Wall-clock rate, and the CPU the intake and PostgreSQL spent: on a shared machine the
    wall clock says how busy the others were, the CPU what the intake costs."""
    engine = create_engine(url)
    worker = IntakeWorker(settings, engine)
    thread = threading.Thread(target=worker.run)
    cpu_before, pg_before = time.process_time(), postgres_cpu_s(postmaster)
    started = time.perf_counter()
    thread.start()
    with tqdm(total=total, desc="intake", unit="alert") as bar:
        while True:
            with Session(engine) as db:
                stored = int(db.scalar(select(func.count()).select_from(AlertRow)) or 0)
            bar.update(stored - bar.n)
            if stored >= total:
                break
            time.sleep(0.5)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before + postgres_cpu_s(postmaster) - pg_before
    worker.stop()
    thread.join(60)
    engine.dispose()
    return {"rate": total / elapsed, "cpu_s": cpu}


def measure_copy(conninfo: str, alerts: list[Alert], payloads: list[bytes]) -> float:
    """The reference: COPY the same rows into a same-shaped table (its indexes included)."""
    now = utcnow()
    columns = list(alert_values(alerts[0], payloads[0], "", 0, now))
    with psycopg.connect(conninfo) as conn:
        conn.execute("CREATE TABLE alerts_copy (LIKE alerts INCLUDING ALL)")
        conn.execute("ALTER TABLE alerts_copy DROP CONSTRAINT IF EXISTS alerts_copy_case_id_fkey")
        conn.commit()
        started = time.perf_counter()
        with (
            conn.cursor() as cursor,
            cursor.copy(f"COPY alerts_copy ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for n, (alert, raw) in enumerate(zip(alerts, payloads, strict=True)):
                row = alert_values(alert, raw, f"alerts[0]@{n}", 1, now)
                copy.write_row([row[c] for c in columns])
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE alerts_copy")
        conn.commit()
    return len(alerts) / elapsed


def timed_get(client: httpx.Client, path: str, params: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    answer = client.get(path, params=params)
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code != 200:
        raise RuntimeError(f"GET {path} {params}: {answer.status_code}")
    return elapsed


def measure_pages(
    settings: Settings, base: str, conninfo: str, alert_ids: list[str], requests: int
) -> dict[str, Any]:
    rng = random.Random(3)
    client = httpx.Client(base_url=base, timeout=30)
    form = client.get("/login").text
    token = form.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    signed = client.post(
        "/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token}
    )
    if signed.status_code != 303:
        raise RuntimeError(f"sign-in failed: {signed.status_code}")
    for variant in QUEUE_VARIANTS:  # warm the server's and the database's caches once
        timed_get(client, "/queue", variant)
    queue, alert, health, select_one = [], [], [], []
    with psycopg.connect(conninfo) as conn:
        for n in tqdm(range(requests), desc="pages", unit="round"):
            queue.append(timed_get(client, "/queue", QUEUE_VARIANTS[n % len(QUEUE_VARIANTS)]))
            alert.append(timed_get(client, f"/alerts/{rng.choice(alert_ids)}"))
            health.append(timed_get(client, "/health"))
            started = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            select_one.append((time.perf_counter() - started) * 1000)
    client.close()
    result = {
        "queue": percentiles(queue),
        "alert": percentiles(alert),
        "health": percentiles(health),
        "select_1": percentiles(select_one),
    }
    for page in ("queue", "alert"):
        result[page]["p95_over_health_p95"] = round(
            result[page]["p95_ms"] / result["health"]["p95_ms"], 2
        )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=400, help="page requests of each kind")
    parser.add_argument("--dispositions", type=int, default=2_000)
    parser.add_argument("--json", type=Path, default=Path("bench/results/desk.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="riskstream-bench-desk-"))
    work.chmod(0o755)  # PostgreSQL runs as its own user and must reach its directory
    kafka_port, controller_port, redis_port, pg_port, desk_port = free_ports(5)
    libs = ensure_kafka_jars(Path(".riskstream").resolve())
    broker = KafkaBroker(work / "kafka", libs, port=kafka_port, controller_port=controller_port)
    redis_server = RedisServer(redis_port, work / "redis", binary=ensure_redis_server_binary())
    postgres = PostgresServer(pg_port, work / "postgres")
    desk_process: subprocess.Popen[bytes] | None = None
    try:
        broker.start()
        redis_server.start()
        postgres.start()
        url = postgres.ensure_database()
        conninfo = url.replace("postgresql+psycopg://", "postgresql://")
        engine = create_engine(url)
        upgrade(engine)
        settings = Settings(
            home=work / "home",
            kafka=broker.kafka_settings(),
            redis=redis_server.redis_settings(),
            topics=TopicSettings(alerts="bench-alerts"),
            desk=DeskSettings(database_url=url, host="127.0.0.1", port=desk_port),
        )
        ensure_topics(settings.kafka, {settings.topics.alerts: 3})

        rng = random.Random(7)
        now = datetime.now(UTC)
        alerts = [make_alert(n, rng, now) for n in tqdm(range(args.alerts), desc="generate")]
        payloads = [encode(a) for a in alerts]
        produce_all(settings, payloads, [a.event.customer_id.encode() for a in alerts])
        postmaster = postgres.pid
        assert postmaster is not None
        intake = measure_intake(settings, url, args.alerts, postmaster)
        intake_rate = intake["rate"]
        copy_rate = measure_copy(conninfo, alerts, payloads)
        print(f"intake {intake_rate:,.0f} alerts/s; COPY reference {copy_rate:,.0f} rows/s")

        with Session(engine) as db, db.begin():
            user_id = add_user(db, "bench", PASSWORD, "supervisor").id
        with Session(engine) as db:
            analyst = db.get(User, user_id)
            assert analyst is not None
            for alert in tqdm(alerts[: args.dispositions], desc="dispositions"):
                verdict = "suspicious" if alert.score > 0.7 else "legitimate"
                record_disposition(db, analyst, alert.alert_id, verdict, alert.typology.value, None)
                db.commit()
        engine.dispose()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")

        env = {**os.environ, **to_env(settings)}
        with (work / "desk.log").open("ab") as log:
            desk_process = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "run", "desk", "--no-intake", "--no-relay"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{desk_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError((work / "desk.log").read_text()[-3000:])
            time.sleep(0.2)
        sample = [a.alert_id for a in rng.sample(alerts, min(5_000, len(alerts)))]
        pages = measure_pages(settings, base, conninfo, sample, args.requests)
    finally:
        if desk_process is not None:
            desk_process.terminate()
            desk_process.wait(60)
        postgres.stop()
        redis_server.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "benchmark": "desk",
        "command": "python -m bench.bench_desk"
        + ("" if args.alerts == 100_000 else f" --alerts {args.alerts}"),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "alerts_stored": args.alerts,
        "dispositions": args.dispositions,
        "intake": {
            "alerts_per_s": round(intake_rate),
            "copy_reference_rows_per_s": round(copy_rate),
            "ratio_to_copy": round(intake_rate / copy_rate, 3),
            "cpu_s_intake_and_postgres": round(intake["cpu_s"], 1),
            "alerts_per_cpu_s": round(args.alerts / intake["cpu_s"]),
            "target_alerts_per_s": 2_000,
        },
        "pages": pages,
        "target_p95_ms": 200,
    }
    print(json.dumps(result, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
