"""Cluster-wide concurrency limits: leases in the store, routed or named, renewed, never leaked."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
from django.test import Client

from django_stability import Overloaded, concurrency_slot, signals
from django_stability.concurrency import ConcurrencySpec, LeaseKeeper, Slot, keeper, lease_key
from django_stability.policies import registry
from django_stability.store import get_store
from django_stability.test import override_policy
from tests.multiproc import run_in_processes, start_process
from tests.shedding_site import views

pytestmark = pytest.mark.urls("tests.shedding_site.urls")


def occupy(spec: ConcurrencySpec, holder: str = "elsewhere", value: str = "*") -> None:
    """A slot held by another process."""
    assert get_store().acquire_lease(lease_key(spec, value), holder, spec.limit, 30).acquired


def test_a_routed_limit_refuses_over_n_and_frees_after_each_request(client: Client) -> None:
    spec = ConcurrencySpec(name="slow-pages", url_names=("slow",), limit=2, retry_after=4)
    registry.register(spec)
    views.runs.clear()
    assert client.get("/slow/").status_code == 200
    assert get_store().count_leases(lease_key(spec)) == 0  # given back at the end
    occupy(spec, "a")
    occupy(spec, "b")
    response = client.get("/slow/", HTTP_ACCEPT="application/json")
    assert response.status_code == 503
    assert response["Retry-After"] == "4"
    assert json.loads(response.content)["policy"] == "slow-pages"
    assert views.runs["slow"] == 1
    assert client.get("/critical/").status_code == 200  # other routes are not covered
    get_store().release_lease(lease_key(spec), "a")
    assert client.get("/slow/").status_code == 200


def test_per_api_key_limits(client: Client) -> None:
    spec = ConcurrencySpec(
        name="per-key", path_prefixes=("/critical/",), limit=1, key="header:X-Api-Key"
    )
    registry.register(spec)
    from django.test import RequestFactory

    from django_stability.concurrency import key_value

    occupy(spec, value=key_value(spec, RequestFactory().get("/", HTTP_X_API_KEY="alice")))
    assert client.get("/critical/", HTTP_X_API_KEY="alice").status_code == 503
    assert client.get("/critical/", HTTP_X_API_KEY="bob").status_code == 200
    # The API key itself never reaches the store's keys.
    assert "alice" not in lease_key(spec, key_value(spec, RequestFactory().get("/")))


def test_the_decorator_and_streaming(client: Client) -> None:
    spec = ConcurrencySpec(name="exports", limit=1)
    registry.register(spec)
    response = client.get("/export/stream/")
    assert response.status_code == 200
    assert get_store().count_leases(lease_key(spec)) == 1  # held while streaming
    assert client.get("/export/").status_code == 503
    assert b"".join(response.streaming_content) == b"ab"
    assert get_store().count_leases(lease_key(spec)) == 0
    assert client.get("/export/").status_code == 200
    assert keeper.held == 0


def test_shadow_mode_admits_and_reports(client: Client) -> None:
    spec = ConcurrencySpec(name="exports", limit=1, mode="shadow")
    registry.register(spec)
    events: list[dict[str, Any]] = []
    signals.request_shed.connect(receiver := lambda **kw: events.append(kw))
    try:
        occupy(spec)
        assert client.get("/export/").status_code == 200
    finally:
        signals.request_shed.disconnect(receiver)
    assert [(e["reason"], e["shadow"]) for e in events] == [("concurrency", True)]


def test_concurrency_slot_for_any_code() -> None:
    registry.register(ConcurrencySpec(name="reports", limit=1))
    with concurrency_slot("reports", key="customer-1"):
        with pytest.raises(Overloaded) as refused, concurrency_slot("reports", key="customer-1"):
            pass
        assert refused.value.policy == "reports"
        with concurrency_slot("reports", key="customer-2"):
            pass
    with concurrency_slot("reports", key="customer-1"):
        pass


def test_an_unknown_limit_is_a_clear_error() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with (
        pytest.raises(ImproperlyConfigured, match="No concurrency limit named 'nope'"),
        concurrency_slot("nope"),
    ):
        pass


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"limit": "0"}, "at least 1"),
        ({"key": "cookie:x"}, "header:<name>"),
        ({"waiting_room": True, "key": "ip"}, "one line"),
        ({"waiting_room": True, "refresh": 40, "queue_timeout": 30}, "refresh more often"),
    ],
)
def test_bad_policies_are_refused(fields: dict[str, Any], message: str) -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match=message):
        ConcurrencySpec.build("x", fields)


def test_when_the_store_is_down_closed_refuses_and_open_admits(
    client: Client, settings: Any, private_redis: Any
) -> None:
    settings.STABILITY = {**settings.STABILITY, "STORE_URL": private_redis.url}
    private_redis.stop()
    with override_policy(
        ConcurrencySpec(name="exports", limit=5, on_store_failure="closed", retry_after=1)
    ):
        assert client.get("/export/").status_code == 503
    with override_policy(ConcurrencySpec(name="exports", limit=1)):
        assert client.get("/export/").status_code == 200  # per-process limit meanwhile
    assert get_store().degraded  # type: ignore[attr-defined]


def test_the_keeper_renews_long_holders_and_stops_when_released() -> None:
    store = get_store()
    slot = Slot("concurrency:long:*", "me", ttl=0.3)
    assert store.acquire_lease(slot.key, slot.holder, 1, slot.ttl).acquired
    own = LeaseKeeper()
    own.hold(slot)
    time.sleep(0.8)  # more than twice the TTL: only renewals keep it
    assert store.count_leases(slot.key) == 1
    own.drop(slot)
    time.sleep(0.45)
    assert store.count_leases(slot.key) == 0


def test_a_lost_lease_is_reported_not_renewed(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    own = LeaseKeeper(clock=lambda: now[0])
    own._thread = None  # driven by hand below, no thread
    slot = Slot("concurrency:gone:*", "me", ttl=30)
    own._held[slot] = 0.0
    now[0] = 11.0
    own.renew_due()  # the store never had it: renewal fails
    assert own.held == 0
    assert "Lost the lease" in caplog.text


@pytest.mark.slow
def test_a_cluster_limit_across_three_processes_is_never_exceeded() -> None:
    results = run_in_processes(
        "tests.shedding_children.contend", [("cluster", 2, 25, 0.02)] * 3, timeout=90
    )
    assert max(r["peak"] for r in results) <= 2
    assert sum(r["held"] for r in results) >= 10  # the slots were used...
    assert sum(r["refused"] for r in results) > 0  # ...and contended


@pytest.mark.slow
def test_a_killed_holder_frees_its_slot_within_the_lease_ttl() -> None:
    ttl = 1.0
    spec = ConcurrencySpec(name="crash", limit=1, lease_ttl=ttl)
    process = start_process("tests.shedding_children.hold_forever", "crash", ttl)
    store = get_store()
    try:
        deadline = time.monotonic() + 60
        while store.get("holding:crash") is None:
            assert process.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(2.5 * ttl)  # outlives its TTL twice over: the keeper renews it
        assert store.count_leases(lease_key(spec)) == 1
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        killed = time.monotonic()
        while store.count_leases(lease_key(spec)) and time.monotonic() - killed < 10:
            time.sleep(0.02)
        freed_after = time.monotonic() - killed
    finally:
        process.kill()
        process.join(5)
    # Freed within the TTL; the margin covers this loop's polling and a busy machine.
    assert freed_after <= ttl + 0.5
    registry.register(spec)
    with concurrency_slot("crash"):
        pass


async def test_async_requests_take_and_give_back_leases_off_the_event_loop(
    async_client: Any,
) -> None:
    """Under ASGI a routed limit's store calls run in a worker thread, never on the loop."""
    import threading

    store = get_store()
    callers: list[int] = []
    acquire, release = store.acquire_lease, store.release_lease

    def spy_acquire(*args: Any, **kwargs: Any) -> Any:
        callers.append(threading.get_ident())
        return acquire(*args, **kwargs)

    def spy_release(*args: Any, **kwargs: Any) -> Any:
        callers.append(threading.get_ident())
        return release(*args, **kwargs)

    store.acquire_lease = spy_acquire  # type: ignore[method-assign]
    store.release_lease = spy_release  # type: ignore[method-assign]
    try:
        spec = ConcurrencySpec(name="async-pages", path_prefixes=("/acritical/",), limit=2)
        with override_policy(spec):
            response = await async_client.get("/acritical/")
    finally:
        store.acquire_lease, store.release_lease = acquire, release  # type: ignore[method-assign]
    assert response.status_code == 200
    assert len(callers) >= 2  # taken and given back
    assert threading.get_ident() not in callers
