"""A scorer whose model cannot be loaded ends at once: exit code 2, one critical line naming the
version and the fix, no traceback, and no Kafka client thread left to keep the process alive.

Each case is a real `riskstream run scorer` process against the session's broker and Redis,
with a registry broken the way an operator's could be."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from models.registry import Registry
from stream.settings import Settings

from .conftest import ScorerProcess

pytestmark = [pytest.mark.integration]

# Generous against a loaded CI machine: the bound is there to fail a hang, not to time a start.
HANG_S = 120


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_registry(trained_registry: Path, tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "registry"
    shutil.copytree(trained_registry, root)
    champion = Registry(root).champion()
    assert champion is not None
    return root, champion


def no_champion(trained_registry: Path, tmp_path: Path) -> tuple[Path, str | None]:
    root = tmp_path / "empty-registry"
    root.mkdir()
    return root, None


def corrupted_weights(trained_registry: Path, tmp_path: Path) -> tuple[Path, str | None]:
    """Weights that are not valid safetensors, with a manifest that vouches for them: the
    digest check passes, parsing the weights fails."""
    root, champion = _copy_registry(trained_registry, tmp_path)
    weights = root / champion / "model.safetensors"
    data = bytearray(weights.read_bytes())
    weights.write_bytes(bytes(data[:8]) + b"{not a header" + bytes(data[21:4096]))
    manifest_path = root / champion / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model.safetensors"] = _sha256(weights)
    manifest_path.write_text(json.dumps(manifest))
    return root, champion


def digest_mismatch(trained_registry: Path, tmp_path: Path) -> tuple[Path, str | None]:
    """One byte of the weights changed after registration."""
    root, champion = _copy_registry(trained_registry, tmp_path)
    weights = root / champion / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return root, champion


def champion_deleted(trained_registry: Path, tmp_path: Path) -> tuple[Path, str | None]:
    root, champion = _copy_registry(trained_registry, tmp_path)
    shutil.rmtree(root / champion)
    return root, champion


@pytest.mark.parametrize(
    "break_registry", [no_champion, corrupted_weights, digest_mismatch, champion_deleted]
)
def test_an_unloadable_champion_ends_the_scorer_with_exit_2_and_one_line(
    break_registry: Callable[[Path, Path], tuple[Path, str | None]],
    scorer_settings: Settings,
    trained_registry: Path,
    tmp_path: Path,
    start_scorer: Callable[..., ScorerProcess],
) -> None:
    root, version = break_registry(trained_registry, tmp_path)
    settings = scorer_settings.model_copy(
        update={"model": scorer_settings.model.model_copy(update={"registry_dir": root})}
    )
    started = time.monotonic()
    scorer = start_scorer(settings)
    assert scorer.process is not None
    try:
        code = scorer.process.wait(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the scorer hung instead of exiting:\n{scorer.log()}")
    took = time.monotonic() - started
    log = scorer.log()
    assert code == 2, log
    assert "Traceback" not in log
    critical = [line for line in log.splitlines() if "CRITICAL" in line]
    assert len(critical) == 1, log
    line = critical[0]
    assert "scorer cannot start" in line
    assert str(root) in line
    if version is None:
        assert "no champion model" in line
        assert "riskstream model train" in line
    else:
        assert f"model {version}" in line
        assert "riskstream model rollback" in line
    # Nothing was consumed or listened to: no Kafka client was left behind to wait on.
    assert "scoring " not in log
    print(f"{break_registry.__name__}: exit 2 after {took:.1f} s")
