"""Redis time per op of each context script (customer.lua, counterparty.lua), and whether the
dedupe memory's size moves it: where the framework-alone scorer's Redis time goes.

    .venv/bin/python -m bench.bench_context_scripts                  # ~2 min on 2 cores
    .venv/bin/python -m bench.bench_context_scripts --json bench/results/context_scripts.json

Workload: bench_scorer's quick bank (600 customers over 10 days, seed 5), applied in time order
by ``ContextStore.update_batch`` in batches of 256 - the store alone, no broker, no model. Each
limits variant has its own namespace on one temporary redis-server (127.0.0.1), and the
variants take turns batch by batch, so a disturbance of the machine falls on all of them.

Redis' slow log at a threshold of 0 records every command's duration inside Redis; a script
call's duration divided by the ops it carried is the script's time per op (scripts named by
the SHA1 of their source). The reference, measured the same way in the same run: an ``EVAL``
of ``return 1`` - Redis' fixed cost of one script call. The state blobs' sizes (``STRLEN`` of
every ``:s`` key) are reported per variant: the dedupe memory lives in them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bench.bench_scorer import BATCH, event_lines
from bench.machine import machine
from schemas import TransactionEvent, decode
from stream.context.store import ContextLimits, ContextStore, _entity_script
from stream.devenv.process import free_ports
from stream.devenv.redis_server import RedisServer, ensure_redis_server_binary
from stream.settings import ContextSettings

VARIANTS = {
    "default": ContextLimits(),
    "dedupe_cap 32 (default 256)": ContextLimits(dedupe_cap=32),
    "dedupe_span 1 h (default 6 h)": ContextLimits(dedupe_span_s=3600),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=600)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    scripts = {
        hashlib.sha1(
            _entity_script(f"{name}.lua").encode(), usedforsecurity=False
        ).hexdigest(): name
        for name in ("customer", "counterparty")
    }
    with tempfile.TemporaryDirectory(prefix="bench-context-scripts-") as tmp:
        work = Path(tmp)
        events = [
            decode(TransactionEvent, line) for line in event_lines(work, args.customers, args.days)
        ]
        server = RedisServer(free_ports(1)[0], work / "redis", binary=ensure_redis_server_binary())
        with server, server.client() as client:
            client.config_set("slowlog-log-slower-than", 0)
            client.config_set("slowlog-max-len", 1_000_000)
            stores = {
                name: ContextStore(
                    client, ContextSettings(namespace=f"v{i}"), limits, create_namespace=True
                )
                for i, (name, limits) in enumerate(VARIANTS.items())
            }
            us: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
            ops: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
            reference: list[float] = []
            for start in tqdm(range(0, len(events), BATCH), desc="batches", unit="batch"):
                batch = events[start : start + BATCH]
                for name, store in stores.items():
                    client.slowlog_reset()
                    store.update_batch(batch)
                    client.eval("return 1", 0)  # type: ignore[no-untyped-call]
                    for entry in client.slowlog_get(1_000_000):
                        words = bytes(entry["command"]).split(b" ")
                        if words[0].lower() == b"eval":
                            reference.append(entry["duration"])
                        elif words[0].lower() == b"evalsha" and words[1].decode() in scripts:
                            script = scripts[words[1].decode()]
                            us[name][script] += entry["duration"]
                            ops[name][script] += int(words[2]) - 1  # KEYS[1] is the marker
            blobs = {}
            for i, name in enumerate(VARIANTS):
                keys = client.scan_iter(f"v{i}:{{*:s", 1000)
                sizes = sorted(int(client.strlen(key)) for key in keys)  # type: ignore[no-untyped-call]
                blobs[name] = {
                    "keys": len(sizes),
                    "median_bytes": sizes[len(sizes) // 2],
                    "p90_bytes": sizes[int(len(sizes) * 0.9)],
                    "max_bytes": sizes[-1],
                }
    eval_us = statistics.median(reference)

    def per_op(name: str, script: str) -> dict[str, Any]:
        us_per_op = us[name][script] / max(ops[name][script], 1)
        return {
            "us_per_op": round(us_per_op, 1),
            "ops": ops[name][script],
            "per_reference": round(us_per_op / eval_us, 1),
        }

    result: dict[str, Any] = {
        "machine": machine(),
        "events": len(events),
        "reference_eval_return_1_us": eval_us,
        "variants": {
            name: {script: per_op(name, script) for script in ("customer", "counterparty")}
            | {"state_blobs": blobs[name]}
            for name in VARIANTS
        },
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
