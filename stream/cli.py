"""The `riskstream` command line. Each area owns its sub-commands in its own module; this file
only assembles them, so heavy imports (torch, transformers) happen inside the commands that
need them and `riskstream --help` stays fast."""

from __future__ import annotations

from typing import Annotated

import typer

from stream.alerts.cli import alerts_app
from stream.analyst.cli import analyst
from stream.backtest.cli import backtest_app
from stream.demo import demo
from stream.desk.cli import desk, desk_app
from stream.devenv.cli import app as dev_app
from stream.ingest.cli import data_app
from stream.kafka.cli import topics_app
from stream.logs import configure_logging
from stream.model_cli import model_app
from stream.replay.cli import replay_command
from stream.scorer.cli import scorer
from stream.settings import load_settings
from stream.simulate.cli import simulate
from stream.trainer.cli import trainer, trainer_app

app = typer.Typer(
    name="riskstream",
    help="Streaming real-time fraud and AML detection on Kafka, Redis and Transformers.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)

config_app = typer.Typer(help="Inspect the settings every command reads.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(dev_app, name="dev")
app.add_typer(topics_app, name="topics")
app.add_typer(model_app, name="model")
app.add_typer(alerts_app, name="alerts")
app.add_typer(trainer_app, name="trainer")
app.add_typer(backtest_app, name="backtest")
app.add_typer(desk_app, name="desk")
app.add_typer(data_app, name="data")
app.command("simulate")(simulate)
app.command("demo")(demo)
app.command("replay")(replay_command)

run_app = typer.Typer(
    help="Long-running workers: the scorer, the trainer, the case desk and the simulated "
    "analyst desk.",
    no_args_is_help=True,
)
app.add_typer(run_app, name="run")
run_app.command("scorer")(scorer)
run_app.command("trainer")(trainer)
run_app.command("desk")(desk)
run_app.command("analyst")(analyst)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"riskstream {version('riskstream')}")
        raise typer.Exit()


@app.callback()
def _setup(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Read settings from RISKSTREAM_* environment variables and configure logging."""
    configure_logging(load_settings().log)


@config_app.command("show")
def config_show() -> None:
    """Print the effective settings as JSON, secrets masked."""
    typer.echo(load_settings().model_dump_json(indent=2))


def main() -> None:
    app()


if __name__ == "__main__":  # `python -m stream.cli ...`, as bench/ scripts call it
    main()
