"""`riskstream model list/show/promote/rollback` against a real registry directory."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.classifier import RiskClassifier
from models.registry import Registry
from stream.cli import app


@pytest.fixture
def registry_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("RISKSTREAM_MODEL__REGISTRY_DIR", str(tmp_path / "registry"))
    return Registry(tmp_path / "registry")


def test_list_show_promote_rollback(
    registry_env: Registry, untrained_hybrid: RiskClassifier, save: Callable[..., str]
) -> None:
    runner = CliRunner()
    assert "no models registered" in runner.invoke(app, ["model", "list"]).output
    first = save(registry_env, untrained_hybrid)
    second = save(registry_env, untrained_hybrid, parent=first)

    result = runner.invoke(app, ["model", "promote", first])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["model", "promote", second, "--reason", "better"])
    assert result.exit_code == 0, result.output
    listing = runner.invoke(app, ["model", "list"]).output.splitlines()
    assert [line[0] for line in listing] == [" ", "*"]
    assert f"parent {first}" in listing[1]

    shown = json.loads(runner.invoke(app, ["model", "show"]).output)
    assert shown["version"] == second
    assert shown["champion"] is True
    assert shown["training"]["parent_version"] == first
    assert shown["narrative_version"] == "test-1"

    result = runner.invoke(app, ["model", "rollback"])
    assert result.exit_code == 0, result.output
    assert registry_env.champion() == first
    assert registry_env.history()[-1]["action"] == "rollback"


def test_promote_refuses_a_broken_version(
    registry_env: Registry, untrained_hybrid: RiskClassifier, save: Callable[..., str]
) -> None:
    version = save(registry_env, untrained_hybrid)
    (registry_env.root / version / "extra.pkl").write_bytes(b"\x80\x04K\x01.")
    result = CliRunner().invoke(app, ["model", "promote", version])
    assert result.exit_code == 1
    assert registry_env.champion() is None
    result = CliRunner().invoke(app, ["model", "show", "no-such-version"])
    assert result.exit_code == 1
