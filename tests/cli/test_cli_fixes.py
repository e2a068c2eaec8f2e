"""The command-line details a new user trips over: --version, machine-readable output,
validated options, help texts that say what they mean."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from stream.cli import app
from stream.settings import Settings, to_env

runner = CliRunner()


def test_version_prints_the_installed_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"riskstream {version('riskstream')}"


@pytest.mark.parametrize(
    ("command", "codes"),
    [(["run", "scorer"], ("0 ", "1 ", "2 ", "3 ")), (["run", "trainer"], ("0 ", "2 ", "3 "))],
)
def test_worker_help_lists_the_exit_codes(command: list[str], codes: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    text = result.output
    assert "Exit codes:" in text
    exit_lines = text.split("Exit codes:", 1)[1].splitlines()
    for code in codes:
        assert any(line.strip().startswith(code) for line in exit_lines), (code, text)


def test_model_eval_refuses_an_unknown_split(tmp_path: Path) -> None:
    result = runner.invoke(app, ["model", "eval", "--data", str(tmp_path), "--split", "tset"])
    assert result.exit_code == 2
    assert "tset" in result.output
    assert "train" in result.output
    assert "validation" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_model_list_as_json_on_an_empty_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISKSTREAM_HOME", str(tmp_path))
    result = runner.invoke(app, ["model", "list", "--json"])
    assert result.exit_code == 0
    assert orjson.loads(result.output) == []


def test_alerts_tail_says_which_clock_from_uses() -> None:
    result = runner.invoke(app, ["alerts", "tail", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Kafka timestamp" in text
    assert "not the event time" in text


@pytest.mark.integration
def test_trainer_status_for_people_and_as_json(
    test_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in to_env(test_settings).items():
        monkeypatch.setenv(name, value)
    as_json = runner.invoke(app, ["trainer", "status", "--json"])
    assert as_json.exit_code == 0, as_json.output
    state = orjson.loads(as_json.stdout)
    assert state["cases"] == {"suspicious": 0, "legitimate": 0}
    assert state["champion"] is None
    readable = runner.invoke(app, ["trainer", "status"])
    assert readable.exit_code == 0, readable.output
    assert readable.stdout.startswith("cases         0 suspicious, 0 legitimate")
    assert "champion      none" in readable.stdout
    assert "{" not in readable.stdout


def _commands(group: typer.Typer, prefix: str = "") -> list[str]:
    """Every command path (``model train``, ``demo``) of a Typer app."""
    found = [f"{prefix}{c.name}" for c in group.registered_commands if c.name]
    for sub in group.registered_groups:
        assert sub.typer_instance is not None
        assert sub.name
        found += _commands(sub.typer_instance, f"{prefix}{sub.name} ")
    return found


def test_every_command_is_in_the_readme_table() -> None:
    """The README's "What is in the box" names every command: a row's first cell lists
    `riskstream GROUP a / b / c` (or several `riskstream ...` forms)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    cells = [line.split("|")[1] for line in readme.splitlines() if line.startswith("| `riskstream")]
    forms = [form for cell in cells for form in cell.split("`") if form.startswith("riskstream ")]
    listed = set()
    for form in forms:
        group, *rest = form.split()[1:]
        if "/" in rest:  # `riskstream model train / eval / list`
            listed.update(f"{group} {name}" for name in rest if name != "/")
        else:
            listed.add(" ".join([group, *rest]))
    missing = [c for c in _commands(app) if c not in listed]
    assert missing == [], f"commands missing from the README table: {missing}"
