"""Local infrastructure for development and tests: a real Kafka broker and Redis server.

Both run as plain processes on 127.0.0.1 (no Docker): Kafka from jars resolved from Maven
Central (:mod:`stream.devenv.jars`), Redis from Debian's ``redis-server`` package. The
`riskstream dev` commands live in :mod:`stream.devenv.cli`; tests use the classes directly.
"""

from stream.devenv.certs import TlsFiles, generate_tls_files
from stream.devenv.errors import (
    DevEnvError,
    JarResolveError,
    PortInUseError,
    ServerStartError,
    TlsUnsupportedError,
    ToolNotFoundError,
)
from stream.devenv.jars import ensure_kafka_jars, kafka_version
from stream.devenv.kafka import KafkaBroker
from stream.devenv.process import free_ports, port_is_free
from stream.devenv.redis_server import (
    RedisServer,
    RedisTls,
    ensure_redis_server_binary,
    resolve_redis_url,
)
from stream.kafka.topics import ensure_topics, standard_topics

__all__ = [
    "DevEnvError",
    "JarResolveError",
    "KafkaBroker",
    "PortInUseError",
    "RedisServer",
    "RedisTls",
    "ServerStartError",
    "TlsFiles",
    "TlsUnsupportedError",
    "ToolNotFoundError",
    "ensure_kafka_jars",
    "ensure_redis_server_binary",
    "ensure_topics",
    "free_ports",
    "generate_tls_files",
    "kafka_version",
    "port_is_free",
    "resolve_redis_url",
    "standard_topics",
]
