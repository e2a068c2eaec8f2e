"""Datasets and score tables from event files, through the real context store.

The scorer computes an event's context in Redis (``stream.context``); a dataset or a table of
scores must see the same context, so it replays the events through the same ContextStore, on a
throwaway namespace, applying each label right before the first event its ``label_time``
reaches. That replay is this module, on the label-reveal clock a replay uses
(``stream.context.reveal``): a replay of the same events and labels computes these very
contexts, whatever its batch size. Everything else - reading the files, targets, the day
split, the narratives, the cache of contexts, the scores - is ``models.dataset`` and
``models.scoring``, which know nothing of Redis or the settings.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
from tqdm.auto import tqdm

from models.dataset import (
    CACHE_DIR_NAME,
    CONTEXTS_FILE,
    LABEL_CLOCK,
    Context,
    SplitRule,
    TargetOptions,
    cached_contexts,
    event_targets,
    label_maturity_days,
    narrative_split,
    read_events,
    read_labels,
    save_contexts,
)
from models.errors import DatasetError
from models.examples import SplitData
from models.inference import LoadedModel
from models.scoring import check_features, score_table
from schemas import LabelEvent, TransactionEvent
from stream.context.reveal import LabelSchedule, RevealClock
from stream.context.store import ContextStore, EventContext
from stream.pipeline.messages import epoch_ms_of
from stream.redis_client import connect
from stream.settings import Settings

_CHUNK = 1000
log = logging.getLogger(__name__)


def replay_contexts(
    events: list[TransactionEvent],
    labels: list[LabelEvent],
    settings: Settings,
    *,
    label_maturity: int | None = None,
    progress: bool = True,
    chunk: int = _CHUNK,
) -> list[EventContext]:
    """The EventContext of every event, computed by the real ContextStore on a throwaway
    Redis namespace (deleted afterwards), with counterparty risk at ``label_maturity`` days
    (default: the settings', else derived from ``labels``). ``chunk``: the most events per
    store call (any size gives the same contexts)."""
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
    clock = RevealClock(LabelSchedule(labels, timedelta(0)))
    times = [epoch_ms_of(e.event_time) for e in events]
    try:
        with tqdm(total=len(events), desc="context", unit="event", disable=not progress) as bar:
            start = 0
            while start < len(events):
                # at most `chunk` events, cut where a label is revealed
                taken, due = clock.take(times[start : start + chunk])
                if due:
                    store.apply_labels(due)
                contexts.extend(store.update_batch(events[start : start + taken]))
                start += taken
                bar.update(taken)
    finally:
        store.drop_namespace()
        client.close()
    return contexts


def _contexts(
    cache: Path,
    events: list[TransactionEvent],
    labels: list[LabelEvent],
    settings: Settings,
    label_maturity: int,
    progress: bool,
) -> list[Context]:
    """The contexts cached in ``cache`` for these events and maturity, else replayed (and
    cached)."""
    cached = cached_contexts(cache, events, label_maturity)
    if cached is not None:
        return list(cached)
    replayed = replay_contexts(
        events, labels, settings, label_maturity=label_maturity, progress=progress
    )
    save_contexts(cache, replayed, label_maturity)
    return list(replayed)


def build_split(
    sim_dir: Path,
    settings: Settings,
    *,
    fractions: tuple[float, float] = (0.6, 0.2),
    rule: SplitRule | None = None,
    targets: TargetOptions | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> SplitData:
    """Simulator or import output -> day-split narratives (``models.dataset``); cached as
    Parquet in ``cache_dir`` (default ``sim_dir/narratives``). ``rule`` (default: by
    ``fractions``) says how days split, ``targets`` (default: the truth file if there is one)
    where targets come from; events without a target are in no part."""
    rule = rule or SplitRule(fractions=fractions)
    events = read_events(sim_dir / "events.jsonl")
    labels = read_labels(sim_dir / "labels.jsonl")
    typologies, provenance = event_targets(
        sim_dir, events, labels, targets or TargetOptions(), settings.model
    )
    cache = cache_dir or sim_dir / CACHE_DIR_NAME
    maturity = settings.context.label_maturity_days or label_maturity_days(labels)
    contexts = _contexts(cache / CONTEXTS_FILE, events, labels, settings, maturity, progress)
    split = narrative_split(
        events,
        contexts,
        typologies,
        rule=rule,
        label_maturity=maturity,
        provenance={**provenance, "label_clock": LABEL_CLOCK},
        progress=progress,
    )
    split.save(cache)
    return split


def current_split(sim_dir: Path) -> SplitData | None:
    """The dataset cached beside simulator or import output, if it was built under today's
    label-reveal clock; None if there is none or it must be built again (it is then logged:
    a cache built under another clock holds other contexts)."""
    cache = sim_dir / CACHE_DIR_NAME
    if not (cache / "meta.json").is_file():
        return None
    split = SplitData.load(cache)
    built_under = split.provenance.get("label_clock")
    if built_under == LABEL_CLOCK:
        return split
    log.warning(
        "building the dataset in %s again: it was cached under label-reveal clock %s, not %s",
        cache, built_under or "1", LABEL_CLOCK,
    )  # fmt: skip
    return None


def load_split(path: Path, settings: Settings, *, progress: bool = True) -> SplitData:
    """A dataset cache, or simulator output (built and cached on first use)."""
    if (path / "meta.json").is_file():
        return SplitData.load(path)
    if (path / "events.jsonl").is_file():
        return current_split(path) or build_split(path, settings, progress=progress)
    if (path / CACHE_DIR_NAME / "meta.json").is_file():
        return SplitData.load(path / CACHE_DIR_NAME)
    raise DatasetError(f"{path} is neither simulator output nor a dataset cache")


def score_data(
    model: LoadedModel, data_dir: Path, settings: Settings, *, progress: bool = True
) -> pa.Table:
    """The scores table of every event in ``data_dir/events.jsonl`` (``models.scoring``); the
    replayed contexts are cached like a dataset's."""
    check_features(model)
    events = read_events(data_dir / "events.jsonl")
    labels = read_labels(data_dir / "labels.jsonl")
    # counterparty risk at the maturity the model was trained with, as the scorer computes it
    maturity = (
        model.narrative_spec.get("label_maturity_days")
        or settings.context.label_maturity_days
        or label_maturity_days(labels)
    )
    cache = data_dir / CACHE_DIR_NAME / CONTEXTS_FILE
    contexts = _contexts(cache, events, labels, settings, maturity, progress)
    return score_table(model, data_dir, events, labels, contexts, progress=progress)
