"""The scorer's Prometheus metrics (served by ``stream.pipeline.health.MetricsServer``).

Latency histograms use millisecond-scale buckets (faust's sensor does the same): scoring
latencies live between a few ms and a few seconds, and default buckets would lump them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
    1.0, 1.5, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class ScorerMetrics:
    """Every metric the scorer exports, on its own registry (several scorers can share a
    process in tests without colliding)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "riskstream_events_in", "Messages consumed from the input topic.", registry=r
        )
        self.events_scored = Counter(
            "riskstream_events_scored", "Events scored by the model.", ["model_version"], registry=r
        )
        self.duplicates = Counter(
            "riskstream_events_duplicate",
            "Events whose id was already processed (context unchanged).",
            registry=r,
        )
        self.alerts = Counter(
            "riskstream_alerts", "Alerts produced.", ["typology", "mode"], registry=r
        )
        self.dead_letters = Counter(
            "riskstream_dead_letters",
            "Messages sent to the dead-letter topic.",
            ["error"],
            registry=r,
        )
        self.batch_size = Histogram(
            "riskstream_batch_size",
            "Events per micro-batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.model_latency = Histogram(
            "riskstream_model_latency_seconds",
            "Model time per micro-batch (narratives to scores).",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.context_latency = Histogram(
            "riskstream_context_latency_seconds",
            "Redis context update time per micro-batch.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.stage_seconds = Counter(
            "riskstream_stage_seconds",
            "Wall time in each step of a batch (decode, claim, context, narrative, model, "
            "reasons, records, produce, commit), summed over batches.",
            ["stage"],
            registry=r,
        )
        self.stage_cpu_seconds = Counter(
            "riskstream_stage_cpu_seconds",
            "CPU time of the thread running each step (the model's: its calling thread only, "
            "not torch's helper threads), summed over batches.",
            ["stage"],
            registry=r,
        )
        self.event_to_alert = Histogram(
            "riskstream_event_to_alert_seconds",
            "From the input message's broker timestamp to the alert's acknowledgement.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.retries = Counter(
            "riskstream_batch_retries",
            "Batch attempts that failed and were retried.",
            ["cause"],
            registry=r,
        )
        self.commits = Counter("riskstream_commits", "Offset commits that succeeded.", registry=r)
        self.producer_queue_full = Counter(
            "riskstream_producer_queue_full",
            "Waits for room in the producer's local queue (backpressure; nothing is dropped).",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "riskstream_consumer_lag",
            "Messages behind the partition end, from librdkafka statistics.",
            ["topic", "partition"],
            registry=r,
        )
        self.model_info = Gauge(
            "riskstream_model_info",
            "The model version scoring now (value 1).",
            ["version"],
            registry=r,
        )
        self.model_swaps = Counter(
            "riskstream_model_swaps", "Hot model reloads completed.", registry=r
        )

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one step of a batch: wall time, and CPU time of the thread running it (the
        per-event budget by stage in BENCHMARKS.md is read from these two counters)."""
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.stage_seconds.labels(name).inc(time.perf_counter() - wall)
            self.stage_cpu_seconds.labels(name).inc(time.thread_time() - cpu)

    def record_librdkafka_stats(self, stats_json: str) -> None:
        """`stats_cb` target: consumer lag per assigned partition."""
        stats = orjson.loads(stats_json)
        for topic, topic_stats in stats.get("topics", {}).items():
            for partition, p in topic_stats.get("partitions", {}).items():
                if partition == "-1" or p.get("consumer_lag", -1) < 0:
                    continue
                self.consumer_lag.labels(topic, partition).set(p["consumer_lag"])

    def forget_partition(self, topic: str, partition: int) -> None:
        with contextlib.suppress(KeyError):
            self.consumer_lag.remove(topic, str(partition))

    def set_model(self, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version).set(1)
