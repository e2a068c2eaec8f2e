"""`home` is decided once and is the same from every working directory; RISKSTREAM_HOME moves it.

The bug this pins: with `home: .riskstream` (relative), `riskstream dev status` run from
another directory said Kafka was stopped while it ran, and `riskstream model list` found no
model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from stream.settings import Settings, load_settings, to_env


def test_the_default_home_is_per_user_and_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RISKSTREAM_HOME", raising=False)
    monkeypatch.delenv("RISKSTREAM_MODEL__REGISTRY_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    seen = set()
    for directory in (tmp_path / "a", tmp_path / "b"):
        directory.mkdir()
        monkeypatch.chdir(directory)
        settings = load_settings()
        seen.add((settings.home, settings.model.registry_dir))
    assert seen == {
        (tmp_path / "user" / ".riskstream", tmp_path / "user" / ".riskstream" / "registry")
    }


def test_a_relative_home_is_resolved_once_against_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RISKSTREAM_HOME", "state")
    settings = load_settings()
    monkeypatch.chdir("/")
    assert settings.home == tmp_path / "state"
    assert settings.model.registry_dir == tmp_path / "state" / "registry"
    # a child process started from anywhere gets the same absolute places
    env = to_env(settings)
    assert env["RISKSTREAM_HOME"] == str(tmp_path / "state")
    assert env["RISKSTREAM_MODEL__REGISTRY_DIR"] == str(tmp_path / "state" / "registry")


def test_a_relative_registry_is_under_home_and_an_absolute_one_is_kept(tmp_path: Path) -> None:
    assert Settings(home=tmp_path, model={"registry_dir": "models"}).model.registry_dir == (
        tmp_path / "models"
    )
    elsewhere = tmp_path / "elsewhere"
    assert (
        Settings(home=tmp_path, model={"registry_dir": elsewhere}).model.registry_dir == elsewhere
    )


def _riskstream(cwd: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        cwd=cwd, env=env, capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    return done.stdout.decode()


@pytest.mark.integration
def test_commands_find_the_same_registry_from_any_directory(
    trained_registry: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(trained_registry, home / "registry")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKSTREAM_")}
    env["RISKSTREAM_HOME"] = str(home)
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    listings = [
        orjson.loads(_riskstream(cwd, env, "model", "list", "--json"))
        for cwd in (tmp_path, elsewhere, Path("/"))
    ]
    assert listings[0] == listings[1] == listings[2]
    assert [row["version"] for row in listings[0]] == sorted(
        p.name for p in (home / "registry").iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    shown = orjson.loads(_riskstream(elsewhere, env, "config", "show"))
    assert shown["home"] == str(home)
    assert shown["model"]["registry_dir"] == str(home / "registry")
