"""Training data from simulator output or a bank's imported history, built by the same code
the scorer runs.

    events.jsonl ──► ContextStore.update_batch (real Redis, throwaway namespace) ──► contexts
    labels.jsonl ──► ContextStore.apply_labels, each right before the first event it reaches
    truth.jsonl  ──► the target: each event's true typology (simulator output)
      or labels  ──► the target from labels and the label maturity (``models.targets``)
    contexts ──► split by day ──► NarrativeSpec fitted on the *train* days only ──► narratives

Events are replayed in event-time order, and each label is applied right before the first
event its ``label_time`` reaches (the label-reveal clock replays share, ``stream.context.reveal``)
— so label-derived context (a terminal's chargeback rate, say) only ever reflects what was known
at the time, as in production, and equals what a replay of the same data computes. Fitting
the narrative's bucket edges on train days only keeps validation and test days out of
everything the model sees.

Targets come from ``truth.jsonl`` when there is one (complete ground truth: the simulator's
labels are partial and late by design, and the model is judged on what really happened).
Without it - ``riskstream data import`` output, a bank's history - they come from the labels:
an event's label, or *legitimate* for an unlabelled event older than the label maturity;
younger events are left out of every split (docs/your-data.md, ``models.targets``).

This module is the pure part: reading the files, the targets, the day split, the narratives,
and the cache of computed contexts. The contexts themselves come from the real ContextStore in
Redis, which is the streaming side's: ``stream.datasets`` replays the events through it and
calls into this module (``models`` never imports ``stream``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, Protocol

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from models.errors import DatasetError
from models.examples import NarrativeSet, SplitData, split_by_dates, split_by_day
from models.maturity import observed_label_delay_days
from models.settings import ModelSettings
from models.targets import label_targets
from schemas import DecodeError, LabelEvent, TransactionEvent, Typology, decode
from schemas.features import FEATURE_NAMES, FEATURES_VERSION, ContextFeatures
from schemas.narrative import build_narrative, fit_spec
from schemas.reference import DEFAULT_LABEL_MATURITY_DAYS
from schemas.story import StoryEntry, pack_story, unpack_story

log = logging.getLogger(__name__)

CACHE_DIR_NAME = "narratives"
CONTEXTS_FILE = "contexts.parquet"


def _jsonl(path: Path) -> Iterator[bytes]:
    for _, line in _numbered_jsonl(path):
        yield line


def _numbered_jsonl(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number as an editor shows it, line) of every non-blank line."""
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing: is this `riskstream simulate` or `riskstream data import` output?"
        )
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line.rstrip(b"\n")


def read_truth(path: Path) -> dict[str, Typology]:
    truth: dict[str, Typology] = {}
    for line in _jsonl(path):
        row = orjson.loads(line)
        truth[row["event_id"]] = Typology(row["typology"])
    return truth


_SHOWN_BAD_ROWS = 10


def read_events(path: Path) -> list[TransactionEvent]:
    """The events of a JSONL file, sorted by time. A row that is not a valid event, or repeats
    an event id, is skipped with its line number and reason in the log (the first few; then a
    count): one bad row must not cost the whole dataset, nor hide behind a traceback."""
    events: list[TransactionEvent] = []
    first_line: dict[str, int] = {}
    skipped = 0
    for number, line in _numbered_jsonl(path):
        try:
            event = decode(TransactionEvent, line)
        except DecodeError as exc:
            reason = exc.reason
        else:
            first = first_line.setdefault(event.event_id, number)
            if first == number:
                events.append(event)
                continue
            reason = f"duplicate event_id {event.event_id!r}: first at line {first}"
        skipped += 1
        if skipped <= _SHOWN_BAD_ROWS:
            log.warning("%s line %d skipped: %s", path.name, number, reason)
    if skipped:
        log.warning("%s: %d of %d rows skipped as invalid", path, skipped, skipped + len(events))
    if not events:
        raise DatasetError(f"{path}: no valid events")
    events.sort(key=lambda e: (e.event_time, e.event_id))
    return events


def read_labels(path: Path) -> list[LabelEvent]:
    if not path.is_file():
        return []
    try:
        labels = [decode(LabelEvent, line) for line in _jsonl(path)]
    except DecodeError as exc:
        raise DatasetError(f"{path}: {exc.reason}") from exc
    labels.sort(key=lambda label: label.label_time)
    return labels


def label_maturity_days(labels: list[LabelEvent], quantile: float = 0.75) -> int:
    """Days after which a counterparty's labels have normally arrived, for its label-derived
    risk: the observed delay of ``quantile`` of the labels in whole days, within 1..30 (the
    default when there are no labels). Three in four labels are in by then, so a
    counterparty's "settled" days are nearly complete while still recent (the training
    target's maturity, models/maturity.py, takes a higher quantile for another purpose)."""
    if not labels:
        return DEFAULT_LABEL_MATURITY_DAYS
    delays = ((x.label_time - x.event_time).total_seconds() / 86400 for x in labels)
    return int(observed_label_delay_days((max(0.0, d) for d in delays), quantile, max_days=30))


class Context(Protocol):
    """What a dataset needs of an event's context (``stream.context``'s EventContext has it)."""

    @property
    def event_id(self) -> str: ...

    @property
    def features(self) -> ContextFeatures: ...

    @property
    def story(self) -> tuple[StoryEntry, ...]: ...


class StoredContext(NamedTuple):
    """A context read back from a dataset's cache (:func:`cached_contexts`)."""

    event_id: str
    features: ContextFeatures
    story: tuple[StoryEntry, ...]


TargetSource = Literal["auto", "truth", "labels"]


@dataclass(frozen=True)
class TargetOptions:
    """Where targets come from. ``auto``: the truth file when there is one, else the labels."""

    source: TargetSource = "auto"
    maturity_days: float | None = None
    """Labels only; None: the ``model.target_maturity_days`` setting, else estimated."""
    clock: datetime | None = None
    """Labels only: "now" for the maturity; None: the newest event or label time."""


@dataclass(frozen=True)
class SplitRule:
    """Fractions of the days, or explicit dates (UTC days, half-open ranges); see
    ``models.examples.split_by_dates``."""

    fractions: tuple[float, float] = (0.6, 0.2)
    train_until: date | None = None
    validate_until: date | None = None
    test_until: date | None = None
    gap_days: int = 0

    def __post_init__(self) -> None:
        dates = (self.train_until, self.validate_until)
        if (dates[0] is None) != (dates[1] is None):
            raise DatasetError("a split by dates needs both train-until and validate-until")
        if self.test_until is not None and dates[0] is None:
            raise DatasetError("test-until needs train-until and validate-until")

    def parts(self, days: list[date]) -> dict[str, Any]:
        if self.train_until is not None and self.validate_until is not None:
            return split_by_dates(
                days, self.train_until, self.validate_until, self.test_until,
                gap_days=self.gap_days,
            )  # fmt: skip
        return split_by_day(days, self.fractions, gap_days=self.gap_days)

    def describe(self) -> dict[str, Any]:
        if self.train_until is None:
            return {
                "split": "fractions",
                "fractions": list(self.fractions),
                "gap_days": self.gap_days,
            }
        return {
            "split": "dates",
            "train_until": self.train_until.isoformat(),
            "validate_until": str(self.validate_until),
            "test_until": None if self.test_until is None else self.test_until.isoformat(),
            "gap_days": self.gap_days,
        }


def event_targets(
    data_dir: Path,
    events: list[TransactionEvent],
    labels: list[LabelEvent],
    options: TargetOptions,
    model: ModelSettings,
) -> tuple[list[Typology | None], dict[str, Any]]:
    """Each event's target (None: left out) and how they were made (for ``meta.json``)."""
    truth_path = data_dir / "truth.jsonl"
    source = options.source
    if source == "auto":
        source = "truth" if truth_path.is_file() else "labels"
    if source == "truth":
        truth = read_truth(truth_path)
        missing = [e.event_id for e in events if e.event_id not in truth]
        if missing:
            raise DatasetError(f"{len(missing)} events have no truth row, e.g. {missing[0]}")
        return [truth[e.event_id] for e in events], {"targets": "truth", "file": str(truth_path)}
    if not labels:
        raise DatasetError(
            f"{data_dir} has neither truth.jsonl nor labels: nothing says which events were "
            "fraud (import a bank's labels with `riskstream data import`)"
        )
    maturity, given_as = options.maturity_days, "--maturity-days"
    if maturity is None and model.target_maturity_days is not None:
        maturity, given_as = model.target_maturity_days, "model.target_maturity_days"
    try:
        targets = label_targets(
            [e.event_id for e in events],
            [e.event_time for e in events],
            labels,
            maturity_days=maturity,
            maturity_source=given_as,
            clock=options.clock,
        )
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    if targets.labels_unmatched:
        log.warning("%d labelled events are not in events.jsonl", targets.labels_unmatched)
    return targets.typologies, targets.summary()


def narrative_split(
    events: list[TransactionEvent],
    contexts: Sequence[Context],
    typologies: list[Typology | None],
    *,
    rule: SplitRule,
    label_maturity: int,
    provenance: dict[str, Any],
    progress: bool = True,
) -> SplitData:
    """Events (sorted by time), their contexts (computed with counterparty risk at
    ``label_maturity`` days) and targets -> day-split narratives (see the module docstring);
    events without a target are in no part. ``provenance`` says how the targets were made."""
    days: list[date] = [e.event_time.date() for e in events]
    # Split the days that have events with a target: fractions are of those days (the young
    # days at the end, left out, would otherwise eat into the test part).
    known = np.flatnonzero([t is not None for t in typologies])
    parts = {name: known[rows] for name, rows in rule.parts([days[i] for i in known]).items()}
    for name, rows in parts.items():
        if len(rows) == 0:
            raise DatasetError(
                f"the {name} part holds no events with a target ({_split_words(rule)}): "
                "choose other dates or fractions"
            )

    # The spec's bucket edges come from the train days' features only; it records the label
    # maturity the contexts were computed with, so the scorer computes the same for the model.
    spec = fit_spec(
        (contexts[i].features for i in parts["train"]), label_maturity_days=label_maturity
    )

    rows = np.sort(np.concatenate(list(parts.values())))
    texts, clauses, features = [], [], []
    for row in tqdm(rows.tolist(), desc="narratives", disable=not progress):
        context = contexts[row]
        built = build_narrative(events[row], context.features, spec, context.story)
        texts.append(built.text)
        clauses.append([(c.id, c.text) for c in built.clauses])
        features.append(built.features)
    full = NarrativeSet(
        event_ids=[events[row].event_id for row in rows],
        days=[days[row] for row in rows],
        texts=texts,
        clauses=clauses,
        features=np.asarray(features, dtype=np.float32),
        typologies=[typologies[row] or Typology.LEGITIMATE for row in rows],  # all known here
    )
    position = np.searchsorted(rows, np.arange(len(events)))
    return SplitData(
        train=full.subset(position[parts["train"]]),
        validation=full.subset(position[parts["validation"]]),
        test=full.subset(position[parts["test"]]),
        feature_names=tuple(FEATURE_NAMES),
        narrative_spec=orjson.loads(spec.to_json()),
        provenance={**provenance, **rule.describe(), "events": len(events)},
    )


def _split_words(rule: SplitRule) -> str:
    described = rule.describe()
    return ", ".join(f"{k} {v}" for k, v in described.items() if k != "split" and v is not None)


def save_contexts(path: Path, contexts: Sequence[Context], label_maturity: int) -> None:
    """The replayed contexts as Parquet: replaying Redis is the slow step of a dataset, and
    the narratives can be rebuilt from these (a new narrative version) without it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "event_id": [c.event_id for c in contexts],
            "features": pa.array([list(c.features) for c in contexts], type=pa.list_(pa.float64())),
            "story": pa.array([pack_story(c.story) for c in contexts], type=pa.binary()),
        }
    ).replace_schema_metadata(_context_meta(label_maturity))
    pq.write_table(table, path)


# How labels reached the replayed contexts (``stream.context.reveal``); a cache made under
# another rule is computed again. 2: each label right before the first event reaching it
# (1, unnamed: all labels known by a 1,000-event chunk's first event, before the chunk).
LABEL_CLOCK: Final = "2"


def _context_meta(label_maturity: int) -> dict[str, str]:
    return {
        "features_version": FEATURES_VERSION,
        "label_clock": LABEL_CLOCK,
        "features": ",".join(FEATURE_NAMES),
        "label_maturity_days": str(label_maturity),
    }


def cached_contexts(
    path: Path, events: list[TransactionEvent], label_maturity: int
) -> list[StoredContext] | None:
    """Contexts saved by :func:`save_contexts` for exactly these events, features version and
    label maturity, or None."""
    if not path.is_file():
        return None
    stored = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in (stored.schema.metadata or {}).items()}
    if meta != _context_meta(label_maturity):
        log.warning("ignoring %s: computed by another context version or maturity", path)
        return None
    table = stored.to_pydict()
    if table["event_id"] != [e.event_id for e in events]:
        log.warning("ignoring %s: it was computed for other events", path)
        return None
    return [
        StoredContext(event_id, ContextFeatures._make(row), unpack_story(story))
        for event_id, row, story in zip(
            table["event_id"], table["features"], table["story"], strict=True
        )
    ]
