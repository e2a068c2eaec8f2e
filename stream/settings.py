"""The one typed settings object every riskstream command reads.

Values come from the environment with the prefix ``RISKSTREAM_`` and ``__`` between nested
sections, e.g. ``RISKSTREAM_KAFKA__BOOTSTRAP_SERVERS`` or ``RISKSTREAM_SCORER__BATCH_MAX_SIZE``.
Nothing else in the code base reads ``os.environ`` for configuration.

Secrets are :class:`pydantic.SecretStr`: they print as ``**********`` in logs, reprs and
``riskstream config show``; only the client-config renderers reveal them, straight into the client.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.settings import ModelSettings
from schemas.reference import DEFAULT_LABEL_MATURITY_DAYS

# Per user, not per working directory: every command, run from any directory, finds the same
# broker, Redis, model registry and runs. RISKSTREAM_HOME moves it (containers, tests, several
# checkouts side by side).
DEFAULT_HOME = Path("~/.riskstream")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    """How to reach Kafka; rendered into a librdkafka config by :meth:`client_config`."""

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    client_id: str = Field("riskstream", description="Client id prefix shown in broker logs.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security.protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when the protocol is SASL_*."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret).")
    ssl_ca_location: Path | None = Field(None, description="CA bundle to verify the brokers.")
    ssl_certificate_location: Path | None = Field(None, description="Client certificate (mTLS).")
    ssl_key_location: Path | None = Field(None, description="Client private key (mTLS).")
    ssl_key_password: SecretStr | None = Field(None, description="Password of the client key.")
    ssl_endpoint_identification: bool = Field(
        True, description="Verify the broker host name against its certificate."
    )

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and (
            self.sasl_mechanism is None or self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError(
                "kafka.security_protocol is SASL_* but sasl_mechanism, sasl_username or "
                "sasl_password is missing"
            )
        return self

    def client_config(self) -> dict[str, Any]:
        """The librdkafka properties shared by producers, consumers and admin clients."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            config["ssl.ca.location"] = str(self.ssl_ca_location)
        if self.ssl_certificate_location:
            config["ssl.certificate.location"] = str(self.ssl_certificate_location)
        if self.ssl_key_location:
            config["ssl.key.location"] = str(self.ssl_key_location)
        if self.ssl_key_password:
            config["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        if self.security_protocol in ("SSL", "SASL_SSL"):
            config["ssl.endpoint.identification.algorithm"] = (
                "https" if self.ssl_endpoint_identification else "none"
            )
        return config


class TopicSettings(_Section):
    """Topic names. Defaults follow the design; override to run side by side."""

    transactions: str = Field("transactions", description="Input payment events.")
    dlq: str = Field("transactions.dlq", description="Dead letters: original bytes + error.")
    alerts: str = Field("risk.alerts", description="Alerts for risk teams.")
    alerts_shadow: str = Field("risk.alerts.shadow", description="Alerts of a shadow challenger.")
    scores: str = Field("risk.scores", description="Every score, when scorer.emit_scores is on.")
    labels: str = Field("risk.labels", description="Analyst dispositions and chargebacks.")
    models: str = Field("risk.models", description="Model promotion notices.")


class RedisSettings(_Section):
    """How to reach Redis; AUTH and TLS are optional, Redis Cluster is supported."""

    url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis:// or rediss:// URL; put the password in `password`, not here.",
    )
    username: str | None = Field(None, description="ACL user name (Redis 6+).")
    password: SecretStr | None = Field(None, description="AUTH password (secret).")
    cluster: bool = Field(False, description="Connect with the Redis Cluster client.")
    ssl_ca_certs: Path | None = Field(None, description="CA bundle for rediss:// connections.")
    ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    ssl_keyfile: Path | None = Field(None, description="Client key (mutual TLS).")
    ssl_check_hostname: bool = Field(True, description="Verify the server host name.")
    socket_timeout_s: float = Field(5.0, gt=0, description="Per-command socket timeout.")

    @property
    def uses_tls(self) -> bool:
        return self.url.startswith("rediss://")

    def safe_url(self) -> str:
        """The URL with any embedded password masked, for logs."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


class ContextSettings(_Section):
    """Rolling context kept in Redis (see stream/context)."""

    namespace: str = Field(
        "live",
        pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="Key prefix; backtests use their own so they never touch live state.",
    )
    ttl_days: int = Field(35, ge=1, le=400, description="TTL of every context key.")
    out_of_order_tolerance_s: int = Field(
        3600, ge=0, description="Events older than the customer's newest by more are 'late'."
    )
    hash_key: SecretStr | None = Field(
        None,
        description="Secret key of the hashes naming counterparties, devices and event ids in "
        "the context (keyed BLAKE2b: ids chosen to collide cannot steer distinct counts). Set "
        "a random value per deployment and keep it within a namespace (secret). Unset: a public "
        "development key, and the scorer warns.",
    )
    label_maturity_days: int | None = Field(
        None,
        ge=1,
        le=30,
        description="Counterparty risk counts only events at least this many days old, whose "
        "fraud labels have normally arrived. None: the model's own (stored with its narrative "
        "spec; a dataset derives it from its labels' observed delays), else "
        f"{DEFAULT_LABEL_MATURITY_DAYS} days.",
    )
    compromise_min_frauds: int = Field(
        2,
        ge=1,
        description="A point (terminal, merchant, account) counts as confirmed compromised once "
        "this many of its payments of the last 30 days are labelled fraud...",
    )
    compromise_min_share: float = Field(
        0.01, ge=0, le=1, description="...and they are at least this share of those payments."
    )
    exposure_before_days: float = Field(
        7.0,
        ge=0,
        le=30,
        description="Cards that paid at a compromised point from this long before a labelled "
        "fraud there until the label arrived count as exposed.",
    )
    exposure_window_days: int = Field(
        60, ge=1, le=365, description="A card's exposure counts for this long after its payment."
    )
    story_events: int = Field(
        16,
        ge=1,
        le=64,
        description="Events each customer's story remembers (the narrative tells the newest of "
        "them that fit its length). Fixed within a namespace, like the context's other bounds.",
    )


class ScorerSettings(_Section):
    """The streaming scorer (`riskstream run scorer`)."""

    group_id: str = Field("riskstream-scorer", description="Kafka consumer group.")
    batch_max_size: int = Field(256, ge=1, le=8192, description="Events per micro-batch, at most.")
    batch_max_wait_ms: int = Field(
        50, ge=0, description="Longest wait to fill a batch once its first event arrived."
    )
    delivery: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once", description="exactly_once uses Kafka transactions."
    )
    transactional_id: str = Field(
        "riskstream-scorer", description="Prefix of the transactional.id (exactly_once only)."
    )
    emit_scores: bool = Field(False, description="Also write every score to topics.scores.")
    scored_ttl_days: int = Field(
        90, ge=1, description="How long what was scored is kept for joining late labels."
    )
    metrics_host: str = Field("127.0.0.1", description="Bind address of /metrics and /health.")
    metrics_port: int = Field(9464, ge=0, le=65535, description="0 picks a free port.")
    shutdown_timeout_s: float = Field(30.0, gt=0, description="Bound on a graceful shutdown.")
    shadow_model: str | None = Field(
        None, description="Challenger version that also scores; alerts go to the shadow topic."
    )
    producer_queue_max_messages: int = Field(
        100_000,
        ge=1,
        description="Messages the producer may hold unacknowledged; when full, scoring waits "
        "(backpressure), nothing is dropped.",
    )
    event_time_max_ahead_s: int = Field(
        3600,
        ge=0,
        description="Events dated more than this after their message's processing clock (its "
        "broker timestamp, at most the time the scorer read it) are dead-lettered: one event "
        "dated years ahead would make every later event of its customer 'late'.",
    )
    event_time_max_behind_s: int | None = Field(
        None,
        ge=0,
        description="Events dated more than this before the processing clock are dead-lettered; "
        "None: no bound (backfills, and simulated history streamed today, are scored).",
    )


class TrainerSettings(_Section):
    """The feedback-loop worker (`riskstream run trainer`); see docs/feedback-loop.md."""

    group_id: str = Field("riskstream-trainer", description="Kafka consumer group.")
    finetune_every_labels: int = Field(
        500, ge=1, description="Fine-tune after this many new labelled cases (joined labels)."
    )
    finetune_every_minutes: float = Field(
        60.0, gt=0, description="...or after this long, if at least one case is new."
    )
    min_labels_per_class: int = Field(
        20, ge=1, description="Guardrail: suspicious and legitimate labels stored before training."
    )
    min_holdout_per_class: int = Field(
        5, ge=1, description="Guardrail: suspicious and legitimate cases the holdout must hold."
    )
    replay_champion_data: bool = Field(
        True,
        description="Replay the champion's stored sample of its training data in each "
        "fine-tune (replay.parquet in its registry version), so typologies absent from recent "
        "cases are not forgotten.",
    )
    replay_buffer_size: int = Field(
        20_000, ge=0, description="Older cases replayed in each fine-tune, to avoid forgetting."
    )
    max_cases: int = Field(
        50_000, ge=100, description="Labelled cases kept in Redis at most (oldest go first)."
    )
    cases_ttl_days: int = Field(180, ge=1, description="TTL of the stored cases.")
    unjoined_keep_hours: float = Field(
        24.0, gt=0, description="How long a label whose event was not (yet) scored is retried."
    )
    holdout_share: float = Field(
        0.25, gt=0, lt=1, description="Latest share of suspicious cases: the decision holdout."
    )
    validation_share: float = Field(
        0.15, gt=0, lt=1, description="The share before: early stopping, thresholds."
    )
    negative_maturity_days: float = Field(
        7.0, ge=0, description="Unlabelled scored events older than this count as legitimate."
    )
    max_presumed_negatives: int = Field(
        4000, ge=0, description="Presumed-legitimate scored events sampled per fine-tune."
    )
    records_scan_budget: int = Field(
        200_000, ge=1000, description="Scored-record keys scanned per sample, at most."
    )
    finetune_steps: int = Field(300, ge=1, description="Optimizer steps of one fine-tune.")
    finetune_learning_rate: float | None = Field(
        None, gt=0, description="Peak LR; default the champion's own training peak LR."
    )
    finetune_batch_size: int = Field(32, ge=1)
    finetune_threads: int = Field(1, ge=1, description="torch threads of the fine-tune process.")
    finetune_seed: int = Field(0, description="Seed of every random draw of a fine-tune.")
    challenger_init: Literal["champion", "random"] = Field(
        "champion",
        description="champion: fine-tune its weights. random: fresh weights - only useful to "
        "exercise the rejection path (a deliberately bad challenger).",
    )
    min_improvement: float = Field(
        0.0, ge=0, description="Challenger must beat the champion's metric by more than this."
    )
    shadow_mode: bool = Field(
        False, description="A winning challenger first scores in shadow, then is re-judged."
    )
    shadow_minutes: float = Field(60.0, gt=0, description="Time in shadow before the re-check.")
    check_every_s: float = Field(10.0, gt=0, description="How often the trigger is checked.")
    drift_every_minutes: float = Field(10.0, gt=0, description="How often drift is measured.")
    drift_sample_size: int = Field(
        3000, ge=100, description="Recent scored events sampled for drift and calibration."
    )
    drift_window_hours: float = Field(
        24.0, gt=0, description="'Recent' traffic: event times this close to the newest."
    )
    promotion_metric: Literal["average_precision", "roc_auc"] = Field(
        "average_precision", description="What the challenger must improve on the holdout."
    )
    max_precision_loss: float = Field(
        0.02, ge=0, le=1, description="Allowed drop of precision at the alert threshold."
    )
    metrics_host: str = Field("127.0.0.1", description="Bind address of /metrics.")
    metrics_port: int = Field(9465, ge=0, le=65535, description="0 picks a free port.")
    shutdown_timeout_s: float = Field(30.0, gt=0, description="Bound on a graceful shutdown.")


class DeskSettings(_Section):
    """The analyst case desk (`riskstream run desk`); see docs/desk.md."""

    database_url: str = Field(
        "postgresql+psycopg://riskstream@127.0.0.1:5432/riskstream",
        description="SQLAlchemy URL of the desk's PostgreSQL database; put the password in "
        "`database_password`, not here.",
    )
    database_password: SecretStr | None = Field(
        None, description="Password of the database user (secret)."
    )
    host: str = Field("127.0.0.1", description="Bind address of the web server.")
    port: int = Field(8088, ge=0, le=65535, description="Web server port; 0 picks a free one.")
    session_minutes: float = Field(
        480.0, gt=0, description="A login session expires this long after sign-in."
    )
    secure_cookies: bool = Field(
        False, description="Send the session cookie over HTTPS only (set behind a TLS proxy)."
    )
    intake_group_id: str = Field("riskstream-desk", description="Kafka group of the intake.")
    intake_batch_max: int = Field(
        500, ge=1, le=10_000, description="Alerts stored per database transaction, at most."
    )
    relay_batch_max: int = Field(
        200, ge=1, le=10_000, description="Outbox rows published per round, at most."
    )
    relay_idle_s: float = Field(
        0.5, gt=0, description="How long the relay sleeps when the outbox is empty."
    )
    page_size: int = Field(50, ge=5, le=500, description="Alerts per queue page.")
    recent_alerts: int = Field(
        20, ge=1, le=500, description="The customer's other alerts shown on an alert page."
    )

    @model_validator(mode="after")
    def _no_password_in_the_url(self) -> DeskSettings:
        # The URL is shown by `config show` and in logs; a password in it would be too.
        if urlsplit(self.database_url).password is not None:
            raise ValueError("desk.database_url holds a password: put it in desk.database_password")
        return self


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = Field(False, description="One JSON object per line.")
    include_payloads: bool = Field(
        False, description="Log raw event payloads in errors. Off: payloads may hold PII."
    )


class Settings(BaseSettings):
    """All of riskstream's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="RISKSTREAM_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    home: Path = Field(
        DEFAULT_HOME,
        description="Local state: broker jars and data, the model registry, runs, reports. "
        "Made absolute once, when the settings are read (a relative path is taken from the "
        "working directory at that moment).",
    )
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    redis: RedisSettings = RedisSettings()
    context: ContextSettings = ContextSettings()
    model: ModelSettings = ModelSettings()
    scorer: ScorerSettings = ScorerSettings()
    trainer: TrainerSettings = TrainerSettings()
    desk: DeskSettings = DeskSettings()
    log: LogSettings = LogSettings()

    @model_validator(mode="before")
    @classmethod
    def _absolute_paths(cls, data: Any) -> Any:
        """``home`` absolute, and a relative ``model.registry_dir`` under it - decided once
        here, so no later ``chdir``, child process or other working directory sees another
        place (see the README's "Configuration")."""
        if not isinstance(data, dict):
            return data
        home = _absolute(Path(data.get("home") or DEFAULT_HOME))
        model = data.get("model", {})
        fields = dict(model) if isinstance(model, dict) else model.model_dump()
        registry = Path(fields.get("registry_dir") or ModelSettings().registry_dir).expanduser()
        fields["registry_dir"] = registry if registry.is_absolute() else home / registry
        return {**data, "home": home, "model": fields}


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path.expanduser()))


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; keyword overrides win (used by CLI options and tests)."""
    return Settings(**overrides)


def to_env(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce ``settings`` in a child process.

    Secrets are revealed here (the child needs them); pass the result to the child's
    environment only, never to a log.
    """
    env: dict[str, str] = {}

    def walk(prefix: str, model: BaseModel) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            key = f"{prefix}{name.upper()}"
            if isinstance(value, BaseModel):
                walk(f"{key}__", value)
            elif value is None:
                continue
            elif isinstance(value, SecretStr):
                env[key] = value.get_secret_value()
            elif isinstance(value, bool):
                env[key] = "true" if value else "false"
            else:
                env[key] = str(value)

    walk("RISKSTREAM_", settings)
    return env
