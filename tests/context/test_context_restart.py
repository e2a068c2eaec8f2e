"""A Redis restart mid-stream surfaces as an error the scorer can act on, never as silent loss.

Each test runs its own redis-server (the session's one must not be killed under other tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.context.errors import ContextStateLost, ContextUnavailable
from stream.context.store import ContextStore
from stream.devenv import RedisServer, free_ports
from stream.redis_client import connect
from stream.settings import ContextSettings, RedisSettings

pytestmark = pytest.mark.integration


class PersistentRedis(RedisServer):
    """The devenv server with an append-only file synced on every write: a restart keeps
    everything acknowledged, as a production Redis for context should."""

    def config(self) -> str:
        return super().config().replace("appendonly no", "appendonly yes\nappendfsync always")


@pytest.fixture
def own_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    kind = PersistentRedis if request.param == "persistent" else RedisServer
    server = kind(free_ports(1)[0], tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _store(server: RedisServer) -> ContextStore:
    settings = RedisSettings(url=server.url, socket_timeout_s=1.0)
    return ContextStore(
        connect(settings), ContextSettings(namespace="restart"), create_namespace=True
    )


@pytest.mark.parametrize("own_redis", ["persistent"], indirect=True)
def test_a_crash_is_retriable_and_the_retry_continues_from_the_saved_state(
    own_redis, make_event
) -> None:
    store = _store(own_redis)
    first = [make_event(i, customer="cus-r") for i in range(5)]
    second = [make_event(10 + i, customer="cus-r") for i in range(5)]
    store.update_batch(first)

    own_redis.kill()  # SIGKILL: a crash, mid-stream
    with pytest.raises(ContextUnavailable) as raised:
        store.update_batch(second)
    assert raised.value.retriable

    own_redis.start()  # reloads the append-only file; the script cache is empty
    contexts = store.update_batch(second)  # the scorer's retry of the same batch
    assert [c.features.out_count_1h for c in contexts] == [6, 7, 8, 9, 10]
    assert all(c.duplicate for c in store.update_batch(first))
    store.close()


@pytest.mark.parametrize("own_redis", ["ephemeral"], indirect=True)
def test_a_restart_that_lost_the_data_is_reported_not_ignored(own_redis, make_event) -> None:
    store = _store(own_redis)
    store.update_batch([make_event(0, customer="cus-r")])

    own_redis.restart()  # no persistence: the data set is gone
    with pytest.raises(ContextStateLost):
        store.update_batch([make_event(1, customer="cus-r")])

    # an operator accepts the reset; from then on the store works (from nothing)
    store.initialize_namespace()
    (context,) = store.update_batch([make_event(2, customer="cus-r")])
    assert context.features.out_count_1h >= 1
    store.close()
