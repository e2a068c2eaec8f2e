"""Scorers follow the registry's shadow pointer: a challenger put in shadow is loaded in the
background and handed to the scoring loop between batches; clearing the pointer stops it."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np

from models.backbones import load_tokenizer
from models.inference import LoadedModel, load_model
from models.registry import Registry, TrainingRecord
from models.settings import ModelSettings
from models.thresholds import calibrate
from models.train import build_model
from models.train_config import preset
from stream.scorer.model_source import ChampionWatcher
from stream.settings import Settings

T = TypeVar("T")


def register(registry: Registry, name: str) -> str:
    return registry.save(
        model=build_model(preset("tiny", hybrid=False), ()),
        tokenizer=load_tokenizer(),
        narrative_spec={},
        training=TrainingRecord(
            created_at=datetime.now(UTC),
            parent_version=None,
            narrative_version="n1",
            data_window={},
            seed=0,
            train_config={},
        ),
        metrics={},
        thresholds=calibrate(np.linspace(0, 1, 50), np.arange(50) > 40),
        name=name,
    )


def eventually(probe: Callable[[], T | None], timeout_s: float = 60) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_the_watcher_follows_the_shadow_pointer(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    champion, challenger = register(registry, "champion"), register(registry, "challenger")
    registry.promote(champion)
    settings = Settings(model=ModelSettings(registry_dir=tmp_path))

    def loader(version: str) -> LoadedModel:
        return load_model(settings.model, version)

    watcher = ChampionWatcher(
        settings, loader, check_interval_s=0.05, listen_for_notices=False, follow_shadow=True
    ).start()
    try:
        assert watcher.current.version == champion
        time.sleep(0.3)
        assert watcher.swap_shadow_if_ready() is None  # no shadow: nothing changes

        registry.set_shadow(challenger)
        (shadow,) = eventually(watcher.swap_shadow_if_ready)
        assert shadow is not None
        assert shadow.version == challenger
        assert watcher.swap_shadow_if_ready() is None  # handed over once

        registry.set_shadow(None)
        assert eventually(watcher.swap_shadow_if_ready) == (None,)

        registry.set_shadow(challenger)
        eventually(watcher.swap_shadow_if_ready)
        registry.promote(challenger)  # promotion clears the shadow and swaps the champion
        assert eventually(watcher.swap_if_ready).version == challenger
        assert eventually(watcher.swap_shadow_if_ready) == (None,)
    finally:
        watcher.stop()


def test_a_watcher_told_not_to_follow_ignores_the_pointer(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    champion, challenger = register(registry, "champion"), register(registry, "challenger")
    registry.promote(champion)
    registry.set_shadow(challenger)
    settings = Settings(model=ModelSettings(registry_dir=tmp_path))
    watcher = ChampionWatcher(
        settings,
        lambda v: load_model(settings.model, v),
        check_interval_s=0.05,
        listen_for_notices=False,
    ).start()
    try:
        time.sleep(0.5)
        assert watcher.swap_shadow_if_ready() is None
    finally:
        watcher.stop()
