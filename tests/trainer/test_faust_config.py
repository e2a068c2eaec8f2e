"""settings.kafka mapped onto faust's broker URLs and credentials."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from pydantic import SecretStr

from stream.settings import KafkaSettings
from stream.trainer.app import faust_brokers, faust_credentials


def test_plaintext_needs_no_credentials_and_every_bootstrap_server_is_a_broker() -> None:
    kafka = KafkaSettings(bootstrap_servers="10.0.0.1:9092, 10.0.0.2:9093")
    assert faust_brokers(kafka) == ["kafka://10.0.0.1:9092", "kafka://10.0.0.2:9093"]
    assert faust_credentials(kafka) is None


def test_sasl_over_plaintext() -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="trainer",
        sasl_password=SecretStr("s3cret"),
    )
    credentials = faust_credentials(kafka)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("trainer", "s3cret")
    assert credentials.ssl_context is None
    assert "s3cret" not in repr(credentials)


def test_sasl_over_tls_verifies_the_broker(tmp_path: Path) -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="trainer",
        sasl_password=SecretStr("s3cret"),
        ssl_endpoint_identification=False,
    )
    credentials = faust_credentials(kafka)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.ssl_context is not None
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert credentials.ssl_context.check_hostname is False


def test_tls_with_a_ca_that_does_not_exist_fails_loudly(tmp_path: Path) -> None:
    kafka = KafkaSettings(security_protocol="SSL", ssl_ca_location=tmp_path / "missing.pem")
    with pytest.raises(FileNotFoundError):
        faust_credentials(kafka)
    plain_tls = faust_credentials(KafkaSettings(security_protocol="SSL"))
    assert isinstance(plain_tls, faust.SSLCredentials)
    assert plain_tls.context.check_hostname is True
