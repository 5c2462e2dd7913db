"""Cluster breakers: one verdict for every process, exactly N probes in all, no I/O per call."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.test import override_settings

from django_stability import BreakerOpen, circuit_breaker
from django_stability.breaker import CLOSED, OPEN, CircuitBreaker
from django_stability.store import FailsafeStore, get_store
from tests.multiproc import run_in_processes
from tests.redis_servers import PrivateRedis

CLUSTER = {
    "scope": "cluster",
    "window_size": 4,
    "minimum_calls": 4,
    "wait_in_open": 0.6,
    "half_open_calls": 2,
    "half_open_max_wait": 10,
}


def dead() -> None:
    raise ConnectionError("dead")


def open_it(breaker: CircuitBreaker) -> None:
    for _ in range(4):
        with pytest.raises(ConnectionError):
            breaker.call(dead)
    assert breaker.state == OPEN


class CountingStore:
    """Counts the store operations a breaker makes (each one is a round trip)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: list[str] = []
        self.originals: dict[str, Any] = {}

    def __enter__(self) -> CountingStore:
        for name in ("get", "set", "compare_and_set", "acquire_lease", "incr", "release_lease"):
            original = getattr(self.store, name)
            self.originals[name] = original

            def counted(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
                self.calls.append(_name)
                return _original(*args, **kw)

            setattr(self.store, name, counted)
        return self

    def __exit__(self, *exc: Any) -> None:
        for name in self.originals:
            delattr(self.store, name)


@pytest.fixture
def process_b() -> Any:
    """Make a second breaker object of the same name: another process, as far as state goes."""
    made: list[CircuitBreaker] = []

    def make(name: str) -> CircuitBreaker:
        breaker = CircuitBreaker(name)
        breaker.refresh_policy()
        made.append(breaker)
        return breaker

    return make


def test_an_opening_reaches_the_other_processes_within_a_second(process_b: Any) -> None:
    a = circuit_breaker("shared-open", **{**CLUSTER, "wait_in_open": 5})
    b = process_b("shared-open")
    assert b.call(lambda: 1) == 1  # b has read the verdict: closed
    open_it(a)
    verdict = a.shared_verdict()
    assert verdict is not None and verdict.state == OPEN
    refusal: list[BreakerOpen] = []
    deadline = time.monotonic() + 2
    while not refusal and time.monotonic() < deadline:
        try:
            b.call(lambda: 1)
        except BreakerOpen as refused:
            refusal.append(refused)
        time.sleep(0.02)
    assert refusal, "the other process never saw the breaker open"
    assert 3 < refusal[0].retry_after <= 5  # type: ignore[operator]
    assert b.state == OPEN


def test_exactly_n_probes_across_processes_then_one_decision(process_b: Any) -> None:
    a = circuit_breaker("shared-probes", **CLUSTER)
    others = [process_b("shared-probes") for _ in range(3)]
    open_it(a)
    for other in others:
        with pytest.raises(BreakerOpen):
            other.call(lambda: 1)  # reads the verdict: open
    time.sleep(0.65)
    entered, release = threading.Barrier(3), threading.Event()
    reached: list[str] = []

    def probe() -> str:
        reached.append("probe")
        entered.wait(5)
        release.wait(5)
        return "ok"

    outcomes: list[str] = []

    def client(breaker: CircuitBreaker) -> None:
        try:
            outcomes.append(breaker.call(probe))
        except BreakerOpen:
            outcomes.append("refused")

    threads = [threading.Thread(target=client, args=(b,)) for b in [a, *others]]
    for thread in threads:
        thread.start()
    entered.wait(5)  # two probes are in the dependency (and the barrier's third party is us)
    time.sleep(0.1)
    assert len(reached) == 2
    release.set()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok", "ok", "refused", "refused"]
    verdict = a.shared_verdict()
    assert verdict is not None and verdict.state == CLOSED
    for breaker in [a, *others]:
        # Each process learns it within the second it trusts its cached verdict.
        assert eventually(lambda b=breaker: b.call(lambda: 2) == 2, within=1.5)


def eventually(check: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while True:
        try:
            if check():
                return True
        except BreakerOpen:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def test_failed_probes_reopen_it_for_everyone(process_b: Any) -> None:
    a = circuit_breaker("shared-reopen", **CLUSTER)
    b = process_b("shared-reopen")
    open_it(a)
    time.sleep(0.65)
    for breaker in (a, b):
        with pytest.raises(ConnectionError):
            breaker.call(dead)
    verdict = a.shared_verdict()
    assert verdict is not None and verdict.state == OPEN and verdict.opens == 2
    with pytest.raises(BreakerOpen):
        a.call(lambda: 1)


def test_no_round_trip_per_call_in_steady_state(process_b: Any) -> None:
    breaker = circuit_breaker("steady", **{**CLUSTER, "wait_in_open": 5})
    breaker.call(lambda: 1)
    store = get_store()
    with CountingStore(store) as counting:
        started = time.monotonic()
        calls = 0
        while time.monotonic() - started < 1.5:
            breaker.call(lambda: 1)
            calls += 1
    # At most one look at the shared verdict per second (plus one for the edge).
    assert calls > 10_000
    assert counting.calls.count("get") <= 3, counting.calls
    assert set(counting.calls) <= {"get"}
    breaker.trip()
    with CountingStore(store) as counting:
        for _ in range(5000):
            with pytest.raises(BreakerOpen):
                breaker.call(lambda: 1)
    assert len(counting.calls) <= 2, counting.calls  # open: refused without asking


@pytest.mark.slow
def test_eight_os_processes_let_exactly_n_probes_through_in_all(key_prefix: str) -> None:
    """8 processes call a dead dependency through one cluster breaker: N probes in total."""
    name = "eight"
    fields = {
        **CLUSTER,
        "wait_in_open": 1.0,
        "half_open_calls": 3,
        # The second opening lasts past the end of the test: one half-open round only.
        "wait_multiplier": 60.0,
        "max_wait_in_open": 120.0,
    }
    parent = circuit_breaker(name, **fields)
    store = get_store()

    def open_when_ready() -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if int(store.get(f"ready:{name}") or 0) == 8:
                break
            time.sleep(0.02)
        parent.trip()
        store.set(f"go:{name}", repr(time.time() + 3.0), 300)

    opener = threading.Thread(target=open_when_ready)
    opener.start()
    results = run_in_processes(
        "tests.integration_children.call_dead_dependency", [(name, fields)] * 8
    )
    opener.join()
    reached = [r["reached"] for r in results]
    assert sum(reached) == 3, reached  # exactly the permitted probes, across 8 processes
    assert int(store.get(f"reached:{name}") or 0) == 3
    assert all(r["refused"] > 50 for r in results)  # every process was calling all along
    verdict = parent.shared_verdict()
    assert verdict is not None and verdict.state == OPEN and verdict.opens == 2


# The breaker's own store unreachable ------------------------------------------------

TIMEOUT = 0.2
# Generous margin for a shared, noisy 2-core machine; the promise is "no longer than
# the store's timeout", and this is still far below redis-py's default of 5 s.
MARGIN = 0.3


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["refused", "hung"])
def test_store_unreachable_process_scope_state_and_bounded_waits(
    private_redis: PrivateRedis, fault: str
) -> None:
    with override_settings(
        STABILITY={
            "STORE_URL": private_redis.url,
            "STORE_SOCKET_TIMEOUT": TIMEOUT,
            "STORE_CONNECT_TIMEOUT": TIMEOUT,
            "STORE_KEY_PREFIX": "breaker-faults",
            "BREAKER_CLUSTER_REFRESH": 0.1,
        }
    ):
        store = get_store()
        assert isinstance(store, FailsafeStore)
        breaker = circuit_breaker("lonely", **{**CLUSTER, "wait_in_open": 0.3})
        assert breaker.call(lambda: 1) == 1  # the verdict was read from Redis
        if fault == "refused":
            private_redis.stop()
        else:
            private_redis.hang()
        durations = []
        outcomes = []
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            t0 = time.monotonic()
            try:
                breaker.call(dead)
            except ConnectionError:
                outcomes.append("failed")
            except BreakerOpen:
                outcomes.append("refused")
            durations.append(time.monotonic() - t0)
            time.sleep(0.01)
        assert max(durations) < TIMEOUT + MARGIN, max(durations)
        # The breaker went on deciding alone: it opened, probed and re-opened.
        # (The window already held one success: the third failure makes 75%.)
        assert outcomes[:4] == ["failed", "failed", "failed", "refused"]
        assert outcomes.count("failed") >= 3 + 2  # the half-open probes got through too
        # The store's failure was seen (the breaker then stops asking it, so the
        # store's own breaker need not reach its threshold).
        assert store.degraded or store.breaker.failures >= 1
        if fault == "hung":
            private_redis.resume()


@pytest.mark.slow
def test_back_on_the_shared_verdict_by_itself_when_redis_returns(
    private_redis: PrivateRedis,
) -> None:
    """No other user of the store is needed for a cluster breaker to rejoin the cluster."""
    from django_stability.breaker import SharedVerdict
    from django_stability.store import RedisStore
    from django_stability.store.redis import client_from_url

    with override_settings(
        STABILITY={
            "STORE_URL": private_redis.url,
            "STORE_SOCKET_TIMEOUT": TIMEOUT,
            "STORE_CONNECT_TIMEOUT": TIMEOUT,
            "STORE_BREAKER_COOLDOWN": 0.3,
            "STORE_KEY_PREFIX": "breaker-comeback",
            "BREAKER_CLUSTER_REFRESH": 0.1,
            # Keep the policy registry from calling the store meanwhile: the
            # breaker must find its way back alone.
            "POLICY_REFRESH": 3600,
        }
    ):
        store = get_store()
        assert isinstance(store, FailsafeStore)
        breaker = circuit_breaker("comeback", **CLUSTER)
        assert breaker.call(lambda: 1) == 1
        private_redis.stop()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # healthy calls, decided alone
            assert breaker.call(lambda: 1) == 1
            time.sleep(0.02)
        private_redis.restart()
        # Another process opens the breaker for the whole cluster.
        other = RedisStore(
            client_from_url(private_redis.url, socket_timeout=1, connect_timeout=1),
            prefix="breaker-comeback",
        )
        verdict = SharedVerdict(OPEN, epoch=50, opens=1, wait=60.0, since_wall=time.time())
        other.set("breaker:comeback", verdict.encode(), 120)
        refused = False
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not refused:
            try:
                breaker.call(lambda: 1)
            except BreakerOpen:
                refused = True
            time.sleep(0.05)
        assert refused, "the breaker never read the shared verdict again"
