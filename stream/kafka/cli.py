"""`riskstream topics create`: create every riskstream topic on the configured cluster
(the docker-compose `topic-init` service runs this once)."""

from __future__ import annotations

from typing import Annotated

import typer

from stream.kafka.topics import (
    DEFAULT_PARTITIONS,
    TRANSACTIONS_PARTITIONS,
    TopicError,
    ensure_topics,
    retention_configs,
    standard_topics,
)
from stream.settings import load_settings

topics_app = typer.Typer(help="Manage riskstream's Kafka topics.", no_args_is_help=True)


@topics_app.command("create")
def create(
    transactions_partitions: Annotated[
        int, typer.Option(min=1, help="Partitions of the transactions topic (scorer parallelism).")
    ] = TRANSACTIONS_PARTITIONS,
    partitions: Annotated[
        int, typer.Option(min=1, help="Partitions of every other topic.")
    ] = DEFAULT_PARTITIONS,
    replication_factor: Annotated[
        int, typer.Option(min=1, help="Replicas per partition (3 in production).")
    ] = 1,
    retention_days: Annotated[
        int, typer.Option(min=1, help="Keep inputs, labels and alerts this long, for replays.")
    ] = 90,
) -> None:
    """Create missing topics (existing ones are left untouched) and list what was created."""
    settings = load_settings()
    counts = standard_topics(
        settings.topics,
        transactions_partitions=transactions_partitions,
        default_partitions=partitions,
    )
    try:
        created = ensure_topics(
            settings.kafka,
            counts,
            replication_factor=replication_factor,
            configs=retention_configs(settings.topics, retention_days),
        )
    except TopicError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from error
    for name in sorted(counts):
        state = "created" if name in created else "exists"
        typer.echo(f"{name:<28} {counts[name]:>3} partitions  {state}")
