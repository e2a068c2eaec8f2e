"""One way to open a Redis connection, used by every worker.

It honours everything in :class:`stream.settings.RedisSettings`: ACL user and password (kept as
a SecretStr until the moment the client gets it), TLS for ``rediss://`` URLs (CA bundle,
client certificate and key, host name check), Redis Cluster, and the socket timeout.

Responses are bytes (``decode_responses=False``): the context store keeps binary state, and a
text decode would corrupt it.

Retries: redis-py retries connection errors itself, by default ten times with backoff, which
can hide an outage for seconds inside a single call. Here the client retries briefly (three
times within a fraction of a second) to ride over a dropped idle connection, and otherwise
lets the error surface, so the caller's own retry policy (pause the consumer, back off, retry
the batch) decides - and can report what happened.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, TypeAlias

import redis
import redis.cluster
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from stream.settings import RedisSettings

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    # The stubs make the clients generic in the response type; at run time they are not.
    AnyRedis: TypeAlias = redis.Redis[bytes] | redis.cluster.RedisCluster[bytes]
else:
    AnyRedis = redis.Redis | redis.cluster.RedisCluster

_RETRIES = 3
_BACKOFF_BASE_S = 0.02
_BACKOFF_CAP_S = 0.2


def client_options(settings: RedisSettings) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis.from_url`` / ``RedisCluster.from_url``.

    Secrets are revealed here, straight into the client; never log the result.
    """
    options: dict[str, Any] = {
        "decode_responses": False,
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_timeout_s,
        "retry": Retry(ExponentialBackoff(cap=_BACKOFF_CAP_S, base=_BACKOFF_BASE_S), _RETRIES),
    }
    if settings.username is not None:
        options["username"] = settings.username
    if settings.password is not None:
        options["password"] = settings.password.get_secret_value()
    if settings.uses_tls:
        options["ssl_cert_reqs"] = "required"
        options["ssl_check_hostname"] = settings.ssl_check_hostname
        if settings.ssl_ca_certs is not None:
            options["ssl_ca_certs"] = str(settings.ssl_ca_certs)
        if settings.ssl_certfile is not None:
            options["ssl_certfile"] = str(settings.ssl_certfile)
        if settings.ssl_keyfile is not None:
            options["ssl_keyfile"] = str(settings.ssl_keyfile)
    return options


def connect(settings: RedisSettings) -> AnyRedis:
    """A client for ``settings.url``: a Cluster client when ``settings.cluster`` is set.

    Connections are opened lazily, on the first command; a wrong address or password shows up
    then, as a ``redis.exceptions.ConnectionError`` or ``AuthenticationError``.
    """
    options = client_options(settings)
    log.info(
        "redis client for %s (cluster=%s, tls=%s, user=%s)",
        settings.safe_url(),
        settings.cluster,
        settings.uses_tls,
        settings.username or "default",
    )
    if settings.cluster:
        cluster: redis.cluster.RedisCluster[bytes] = redis.cluster.RedisCluster.from_url(
            settings.url, **options
        )
        return cluster
    client: redis.Redis[bytes] = redis.Redis.from_url(settings.url, **options)
    return client
