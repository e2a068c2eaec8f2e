"""Labelled cases in Redis, so a trainer restart loses nothing; and samples of scored records.

Keys, all under the live namespace and one Redis Cluster hash tag (``{trainer}``) so one Lua
script may touch them together:

* ``<ns>:{trainer}:cases``      hash  label_id → case (JSON)
* ``<ns>:{trainer}:case_index`` zset  ``<s|l>:<label_id>`` scored by arrival sequence number;
  the first letter is the class (suspicious / legitimate), so evicting a case can update the
  class counts without reading it
* ``<ns>:{trainer}:state``      hash  sequence, class counts, last fine-tune, stream clock,
  label outcome totals, shadow start
* ``<ns>:{trainer}:unjoined``   hash  label_id → label whose event was not scored (yet)

Adding cases is one script call: idempotent per label id (``HSETNX``: a redelivered label
changes nothing and is reported as a duplicate), a sequence number per new case (what "new
since the last fine-tune" means), and a size bound (``trainer.max_cases``: the oldest arrivals
go first). Every key carries a TTL (``trainer.cases_ttl_days``), refreshed on each write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, ParamSpec, TypeVar

import numpy as np
import orjson
import redis.exceptions as rexc

from schemas import LabelEvent, decode
from schemas.errors import DecodeError
from stream.context.keys import namespace_pattern
from stream.pipeline.records import ScoredRecord
from stream.redis_client import AnyRedis
from stream.trainer.cases import JoinOutcome, LabelledCase
from stream.trainer.errors import CasesUnavailable

log = logging.getLogger(__name__)

MAX_UNJOINED: Final = 10_000
"""Labels kept for another join attempt, at most (beyond it they are only counted)."""

_P = ParamSpec("_P")
_R = TypeVar("_R")

_RETRIABLE: Final = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.TryAgainError,
    rexc.ClusterDownError,
    rexc.ReadOnlyError,
)

_ADD_CASES: Final = """
local added = 0
for i = 3, #ARGV, 3 do
  local id, cls, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('HSETNX', KEYS[1], id, body) == 1 then
    local seq = redis.call('HINCRBY', KEYS[3], 'seq', 1)
    redis.call('ZADD', KEYS[2], seq, cls .. ':' .. id)
    redis.call('HINCRBY', KEYS[3], cls == 's' and 'suspicious' or 'legitimate', 1)
    added = added + 1
  end
end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[1])
if over > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[2], over)
  for j = 1, #gone, 2 do
    local member = gone[j]
    redis.call('HDEL', KEYS[1], string.sub(member, 3))
    local cls = string.sub(member, 1, 1)
    redis.call('HINCRBY', KEYS[3], cls == 's' and 'suspicious' or 'legitimate', -1)
  end
end
for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ARGV[2]) end
return added
"""

# Keep the largest value seen: labels arrive out of label-time order across partitions.
_ADVANCE_CLOCK: Final = """
local current = tonumber(redis.call('HGET', KEYS[1], 'clock_ms') or '0')
if tonumber(ARGV[1]) > current then redis.call('HSET', KEYS[1], 'clock_ms', ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class TrainerState:
    seq: int = 0
    """Sequence number of the newest stored case."""
    finetune_seq: int = 0
    """``seq`` when the last fine-tune started: cases after it are new."""
    finetune_at_ms: int = 0
    """Wall clock of the last fine-tune's start (0: never)."""
    suspicious: int = 0
    legitimate: int = 0
    clock_ms: int = 0
    """The newest label time seen: the stream's clock."""
    shadow_since_ms: int = 0
    """Wall clock when the trainer put the current shadow challenger in place (0: none)."""
    outcomes: dict[str, int] = field(default_factory=dict)
    """Label outcome totals (joined, duplicate, expired, unknown, mismatched, invalid)."""

    @property
    def new_cases(self) -> int:
        return self.seq - self.finetune_seq


@dataclass(frozen=True)
class UnjoinedLabel:
    label: LabelEvent
    first_seen_ms: int


class CaseStore:
    """Labelled cases and the trainer's state for one namespace (see the module docstring)."""

    def __init__(
        self, client: AnyRedis, namespace: str, *, max_cases: int, ttl_s: int, max_unjoined: int
    ) -> None:
        self._client = client
        base = f"{namespace}:{{trainer}}"
        self.cases_key = f"{base}:cases"
        self.index_key = f"{base}:case_index"
        self.state_key = f"{base}:state"
        self.unjoined_key = f"{base}:unjoined"
        self._max_cases = max_cases
        self._ttl_s = ttl_s
        self._max_unjoined = max_unjoined

    def _guard(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except _RETRIABLE as exc:
            raise CasesUnavailable(f"Redis unavailable for labelled cases: {exc}") from exc

    def _eval(self, script: str, keys: Sequence[str], args: Sequence[bytes | str | int]) -> Any:
        # execute_command: the typed client stubs lack EVAL on RedisCluster, which routes it
        # by its keys (here one hash tag) like any other command.
        return self._guard(self._client.execute_command, "EVAL", script, len(keys), *keys, *args)

    # --- writing ------------------------------------------------------------------------------

    def add_cases(self, cases: Sequence[LabelledCase]) -> int:
        """Store the cases whose label ids are new; return how many were."""
        if not cases:
            return 0
        args: list[bytes | str | int] = [self._max_cases, self._ttl_s]
        for case in cases:
            args += [case.label_id, "s" if case.is_suspicious else "l", case.to_bytes()]
        # EVAL rather than EVALSHA: labels are few, and it works alike on Redis Cluster (the
        # keys share a hash tag) without script-cache bookkeeping.
        keys = (self.cases_key, self.index_key, self.state_key)
        return int(self._eval(_ADD_CASES, keys, args))

    def advance_clock(self, label_time_ms: int) -> None:
        self._eval(_ADVANCE_CLOCK, (self.state_key,), [label_time_ms, self._ttl_s])

    def count_outcome(self, outcome: JoinOutcome, n: int = 1) -> None:
        def count() -> None:
            pipe = self._client.pipeline(transaction=False)
            pipe.hincrby(self.state_key, f"outcome:{outcome.value}", n)
            pipe.expire(self.state_key, self._ttl_s)
            pipe.execute()

        self._guard(count)

    def mark_finetune(self, seq: int, at_ms: int) -> None:
        """A fine-tune started with cases up to ``seq``: later ones count as new."""
        mapping: dict[str | bytes, int] = {"finetune_seq": seq, "finetune_at_ms": at_ms}
        self._guard(lambda: self._client.hset(self.state_key, mapping=mapping))

    def set_shadow_since(self, at_ms: int) -> None:
        self._guard(self._client.hset, self.state_key, "shadow_since_ms", at_ms)

    def keep_unjoined(self, label: LabelEvent, now_ms: int) -> bool:
        """Keep a label whose event has no scored record yet, to try again later; False when
        the bound (``max_unjoined``) is reached and it is not kept (it is still counted)."""

        def keep() -> bool:
            if self._client.hlen(self.unjoined_key) >= self._max_unjoined:
                return False
            body = orjson.dumps(
                {"label": label.model_dump(mode="json", exclude_none=True), "seen": now_ms}
            )
            pipe = self._client.pipeline(transaction=False)
            pipe.hsetnx(self.unjoined_key, label.label_id, body)
            pipe.expire(self.unjoined_key, self._ttl_s)
            pipe.execute()
            return True

        return self._guard(keep)

    def forget_unjoined(self, label_ids: Sequence[str]) -> None:
        if label_ids:
            self._guard(self._client.hdel, self.unjoined_key, *label_ids)

    # --- reading ------------------------------------------------------------------------------

    def state(self) -> TrainerState:
        raw: dict[bytes, bytes] = self._guard(self._client.hgetall, self.state_key)
        values = {k.decode(): int(v) for k, v in raw.items()}
        return TrainerState(
            seq=values.get("seq", 0),
            finetune_seq=values.get("finetune_seq", 0),
            finetune_at_ms=values.get("finetune_at_ms", 0),
            suspicious=values.get("suspicious", 0),
            legitimate=values.get("legitimate", 0),
            clock_ms=values.get("clock_ms", 0),
            shadow_since_ms=values.get("shadow_since_ms", 0),
            outcomes={
                k.removeprefix("outcome:"): v for k, v in values.items() if k.startswith("outcome:")
            },
        )

    def load_cases(self) -> list[tuple[int, LabelledCase]]:
        """Every stored case with its sequence number, oldest arrival first."""

        def load() -> list[tuple[int, LabelledCase]]:
            seqs = {
                member.decode()[2:]: int(score)
                for member, score in self._client.zscan_iter(self.index_key, count=1000)
            }
            out = []
            for label_id, body in self._client.hscan_iter(self.cases_key, count=1000):
                seq = seqs.get(label_id.decode())
                if seq is not None:  # evicted between the two scans
                    out.append((seq, LabelledCase.from_bytes(body)))
            out.sort(key=lambda item: item[0])
            return out

        return self._guard(load)

    def unjoined(self) -> list[UnjoinedLabel]:
        def load() -> list[UnjoinedLabel]:
            out = []
            for label_id, body in self._client.hscan_iter(self.unjoined_key, count=1000):
                data = orjson.loads(body)
                try:
                    label = decode(LabelEvent, orjson.dumps(data["label"]))
                except DecodeError:  # written by this code, so only if the schema moved on
                    log.warning("dropping unreadable unjoined label %s", label_id.decode())
                    self._client.hdel(self.unjoined_key, label_id)
                    continue
                out.append(UnjoinedLabel(label, int(data["seen"])))
            return out

        return self._guard(load)


class RecordSampler:
    """A random sample of the scorer's records, by SCAN over their keys with a bounded budget.

    SCAN walks the key space in hash-table order, which is unrelated to time or customer, so
    the keys it yields first are a fair sample of the records; the budget bounds the cost on
    a namespace holding millions of them."""

    def __init__(self, client: AnyRedis, namespace: str, scan_budget: int) -> None:
        self._client = client
        # Record keys are "<ns>:{e:<event_id>}:scored" (stream.pipeline.records.record_key).
        self._pattern = namespace_pattern(namespace)[: -len("*")] + "{e:*}:scored"
        self._budget = scan_budget

    def sample(self, limit: int, seed: int = 0) -> list[ScoredRecord]:
        def run() -> list[ScoredRecord]:
            keys = list(self._scan())
            if len(keys) > limit:
                rng = np.random.default_rng(seed)
                keys = [keys[i] for i in sorted(rng.permutation(len(keys))[:limit])]
            records: list[ScoredRecord] = []
            for start in range(0, len(keys), 500):
                pipe = self._client.pipeline(transaction=False)
                for key in keys[start : start + 500]:
                    pipe.get(key)
                records.extend(ScoredRecord.from_bytes(raw) for raw in pipe.execute() if raw)
            return records

        try:
            return run()
        except _RETRIABLE as exc:
            raise CasesUnavailable(f"Redis unavailable for scored records: {exc}") from exc

    def _scan(self) -> Iterator[bytes]:
        for n, key in enumerate(self._client.scan_iter(match=self._pattern, count=1000)):
            if n >= self._budget:
                return
            yield key
