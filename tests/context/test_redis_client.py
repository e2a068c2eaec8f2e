"""stream.redis_client.connect against real servers: AUTH, TLS with a client certificate, wrong
credentials, plaintext against TLS, and what it hands to redis-py."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from stream.devenv import RedisServer, RedisTls, free_ports, generate_tls_files
from stream.redis_client import client_options, connect
from stream.settings import RedisSettings


def test_options_reveal_the_secret_only_to_the_client_and_enable_tls_for_rediss() -> None:
    settings = RedisSettings(
        url="rediss://127.0.0.1:6380/0",
        username="scorer",
        password=SecretStr("s3cret"),
        ssl_ca_certs=Path("/etc/ca.pem"),
        ssl_certfile=Path("/etc/client.pem"),
        ssl_keyfile=Path("/etc/client.key"),
        ssl_check_hostname=False,
        socket_timeout_s=2.5,
    )
    options = client_options(settings)
    assert options["password"] == "s3cret"
    assert options["username"] == "scorer"
    assert options["ssl_ca_certs"] == "/etc/ca.pem"
    assert options["ssl_certfile"] == "/etc/client.pem"
    assert options["ssl_keyfile"] == "/etc/client.key"
    assert options["ssl_check_hostname"] is False
    assert options["ssl_cert_reqs"] == "required"
    assert options["socket_timeout"] == 2.5
    assert options["decode_responses"] is False
    assert "s3cret" not in repr(settings)
    plain = client_options(RedisSettings(url="redis://127.0.0.1:6379/0"))
    assert not any(key.startswith("ssl") for key in plain)
    assert "password" not in plain


@pytest.mark.integration
def test_auth_and_tls_against_a_real_server(tmp_path: Path) -> None:
    files = generate_tls_files(tmp_path / "tls")
    # (devenv's readiness probe has no client certificate, so the server cannot require one;
    # the client presents one anyway, as a mutual-TLS deployment would)
    tls = RedisTls.from_files(files)
    server = RedisServer(free_ports(1)[0], tmp_path / "redis", password="pw-123", tls=tls)
    with server:
        good = RedisSettings(
            url=server.url,
            password=SecretStr("pw-123"),
            ssl_ca_certs=files.ca_cert,
            ssl_certfile=files.client_cert,
            ssl_keyfile=files.client_key,
        )
        assert good.uses_tls
        client = connect(good)
        with client:
            assert client.ping()
            client.set("k", b"v", px=1000)
            assert client.get("k") == b"v"

        wrong_password = good.model_copy(update={"password": SecretStr("nope")})
        with connect(wrong_password) as client, pytest.raises(redis.AuthenticationError):
            client.ping()

        unknown_ca = good.model_copy(update={"ssl_ca_certs": None})
        with connect(unknown_ca) as client, pytest.raises(redis.ConnectionError):
            client.ping()  # the server's certificate is not from a CA the system trusts

        plaintext = good.model_copy(update={"url": server.url.replace("rediss", "redis")})
        with connect(plaintext) as client, pytest.raises(redis.ConnectionError):
            client.ping()
