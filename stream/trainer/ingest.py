"""One label in: context store, join with what the scorer scored, persist the case.

Synchronous Redis I/O, called off the worker's event loop. Every step is idempotent per label
id (the context store's label-derived risk, the case store's ``HSETNX``), so a label processed
again after a crash or a retry changes nothing and is reported as a duplicate. Retriable
errors (:class:`~stream.context.errors.ContextUnavailable`,
:class:`~stream.pipeline.records.RecordsUnavailable`,
:class:`~stream.trainer.errors.CasesUnavailable`) propagate: the caller retries the label.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from schemas import LabelEvent
from stream.context.errors import ContextStateLost
from stream.context.store import ContextStore
from stream.pipeline.records import ScoredRecordStore
from stream.pipeline.retry import INFRASTRUCTURE_ERRORS
from stream.trainer.cases import JoinOutcome, join_labels
from stream.trainer.errors import CasesUnavailable
from stream.trainer.metrics import TrainerMetrics
from stream.trainer.store import CaseStore

log = logging.getLogger(__name__)

# ContextStateLost: the namespace is not marked in use - Redis lost it, or a first start whose
# scorer has not marked it yet. Either way the label waits (nothing was written) until a
# scorer marks it: at its first start, or by an operator's --accept-context-loss.
RETRIABLE = (*INFRASTRUCTURE_ERRORS, ContextStateLost, CasesUnavailable)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass
class RetryReport:
    joined_late: int = 0
    abandoned: int = 0
    waiting: int = 0


class LabelIngestor:
    def __init__(
        self,
        *,
        context: ContextStore,
        records: ScoredRecordStore,
        cases: CaseStore,
        metrics: TrainerMetrics,
        scored_ttl_s: int,
        unjoined_keep_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._context = context
        self._records = records
        self._cases = cases
        self._metrics = metrics
        self._ttl_ms = scored_ttl_s * 1000
        self._keep_ms = int(unjoined_keep_s * 1000)
        self._clock = clock

    def ingest(self, label: LabelEvent, source: str = "") -> JoinOutcome:
        """Apply, join and persist one label; return what became of it."""
        # Every label feeds the counterparty's label-derived risk, joined or not: a chargeback
        # is evidence about the merchant even if the scored record is long gone.
        self._context.apply_labels([label])
        record = self._records.get_batch([label.event_id])[0]
        joined = join_labels([label], [record], self._ttl_ms)
        if joined.cases:
            added = self._cases.add_cases(joined.cases)
            outcome = JoinOutcome.JOINED if added else JoinOutcome.DUPLICATE
        elif joined.unknown:
            if not self._cases.keep_unjoined(label, int(self._clock() * 1000)):
                log.warning("unjoined-label store is full: %s is counted, not kept", label.label_id)
            outcome = JoinOutcome.UNKNOWN
        elif joined.expired:
            outcome = JoinOutcome.EXPIRED
        else:
            outcome = JoinOutcome.MISMATCHED
        self._cases.advance_clock(_ms(label.label_time))
        self._cases.count_outcome(outcome)
        self._metrics.labels.labels(outcome.value).inc()
        if outcome in (JoinOutcome.JOINED, JoinOutcome.DUPLICATE):
            log.debug("label %s (%s) %s", label.label_id, source, outcome.value)
        else:
            # Not dropped silently: each one is named (ids only, no payload) and counted.
            log.info(
                "label %s for event %s at %s: %s",
                label.label_id, label.event_id, source or "-", outcome.value,
            )  # fmt: skip
        return outcome

    def retry_unjoined(self) -> RetryReport:
        """Join the labels that arrived before their event was scored, if it has been since;
        give up on those waiting longer than ``trainer.unjoined_keep_hours``."""
        report = RetryReport()
        pending = self._cases.unjoined()
        if not pending:
            return report
        records = self._records.get_batch([p.label.event_id for p in pending])
        now_ms = int(self._clock() * 1000)
        done: list[str] = []
        for item, record in zip(pending, records, strict=True):
            joined = join_labels([item.label], [record], self._ttl_ms)
            if joined.cases:
                self._cases.add_cases(joined.cases)
                outcome = JoinOutcome.JOINED_LATE
            elif joined.mismatched:
                outcome = JoinOutcome.MISMATCHED
            elif now_ms - item.first_seen_ms >= self._keep_ms:
                outcome = JoinOutcome.ABANDONED
            else:
                report.waiting += 1
                continue
            done.append(item.label.label_id)
            self._cases.count_outcome(outcome)
            self._metrics.labels.labels(outcome.value).inc()
            if outcome is JoinOutcome.JOINED_LATE:
                report.joined_late += 1
            else:
                report.abandoned += 1
                log.info("label %s: %s", item.label.label_id, outcome.value)
        self._cases.forget_unjoined(done)
        return report
