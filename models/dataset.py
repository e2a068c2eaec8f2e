"""Training data from simulator output, built by the same code the scorer runs.

    events.jsonl ──► ContextStore.update_batch (real Redis, throwaway namespace) ──► contexts
    labels.jsonl ──► ContextStore.apply_labels, each label once its label_time has passed
    truth.jsonl  ──► the target: each event's true typology
    contexts ──► split by day ──► NarrativeSpec fitted on the *train* days only ──► narratives

Events are replayed in event-time order in chunks, and before each chunk every label whose
``label_time`` is not after the chunk's first event is applied — so label-derived context
(a terminal's chargeback rate, say) only ever reflects what was known at the time, as in
production. Fitting the narrative's bucket edges on train days only keeps validation and test
days out of everything the model sees.

Targets come from ``truth.jsonl`` (complete ground truth) rather than from the labels, which
are partial and late by design: the model is judged on what really happened.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from models.errors import DatasetError
from models.examples import NarrativeSet, SplitData, split_by_day
from schemas import DecodeError, LabelEvent, TransactionEvent, Typology, decode
from stream.context.features import FEATURE_NAMES, FEATURES_VERSION, ContextFeatures
from stream.context.store import ContextStore, EventContext
from stream.context.story import pack_story, unpack_story
from stream.narrative import build_narrative, fit_spec
from stream.redis_client import connect
from stream.settings import DEFAULT_LABEL_MATURITY_DAYS, Settings

log = logging.getLogger(__name__)

_CHUNK = 1000
CACHE_DIR_NAME = "narratives"
CONTEXTS_FILE = "contexts.parquet"


def _jsonl(path: Path) -> Iterator[bytes]:
    for _, line in _numbered_jsonl(path):
        yield line


def _numbered_jsonl(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number as an editor shows it, line) of every non-blank line."""
    if not path.is_file():
        raise DatasetError(f"{path} is missing: is this a `riskstream simulate` output?")
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
    """Days after which an event's label has normally arrived, from the labels' observed delays:
    their ``quantile`` rounded up to whole days, within 1..30 (the default when there are no
    labels). Three in four labels are in by then, so a counterparty's "settled" days are
    nearly complete while still recent."""
    if not labels:
        return DEFAULT_LABEL_MATURITY_DAYS
    delays = np.array([(x.label_time - x.event_time).total_seconds() / 86400 for x in labels])
    return int(min(30, max(1, math.ceil(float(np.quantile(delays, quantile))))))


def replay_contexts(
    events: list[TransactionEvent],
    labels: list[LabelEvent],
    settings: Settings,
    *,
    label_maturity: int | None = None,
    progress: bool = True,
) -> list[EventContext]:
    """The EventContext of every event, computed by the real ContextStore on a throwaway
    Redis namespace (deleted afterwards), with counterparty risk at ``label_maturity`` days
    (default: the settings', else derived from ``labels``)."""
    namespace = f"dataset-{secrets.token_hex(4)}"
    context_settings = settings.context.model_copy(update={"namespace": namespace})
    client = connect(settings.redis)
    store = ContextStore(
        client,
        context_settings,
        create_namespace=True,
        label_maturity_days=label_maturity
        or settings.context.label_maturity_days
        or label_maturity_days(labels),
    )
    contexts: list[EventContext] = []
    next_label = 0
    try:
        for start in tqdm(
            range(0, len(events), _CHUNK), desc="context", unit="chunk", disable=not progress
        ):
            chunk = events[start : start + _CHUNK]
            known = next_label
            while known < len(labels) and labels[known].label_time <= chunk[0].event_time:
                known += 1
            if known > next_label:
                store.apply_labels(labels[next_label:known])
                next_label = known
            contexts.extend(store.update_batch(chunk))
    finally:
        store.drop_namespace()
        client.close()
    return contexts


def build_split(
    sim_dir: Path,
    settings: Settings,
    *,
    fractions: tuple[float, float] = (0.6, 0.2),
    cache_dir: Path | None = None,
    progress: bool = True,
) -> SplitData:
    """Simulator output → day-split narratives (see the module docstring); cached as Parquet
    in ``cache_dir`` (default ``sim_dir/narratives``)."""

    events = read_events(sim_dir / "events.jsonl")
    truth = read_truth(sim_dir / "truth.jsonl")
    missing = [e.event_id for e in events if e.event_id not in truth]
    if missing:
        raise DatasetError(f"{len(missing)} events have no truth row, e.g. {missing[0]}")
    cache = cache_dir or sim_dir / CACHE_DIR_NAME
    labels = read_labels(sim_dir / "labels.jsonl")
    maturity = settings.context.label_maturity_days or label_maturity_days(labels)
    contexts = cached_contexts(cache / CONTEXTS_FILE, events, maturity)
    if contexts is None:
        contexts = replay_contexts(
            events, labels, settings, label_maturity=maturity, progress=progress
        )
        save_contexts(cache / CONTEXTS_FILE, contexts, maturity)
    days: list[date] = [e.event_time.date() for e in events]
    parts = split_by_day(days, fractions)

    # The spec's bucket edges come from the train days' features only; it records the label
    # maturity the contexts were computed with, so the scorer computes the same for the model.
    spec = fit_spec((contexts[i].features for i in parts["train"]), label_maturity_days=maturity)

    texts, clauses, features = [], [], []
    for event, context in tqdm(
        zip(events, contexts, strict=True),
        total=len(events),
        desc="narratives",
        disable=not progress,
    ):
        built = build_narrative(event, context, spec)
        texts.append(built.text)
        clauses.append([(c.id, c.text) for c in built.clauses])
        features.append(built.features)
    full = NarrativeSet(
        event_ids=[e.event_id for e in events],
        days=days,
        texts=texts,
        clauses=clauses,
        features=np.asarray(features, dtype=np.float32),
        typologies=[truth[e.event_id] for e in events],
    )
    split = SplitData(
        train=full.subset(parts["train"]),
        validation=full.subset(parts["validation"]),
        test=full.subset(parts["test"]),
        feature_names=tuple(FEATURE_NAMES),
        narrative_spec=orjson.loads(spec.to_json()),
    )
    split.save(cache)
    return split


def save_contexts(path: Path, contexts: list[EventContext], label_maturity: int) -> None:
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


def _context_meta(label_maturity: int) -> dict[str, str]:
    return {
        "features_version": FEATURES_VERSION,
        "features": ",".join(FEATURE_NAMES),
        "label_maturity_days": str(label_maturity),
    }


def cached_contexts(
    path: Path, events: list[TransactionEvent], label_maturity: int
) -> list[EventContext] | None:
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
        EventContext(event_id, ContextFeatures._make(row), False, unpack_story(story))
        for event_id, row, story in zip(
            table["event_id"], table["features"], table["story"], strict=True
        )
    ]


def load_split(path: Path, settings: Settings, *, progress: bool = True) -> SplitData:
    """A dataset cache, or simulator output (built and cached on first use)."""
    if (path / "meta.json").is_file():
        return SplitData.load(path)
    if (path / CACHE_DIR_NAME / "meta.json").is_file():
        return SplitData.load(path / CACHE_DIR_NAME)
    if (path / "events.jsonl").is_file():
        return build_split(path, settings, progress=progress)
    raise DatasetError(f"{path} is neither simulator output nor a dataset cache")
