"""``riskstream simulate``: labelled synthetic traffic to files or to Kafka.

Only typer and the config are imported at module level; numpy, pyarrow and the Kafka client
load when the command runs, so ``riskstream --help`` stays fast.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Literal

import orjson
import typer

from stream.simulate.config import SimulationConfig, build_config, parse_day_range
from stream.simulate.errors import DeliveryError, OutputError, SimulationConfigError

_DEFAULTS = SimulationConfig()
_TYPOLOGY_HELP = (
    "card_testing, account_takeover, stolen_card, compromised_terminal, structuring, "
    "mule_fan_in_out, round_tripping, pass_through, dormant_reactivation, high_risk_jurisdiction"
)


def simulate(
    out: Annotated[
        Path | None,
        typer.Option(help="Directory for events/labels/truth files and manifest.json."),
    ] = None,
    kafka: Annotated[
        bool,
        typer.Option(
            "--kafka",
            help="Produce events to the transactions topic and labels to the labels topic "
            "(names and broker from RISKSTREAM_* settings).",
        ),
    ] = False,
    customers: Annotated[int, typer.Option(help="Customers of the simulated bank.")] = (
        _DEFAULTS.customers
    ),
    days: Annotated[int, typer.Option(help="Days to simulate.")] = _DEFAULTS.days,
    start_date: Annotated[
        str, typer.Option(help="First simulated day, YYYY-MM-DD (00:00 UTC).")
    ] = _DEFAULTS.start_date.isoformat(),
    seed: Annotated[int, typer.Option(help="Random seed; same seed, byte-identical output.")] = (
        _DEFAULTS.seed
    ),
    prevalence: Annotated[
        float, typer.Option(help="Target share of suspicious events (0.005 = 0.5%).")
    ] = _DEFAULTS.prevalence,
    business_share: Annotated[
        float, typer.Option(help="Share of customers that are businesses.")
    ] = _DEFAULTS.business_share,
    mix: Annotated[
        str | None,
        typer.Option(
            help="Typology weights as shares of suspicious events, e.g. "
            f"'structuring=2,card_testing=0.5'; unlisted ones keep weight 1. Typologies: "
            f"{_TYPOLOGY_HELP}."
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Typology to leave out (repeatable).")
    ] = None,
    introduce: Annotated[
        list[str] | None,
        typer.Option(
            help="TYPOLOGY@DAY: the typology appears only from that day (0-based; repeatable)."
        ),
    ] = None,
    lookalike_ratio: Annotated[
        float,
        typer.Option(help="Benign look-alike scenarios per suspicious scenario of a typology."),
    ] = _DEFAULTS.lookalike_ratio,
    chargeback_delay_days: Annotated[
        str,
        typer.Option(
            help="Card fraud label delay in days: 5th-95th percentile, log-normal, e.g. 1.5-20."
        ),
    ] = "{:g}-{:g}".format(*_DEFAULTS.chargeback_delay_days),
    case_delay_days: Annotated[
        str, typer.Option(help="AML confirmed-case label delay range in days, e.g. 20-90.")
    ] = "{:g}-{:g}".format(*_DEFAULTS.case_delay_days),
    dormancy_days: Annotated[
        int, typer.Option(help="Silence before a dormant account wakes (capped at 60% of run).")
    ] = _DEFAULTS.dormancy_days,
    warmup_days: Annotated[
        int, typer.Option(help="Clean days before the first suspicious scenario.")
    ] = _DEFAULTS.warmup_days,
    file_format: Annotated[
        Literal["jsonl", "parquet", "both"],
        typer.Option("--format", help="File format(s) written under --out."),
    ] = "jsonl",
    overwrite: Annotated[
        bool, typer.Option(help="Replace the files of an earlier run in --out.")
    ] = False,
    rate: Annotated[
        float | None,
        typer.Option(help="With --kafka: events per second (wall clock); default: flat out."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars on stderr.")] = True,
) -> None:
    """Simulate a bank's payment traffic with injected, labelled fraud and money laundering."""
    if out is None and not kafka:
        raise typer.BadParameter("give --out DIR, --kafka, or both")
    try:
        config = build_config(
            mix=mix,
            exclude=exclude,
            introduce=introduce,
            customers=customers,
            days=days,
            start_date=dt.date.fromisoformat(start_date),
            seed=seed,
            prevalence=prevalence,
            business_share=business_share,
            lookalike_ratio=lookalike_ratio,
            chargeback_delay_days=parse_day_range(chargeback_delay_days),
            case_delay_days=parse_day_range(case_delay_days),
            dormancy_days=dormancy_days,
            warmup_days=warmup_days,
        )
    except (SimulationConfigError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None

    from stream.settings import load_settings
    from stream.simulate.engine import simulate as run
    from stream.simulate.writers import counts, write_files

    sim = run(config, progress=progress)
    summary: dict[str, object] = {"run_tag": config.run_tag, **counts(sim)}
    try:
        if out is not None:
            manifest = write_files(
                sim, out, fmt=file_format, overwrite=overwrite, progress=progress
            )
            summary["out"] = str(out)
            summary["files"] = sorted(manifest["files"])
        if kafka:
            from stream.simulate.produce import produce

            settings = load_settings()
            report = produce(sim, settings, rate=rate, progress=progress)
    except (OutputError, DeliveryError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if kafka:
        summary["kafka"] = {
            "events_topic": settings.topics.transactions,
            "labels_topic": settings.topics.labels,
            "events": report.events,
            "labels": report.labels,
            "seconds": round(report.seconds, 3),
        }
    typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
