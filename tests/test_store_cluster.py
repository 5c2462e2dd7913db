"""The store's Lua scripts, unchanged, against a 3-master Redis Cluster on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster

from django_stability.store import Limit, RedisStore
from tests.redis_servers import RedisClusterOnLoopback

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterOnLoopback]:
    servers = RedisClusterOnLoopback(masters=3).start()
    try:
        yield servers
    finally:
        servers.close()


def test_every_operation_runs_on_the_cluster(cluster: RedisClusterOnLoopback) -> None:
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0], socket_timeout=2)
    store = RedisStore(client, prefix="cl")
    limits = [Limit(f"ip:{i}", 3, 3600, 3) for i in range(4)] + [Limit("global", 100, 60, 100)]
    decisions = [store.rate_limit(limits) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[-1].retry_after == pytest.approx(1200, abs=1)
    # Single-key operations spread over the masters.
    for i in range(20):
        assert store.acquire_lease(f"lease:{i}", "a", 1, 30).acquired
        assert not store.acquire_lease(f"lease:{i}", "b", 1, 30).acquired
        assert store.renew_lease(f"lease:{i}", "a", 30)
        assert store.count_leases(f"lease:{i}") == 1
        assert store.release_lease(f"lease:{i}", "a")
        assert store.set(f"v:{i}", "x", 30)
        assert store.compare_and_set(f"v:{i}", "x", "y", 30)
        assert store.get(f"v:{i}") == "y"
        assert store.incr(f"n:{i}", 2, 30) == 2
        assert store.delete(f"v:{i}")
    nodes_used = {client.get_node_from_key(store.key(f"lease:{i}")).port for i in range(20)}
    assert len(nodes_used) == 3
