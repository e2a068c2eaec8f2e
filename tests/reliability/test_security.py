"""Security configurations exercised for real: Kafka over SASL_SSL, Redis over TLS with a
password, wrong credentials refused clearly and quickly, no secret and no payload in any log,
and a pickle slipped into the model registry never loaded.

The broker and Redis are this module's own: a KafkaBroker with a SASL_SSL listener (PEM
certificates from generate_tls_files, SASL/PLAIN users) and a TLS-only redis-server with
``requirepass``. The scorer reaches both only through the authenticated, encrypted ports.
"""

from __future__ import annotations

import os
import pickle
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from models.registry import Registry
from schemas import TransactionEvent, decode
from stream.context.errors import ContextUnavailable
from stream.context.store import ContextStore
from stream.devenv import (
    KafkaBroker,
    RedisServer,
    RedisTls,
    TlsFiles,
    ensure_redis_server_binary,
    free_ports,
    generate_tls_files,
)
from stream.devenv.kafka import SaslSslListener
from stream.kafka.model_notices import announce_champion
from stream.pipeline.records import ScoredRecord, ScoredRecordStore
from stream.redis_client import connect
from stream.settings import ContextSettings, KafkaSettings, RedisSettings, Settings, to_env
from tests.helpers import event_ids, produce_values

from .harness import (
    ScorerStarter,
    account,
    read_all,
    report,
    scorer_settings,
    wait_for_assignment,
    wait_for_ids,
    wait_for_log,
    wait_until,
)
from .hostile import MARKER

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Secrets:
    """Generated per run, so a leak cannot hide behind a well-known test password."""

    kafka_scorer = secrets.token_urlsafe(18)
    kafka_tester = secrets.token_urlsafe(18)
    redis = secrets.token_urlsafe(18)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return generate_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def secure_broker(
    tmp_path_factory: pytest.TempPathFactory, kafka_libs: Path, tls: TlsFiles
) -> Iterator[KafkaBroker]:
    port, controller_port, sasl_port = free_ports(3)
    listener = SaslSslListener(
        sasl_port, tls, {"scorer": Secrets.kafka_scorer, "tester": Secrets.kafka_tester}
    )
    broker = KafkaBroker(
        tmp_path_factory.mktemp("secure-kafka"),
        kafka_libs,
        port=port,
        controller_port=controller_port,
        sasl_ssl=listener,
    )
    with broker:
        yield broker


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles) -> Iterator[RedisServer]:
    (port,) = free_ports(1)
    server = RedisServer(
        port,
        tmp_path_factory.mktemp("secure-redis"),
        password=Secrets.redis,
        tls=RedisTls.from_files(tls),
        binary=ensure_redis_server_binary(),
    )
    with server:
        yield server


@pytest.fixture
def secure_settings(
    secure_broker: KafkaBroker, secure_redis: RedisServer, trained_registry: Path, tmp_path: Path
) -> Settings:
    """A scorer that reaches Kafka only over SASL_SSL and Redis only over TLS + AUTH."""
    return scorer_settings(
        secure_broker.sasl_ssl_settings("scorer"),
        secure_redis.redis_settings(),
        trained_registry,
        tmp_path / "home",
    )


def test_redis_over_tls_with_a_password_serves_the_context_and_the_scored_records(
    secure_redis: RedisServer, stream_values: list[bytes]
) -> None:
    settings = secure_redis.redis_settings()
    assert settings.url.startswith("rediss://")
    events = [decode(TransactionEvent, v) for v in stream_values[:50]]
    client = connect(settings)
    try:
        store = ContextStore(client, ContextSettings(namespace="tls-test"), create_namespace=True)
        contexts = store.update_batch(events)
        assert [c.event_id for c in contexts] == [e.event_id for e in events]
        records = ScoredRecordStore(client, "tls-test", 60)
        record = ScoredRecord(
            event_id=events[0].event_id, customer_id=events[0].customer_id, event_time_ms=1,
            event={}, narrative="n", clause_ids=(), features=(0.5,), score=0.1,
            typology="legitimate", model_version="v", narrative_version="n1", alert_id=None,
            scored_at_ms=2, source="tx[0]@0",
        )  # fmt: skip
        records.put_batch([record])
        assert records.get_batch([record.event_id]) == [record]
        store.drop_namespace()
    finally:
        client.close()


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("wrong password", "invalid username-password pair"),
        ("no password", "AuthenticationError"),
        ("plaintext to the TLS port", "Connection"),
        ("TLS without the CA", "certificate verify failed"),
    ],
)
def test_redis_refuses_wrong_credentials_and_plaintext_with_a_clear_error(
    secure_redis: RedisServer, tls: TlsFiles, variant: str, expected: str
) -> None:
    good = secure_redis.redis_settings()
    wrong = {
        "wrong password": good.model_copy(update={"password": SecretStr("not-" + Secrets.redis)}),
        "no password": good.model_copy(update={"password": None}),
        "plaintext to the TLS port": good.model_copy(
            update={"url": good.url.replace("rediss://", "redis://"), "socket_timeout_s": 2.0}
        ),
        "TLS without the CA": good.model_copy(update={"ssl_ca_certs": None}),
    }[variant]
    client = connect(wrong)
    started = time.monotonic()
    try:
        with pytest.raises(ContextUnavailable) as caught:
            ContextStore(client, ContextSettings(namespace="tls-refused"), create_namespace=True)
    finally:
        client.close()
    assert expected in str(caught.value)
    assert Secrets.redis not in str(caught.value)
    assert time.monotonic() - started < 15, "refused at once, not after a long retry"


def secrets_in(text: str) -> list[str]:
    return [
        name
        for name, value in (
            ("kafka scorer password", Secrets.kafka_scorer),
            ("kafka tester password", Secrets.kafka_tester),
            ("redis password", Secrets.redis),
            ("payload marker", MARKER),
        )
        if value in text
    ]


def test_scorer_round_trip_over_sasl_ssl_and_tls_redis_logs_no_secret_and_no_payload(
    secure_settings: Settings,
    secure_broker: KafkaBroker,
    stream_values: list[bytes],
    start_scorer: ScorerStarter,
) -> None:
    settings = secure_settings.model_copy(
        update={"log": secure_settings.log.model_copy(update={"level": "DEBUG"})}
    )
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.redis.uses_tls
    assert settings.redis.password is not None
    good = stream_values[:900]  # enough for a few dozen alerts over SASL_SSL too
    first = orjson.loads(good[0])
    bad = [
        orjson.dumps({**first, "event_id": "ev-bad-1", "memo": MARKER * 40}),
        orjson.dumps({**first, "event_id": "ev-bad-2", "amount_minor": -1, "memo": MARKER}),
        b"not json " + MARKER.encode(),
    ]
    # The input producer authenticates as another user: two principals on one listener.
    producer_kafka = secure_broker.sasl_ssl_settings("tester")
    scorer = start_scorer(settings)
    wait_for_assignment(scorer)
    produce_values(producer_kafka, settings.topics.transactions, good + bad)
    wait_for_ids(producer_kafka, settings, set(event_ids(good)), timeout_s=240)
    wait_until(
        lambda: len(read_all(producer_kafka, [settings.topics.dlq])) >= len(bad),
        60,
        "the bad messages dead-lettered",
    )
    assert scorer.terminate() == 0, scorer.log()

    accounting = account(settings.model_copy(update={"kafka": producer_kafka}), event_ids(good))
    assert accounting.lost == 0
    assert accounting.alerts > 0
    assert accounting.alerts_missing == 0
    log = scorer.log()
    assert "SASL_SSL" in log or "scoring" in log
    assert secrets_in(log) == [], "a secret or payload reached the scorer's output"

    shown = subprocess.run(
        [sys.executable, "-m", "stream.cli", "config", "show"],
        env={**os.environ, **to_env(settings)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    config = orjson.loads(shown.stdout)
    assert config["kafka"]["sasl_password"] == "**********"
    assert config["redis"]["password"] == "**********"
    assert secrets_in(shown.stdout + shown.stderr) == []
    report(
        "sasl_ssl_tls_redis",
        fault="security: Kafka SASL_SSL (PLAIN, PEM TLS) and Redis TLS + AUTH",
        mode="at_least_once",
        accounting=accounting,
        inputs=f"{len(good)} events + {len(bad)} bad messages with a payload marker",
        command=".venv/bin/pytest tests/reliability/test_security.py -k round_trip",
        notes="no password and no payload in the scorer's DEBUG log or `config show`",
    )


@pytest.mark.parametrize("service", ["kafka", "redis"])
def test_regression_wrong_credentials_kept_the_scorer_waiting_instead_of_failing(
    secure_settings: Settings, start_scorer: ScorerStarter, service: str
) -> None:
    # Kafka: librdkafka retries a refused login forever and reports it only to error_cb, so the
    # scorer sat there live and "ready", consuming nothing. Redis: the store called the refusal
    # "unavailable" and the scorer waited two minutes for it. Both now end the process (exit 2)
    # with a message that says what was refused.
    wrong_password = "wrong-" + secrets.token_urlsafe(12)
    if service == "kafka":
        settings = secure_settings.model_copy(
            update={
                "kafka": secure_settings.kafka.model_copy(
                    update={"sasl_password": SecretStr(wrong_password)}
                )
            }
        )
        expected = "Kafka refused the credentials"
    else:
        settings = secure_settings.model_copy(
            update={
                "redis": secure_settings.redis.model_copy(
                    update={"password": SecretStr(wrong_password)}
                )
            }
        )
        expected = "Redis refused the credentials"
    scorer = start_scorer(settings)
    assert scorer.process is not None
    started = time.monotonic()
    try:
        code = scorer.process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the scorer kept running with a wrong {service} password:\n{scorer.log()}")
    log = scorer.log()
    assert code != 0
    assert expected in log, log
    assert wrong_password not in log
    assert secrets_in(log) == []
    report(
        f"wrong_{service}_password",
        fault=f"security: scorer started with a wrong {service} password",
        mode="at_least_once",
        inputs="none (refused before consuming)",
        command=".venv/bin/pytest tests/reliability/test_security.py "
        f"-k 'wrong_password and {service}'",
        notes=f"exit code {code} after {time.monotonic() - started:.0f} s with '{expected}'; "
        "the password is not in the log",
    )


class Evidence:
    """A pickle payload that, if ever unpickled, creates a file: proof it was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.path,))


def test_a_pickle_in_a_promoted_version_is_refused_and_the_champion_keeps_scoring(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    trained_registry: Path,
    stream_values: list[bytes],
    start_scorer: ScorerStarter,
    tmp_path: Path,
) -> None:
    # models/registry.py refuses pickles at load (tests/models/test_model_registry.py); this is
    # the running scorer's side: a promoted version holding one is never swapped in.
    registry_dir = tmp_path / "registry"
    shutil.copytree(trained_registry, registry_dir)
    registry = Registry(registry_dir)
    champion = registry.champion()
    assert champion is not None
    evidence = tmp_path / "unpickled"
    payload = pickle.dumps(Evidence(evidence))
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Evidence(probe)))  # noqa: S301 - proves the payload would run
    assert probe.exists()

    beside = f"{champion}-pickle-beside"
    shutil.copytree(registry_dir / champion, registry_dir / beside)
    (registry_dir / beside / "pytorch_model.bin").write_bytes(payload)
    renamed = f"{champion}-pickle-as-safetensors"
    shutil.copytree(registry_dir / champion, registry_dir / renamed)
    (registry_dir / renamed / "model.safetensors").write_bytes(payload)

    settings = scorer_settings(kafka_settings, redis_settings, registry_dir, tmp_path / "home")
    scorer = start_scorer(settings)
    wait_for_assignment(scorer)
    batches = [stream_values[:200], stream_values[200:400], stream_values[400:600]]
    produce_values(settings.kafka, settings.topics.transactions, batches[0])
    for bad_version, batch in zip((beside, renamed), batches[1:], strict=True):
        registry.promote(bad_version, reason="test: a pickle in the registry")
        announce_champion(settings, bad_version, "promote", "test")
        wait_for_log(scorer, f"champion {bad_version} failed to load")
        produce_values(settings.kafka, settings.topics.transactions, batch)
    ids = [i for batch in batches for i in event_ids(batch)]
    wait_for_ids(settings.kafka, settings, set(ids), timeout_s=240)
    assert scorer.alive(), scorer.log()
    assert scorer.terminate() == 0, scorer.log()

    scores = read_all(settings.kafka, [settings.topics.scores])
    assert {orjson.loads(m.value())["model_version"] for m in scores} == {champion}
    assert not evidence.exists(), "a pickle from the registry was executed"
    log = scorer.log()
    assert "not a safetensors/JSON/text file" in log
    assert "pickled/torch.save file, not safetensors" in log
    assert "now scoring with model" not in log
    report(
        "pickle_in_registry",
        fault="security: versions with a pickle (beside the weights / as the weights) promoted "
        "under a running scorer",
        mode="at_least_once",
        accounting=account(settings, ids),
        inputs=f"{len(ids)} events across two bad promotions",
        command=".venv/bin/pytest tests/reliability/test_security.py -k pickle",
        notes="both refused (UnsafeModelFormat), the champion kept scoring, the payload never ran",
    )
