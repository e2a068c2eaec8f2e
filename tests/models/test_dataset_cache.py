"""The dataset cached beside simulator output is used only if it was built under today's
label-reveal clock (``stream.context.reveal``): a cache of another clock holds other contexts."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from models.dataset import CACHE_DIR_NAME, CONTEXTS_FILE, LABEL_CLOCK, cached_contexts, read_events
from models.settings import ModelSettings
from stream.datasets import load_split
from stream.settings import RedisSettings, Settings
from stream.simulate.config import SimulationConfig
from stream.simulate.engine import simulate
from stream.simulate.writers import write_files

pytestmark = pytest.mark.integration


def test_a_dataset_cached_under_another_label_clock_is_built_again(
    tmp_path: Path, redis_settings: RedisSettings
) -> None:
    sim_dir = tmp_path / "sim"
    write_files(simulate(SimulationConfig(customers=60, days=8, seed=3)), sim_dir, progress=False)
    settings = Settings(
        home=tmp_path / "home",
        redis=redis_settings,
        model=ModelSettings(registry_dir=tmp_path / "registry", device="cpu"),
    )
    cache = sim_dir / CACHE_DIR_NAME
    first = load_split(sim_dir, settings, progress=False)
    assert first.provenance["label_clock"] == LABEL_CLOCK
    meta_path = cache / "meta.json"

    # the cache is used as it is while it is current
    meta_path.write_bytes(meta_path.read_bytes())
    before = meta_path.stat().st_mtime_ns
    assert load_split(sim_dir, settings, progress=False).train.event_ids == first.train.event_ids
    assert meta_path.stat().st_mtime_ns == before

    # a cache of the first clock (which named none) is built again, and the same again
    meta = orjson.loads(meta_path.read_bytes())
    del meta["provenance"]["label_clock"]
    meta_path.write_bytes(orjson.dumps(meta))
    again = load_split(sim_dir, settings, progress=False)
    assert orjson.loads(meta_path.read_bytes())["provenance"]["label_clock"] == LABEL_CLOCK
    assert again.train.event_ids == first.train.event_ids

    # so are contexts cached under the first clock
    contexts = cache / CONTEXTS_FILE
    events = read_events(sim_dir / "events.jsonl")
    maturity = int(pq.read_schema(contexts).metadata[b"label_maturity_days"])
    assert cached_contexts(contexts, events, maturity) is not None
    table = pq.read_table(contexts)
    old = {k: v for k, v in table.schema.metadata.items() if k != b"label_clock"}
    pq.write_table(table.replace_schema_metadata(old), contexts)
    assert cached_contexts(contexts, events, maturity) is None
