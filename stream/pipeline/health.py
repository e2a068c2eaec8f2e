"""The /metrics, /health and /ready endpoints the streaming workers serve.

The scorer, the trainer and the simulated analyst each run one ``MetricsServer`` over their own
Prometheus registry and a ``Health`` their loop beats; what the registry holds is the worker's
own (``stream.scorer.metrics.ScorerMetrics``, ``stream.trainer.metrics.TrainerMetrics``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


class Health:
    """What /health and /ready report. Liveness = the loop made progress recently;
    readiness = live, and nothing is marked not-ready (e.g. a batch being retried while Redis
    or the broker is away). Partition assignment plays no part: an idle replica is ready."""

    def __init__(self, stall_after_s: float) -> None:
        self._lock = threading.Lock()
        self._last_beat = time.monotonic()
        self._stall_after_s = stall_after_s
        self.ready_reasons: dict[str, str] = {"starting": "not started"}

    def beat(self) -> None:
        with self._lock:
            self._last_beat = time.monotonic()

    def set_not_ready(self, key: str, why: str) -> None:
        with self._lock:
            self.ready_reasons[key] = why

    def set_ready(self, key: str) -> None:
        with self._lock:
            self.ready_reasons.pop(key, None)

    def snapshot(self) -> tuple[bool, bool, dict[str, Any]]:
        with self._lock:
            age = time.monotonic() - self._last_beat
            live = age < self._stall_after_s
            ready = live and not self.ready_reasons
            return live, ready, {"loop_age_s": round(age, 3), "not_ready": dict(self.ready_reasons)}


class MetricsServer:
    """A small HTTP server: /metrics (Prometheus), /health (liveness), /ready (readiness)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health) -> None:
        handler = _handler(registry, health.snapshot)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", self._server.server_address[0], self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(
    registry: CollectorRegistry, snapshot: Callable[[], tuple[bool, bool, dict[str, Any]]]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                return
            live, ready, details = snapshot()
            if self.path.startswith("/health"):
                self._send(200 if live else 503, orjson.dumps({"live": live, **details}))
            elif self.path.startswith("/ready"):
                self._send(200 if ready else 503, orjson.dumps({"ready": ready, **details}))
            else:
                self._send(404, b'{"error":"not found"}')

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes every few seconds would drown the worker's own log

    return Handler
