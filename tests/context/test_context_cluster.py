"""The context store on a real three-node Redis Cluster computes what it computes standalone.

Every entity's keys share a hash tag, so each script call stays within one slot; the store
groups a batch's ops by slot and still sends one pipeline.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.cluster

from schemas import Channel, CounterpartyType, Direction
from stream.context.errors import ContextStateLost
from stream.context.store import ContextStore
from stream.devenv import RedisServer, free_ports
from stream.redis_client import connect
from stream.settings import ContextSettings, RedisSettings

pytestmark = pytest.mark.integration


class ClusterNode(RedisServer):
    def __init__(self, port: int, bus_port: int, data_dir: Path) -> None:
        super().__init__(port, data_dir)
        self.bus_port = bus_port  # explicit: the default (port + 10000) may be taken or > 65535

    def config(self) -> str:
        return super().config() + (
            f"cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-port {self.bus_port}\n"
        )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[int]]:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli (to create the cluster) is not installed")
    *ports, bus1, bus2, bus3 = free_ports(6)
    nodes = [
        ClusterNode(port, bus, tmp_path / f"node-{port}")
        for port, bus in zip(ports, (bus1, bus2, bus3), strict=True)
    ]
    try:
        for node in nodes:
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        probe = redis.Redis(port=ports[0])
        while probe.cluster("info").get("cluster_state") != "ok":
            assert time.monotonic() < deadline, "cluster did not become ready"
            time.sleep(0.1)
        probe.close()
        yield ports
    finally:
        for node in nodes:
            node.stop()


def test_cluster_and_standalone_compute_the_same_context(cluster, make_event, make_store) -> None:
    events = [
        make_event(
            i * 3.0,
            customer=f"cus-{i % 11}",
            counterparty=f"acc-{i % 7}" if i % 2 else f"mer-{i % 5}",
            counterparty_type=CounterpartyType.ACCOUNT if i % 2 else CounterpartyType.MERCHANT,
            channel=Channel.WIRE if i % 2 else Channel.CARD,
            direction=Direction.INBOUND if i % 5 == 0 else Direction.OUTBOUND,
            terminal=None if i % 2 else f"trm-{i % 3}",
            amount_usd=20 + (i * 53) % 700,
        )
        for i in range(300)
    ]
    client = connect(RedisSettings(url=f"redis://127.0.0.1:{cluster[0]}/0", cluster=True))
    assert isinstance(client, redis.cluster.RedisCluster)
    with ContextStore(
        client, ContextSettings(namespace="cluster-test"), create_namespace=True
    ) as store:
        on_cluster = [c for s in range(0, 300, 64) for c in store.update_batch(events[s : s + 64])]
        again = store.update_batch(events[256:])  # a redelivered tail
        assert all(c.duplicate for c in again)
        assert [c.features for c in again] == [c.features for c in on_cluster[256:]]
        assert store.drop_namespace() > 0
    client.close()

    standalone = make_store()
    alone = [c for s in range(0, 300, 64) for c in standalone.update_batch(events[s : s + 64])]
    assert [c.features for c in on_cluster] == [c.features for c in alone]


def test_a_node_that_came_back_empty_receives_nothing_and_stops_the_batch(
    cluster, make_event
) -> None:
    # A script may touch only keys of its own hash slot, so each slot has a marker of its own:
    # one node losing its data set is noticed by every call on its slots, before they write.
    events = [make_event(i, customer=f"cus-{i}", counterparty=f"mer-{i}") for i in range(60)]
    client = connect(RedisSettings(url=f"redis://127.0.0.1:{cluster[0]}/0", cluster=True))
    assert isinstance(client, redis.cluster.RedisCluster)
    store = ContextStore(client, ContextSettings(namespace="cluster-loss"), create_namespace=True)
    store.update_batch(events[:30])
    wiped = redis.Redis(port=cluster[1])
    wiped.flushall()  # that node restarted without persistence

    with pytest.raises(ContextStateLost):
        store.update_batch(events[30:])
    assert wiped.dbsize() == 0, "the emptied node received part of the batch"

    store.initialize_namespace()  # --accept-context-loss: every slot's marker again
    contexts = store.update_batch(events[30:])
    assert len(contexts) == 30
    store.drop_namespace()
    store.close()
    wiped.close()
    client.close()


def test_labels_and_exposure_marks_on_a_cluster_match_standalone(
    cluster, make_event, make_store
) -> None:
    # labels.lua and exposure.lua check their slot's marker like the event scripts: a
    # compromised terminal's customers (spread over the cluster's slots) are marked all the same
    from tests.context.test_counterparty_risk import DAY, fraud

    visits = [
        make_event(60 + i, customer=f"cus-{i}", terminal="trm-x", counterparty="mer-x")
        for i in range(12)
    ]
    labels = [fraud(visits[0], 2 * DAY), fraud(visits[1], 2 * DAY)]
    later = [make_event(4 * DAY + i, customer=f"cus-{i}", counterparty="shop") for i in range(12)]

    def run(store: ContextStore) -> tuple[int, list[tuple[object, ...]]]:
        store.update_batch(visits)
        exposed = store.apply_labels(labels).exposed
        return exposed, [(c.features, c.story) for c in store.update_batch(later)]

    client = connect(RedisSettings(url=f"redis://127.0.0.1:{cluster[0]}/0", cluster=True))
    with ContextStore(
        client, ContextSettings(namespace="cluster-marks"), create_namespace=True
    ) as store:
        on_cluster = run(store)
        store.drop_namespace()
    client.close()
    assert on_cluster[0] == 12
    assert all(features.compromised_points == 1 for features, _ in on_cluster[1])
    assert on_cluster == run(make_store())
