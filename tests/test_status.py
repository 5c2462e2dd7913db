"""The status model: each part's live state as plain data, merged over every process's report."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.contrib.auth.models import User

from django_stability import bulkhead, circuit_breaker, status
from django_stability.brownout import register_feature
from django_stability.concurrency import ConcurrencySpec, lease_key
from django_stability.models import Job
from django_stability.policies import registry
from django_stability.ratelimit import RateLimitSpec, check
from django_stability.reporter import DIRECTORY_KEY, identity, live_directory, reporter
from django_stability.shedding import controller
from django_stability.store import get_store
from tests.operations import fresh_counts, other_process, publish_as

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_counts")]

__all__ = ["fresh_counts"]


def fail() -> None:
    raise ConnectionError("down")


def by_name(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(row for row in rows if row["name"] == name)


def test_the_status_is_plain_json_with_every_section() -> None:
    data = status.collect()
    assert json.loads(json.dumps(data)) == data
    for name, _ in status.PROVIDERS:
        assert name in data, name
    assert data["errors"] == {}
    assert data["served_by"] == identity.id
    assert [row["id"] for row in data["processes"]] == [identity.id]


def test_a_breaker_opened_by_failures_shows_state_rates_and_time_left() -> None:
    breaker = circuit_breaker("payments", window_size=4, minimum_calls=4, wait_in_open=30)
    for _ in range(4):
        with pytest.raises(ConnectionError):
            breaker.call(fail)
    circuit_breaker("inventory")
    rows = status.collect(sections=["breakers"])["breakers"]
    payments = by_name(rows, "payments")
    assert payments["state"] == "open"
    assert payments["failure_rate"] == 100.0
    assert payments["calls"] == 4 and payments["failed_calls"] == 4
    assert 0 < payments["time_left_open"] <= 30
    assert payments["processes"] == {"open": 1}
    assert by_name(rows, "inventory")["state"] == "closed"


def test_the_mode_set_by_an_operator_wins_over_the_windows() -> None:
    circuit_breaker("payments", mode="forced_open")
    circuit_breaker("search", mode="disabled")
    rows = status.collect(sections=["breakers"])["breakers"]
    assert by_name(rows, "payments")["state"] == "forced_open"
    assert by_name(rows, "search")["state"] == "disabled"


def test_a_cluster_breaker_shows_the_shared_verdict() -> None:
    breaker = circuit_breaker("ledger", scope="cluster", wait_in_open=60)
    breaker.trip("by the test")
    row = by_name(status.collect(sections=["breakers"])["breakers"], "ledger")
    assert row["shared"] == "open"
    assert row["state"] == "open"
    assert 50 < row["time_left_open"] <= 60
    breaker.reset()
    row = by_name(status.collect(sections=["breakers"])["breakers"], "ledger")
    assert row["shared"] == "closed" and row["state"] == "closed"


def test_rate_limits_show_decisions_refusals_and_the_most_limited_keys() -> None:
    registry.register(RateLimitSpec(name="login", rate="1/h"))
    registry.register(RateLimitSpec(name="search", rate="100/m"))
    for key in ("203.0.113.7", "198.51.100.1"):
        assert check("login", key).allowed
        assert not check("login", key).allowed
    assert check("search", "x").allowed
    rows = status.collect(sections=["ratelimits"])["ratelimits"]
    login = by_name(rows, "login")
    assert login["rate"] == "1/h"
    assert login["decisions"] == 4
    assert login["refusals"] == 2
    assert login["limited_count"] == 2
    assert {item["key"] for item in login["limited"]} == {"203.0.113.7", "198.51.100.1"}
    assert all(3000 < item["retry_in"] <= 3600 for item in login["limited"])
    search = by_name(rows, "search")
    assert (search["decisions"], search["refusals"], search["limited"]) == (1, 0, [])


def test_shedding_counts_requests_in_flight_by_class_and_who_sheds(settings: Any) -> None:
    settings.STABILITY = {**settings.STABILITY, "SHEDDING_MAX_IN_FLIGHT": 4}
    held = [controller.try_enter("sheddable").admitted for _ in range(2)]
    refused = controller.try_enter("sheddable")  # over the sheddable share (half of 4)
    try:
        assert refused.refused
        section = status.collect(sections=["shedding"])["shedding"]
        assert section["in_flight"]["sheddable"] == 2
        assert section["processes_shedding"]["sheddable"] == 1
        assert section["shed"]["sheddable"] == 1
        assert section["limit_total"] == 4
        assert section["browned_out_processes"] == 1  # it shed a moment ago
    finally:
        for admitted in held:
            assert admitted is not None
            controller.leave(admitted)


def test_features_concurrency_bulkheads_and_cache_sections() -> None:
    register_feature("recommendations")
    register_feature("banner", enabled=False)
    registry.register(ConcurrencySpec(name="exports", limit=3))
    spec = registry.get(ConcurrencySpec, "exports")
    assert spec is not None
    get_store().acquire_lease(lease_key(spec), "somewhere-else", 3, 30)
    slots = bulkhead("reports", max_concurrent=2)
    slot = slots.acquire()
    from django_stability.cache import counters

    counters.reset()
    counters.add("catalogue", "hits", 5)
    counters.add("catalogue", "stale", 2)
    try:
        data = status.collect(sections=["features", "concurrency", "bulkheads", "cache"])
    finally:
        slots.release(slot)
        counters.reset()
    assert by_name(data["features"], "recommendations")["state"] == "on"
    assert by_name(data["features"], "banner")["state"] == "off"
    assert by_name(data["concurrency"], "exports")["holders"] == 1
    reports = by_name(data["bulkheads"], "reports")
    assert (reports["in_use"], reports["limit"]) == (1, 2)
    catalogue = by_name(data["cache"]["policies"], "catalogue")
    assert (catalogue["hits"], catalogue["stale"]) == (5, 2)


def test_jobs_are_counted_by_name_and_never_show_owners_or_parameters() -> None:
    alice = User.objects.create_user("alice")
    Job.objects.create(name="export", owner=alice, parameters={"secret": "p-123"})
    Job.objects.create(name="export", owner=alice, state=Job.RUNNING)
    from django.utils import timezone

    Job.objects.create(name="export", state=Job.FAILED, finished_at=timezone.now())
    Job.objects.create(name="thumbnails", state=Job.SUCCEEDED, finished_at=timezone.now())
    jobs = status.collect(sections=["jobs"])["jobs"]
    export = by_name(jobs["by_name"], "export")
    assert (export["queued"], export["running"], export["failed"]) == (1, 1, 1)
    assert by_name(jobs["by_name"], "thumbnails")["succeeded"] == 1
    text = json.dumps(jobs)
    assert "alice" not in text and "p-123" not in text
    assert str(Job.objects.first().id) not in text  # type: ignore[union-attr]


def test_reports_of_other_processes_are_merged() -> None:
    circuit_breaker("payments")
    registry.register(RateLimitSpec(name="login", rate="1/h"))
    other = other_process(
        breakers={
            "payments": {
                "state": "open",
                "mode": "automatic",
                "scope": "process",
                "failure_rate": 100.0,
                "slow_call_rate": 0.0,
                "calls": 10,
                "failed_calls": 10,
                "slow_calls": 0,
                "time_left_open": 12.5,
                "opens": 1,
            }
        },
        counts=[
            [["ratelimit_decisions", "login"], 7],
            [["ratelimit_refusals", "login", "false"], 3],
        ],
    )
    other["admission"]["by_class"]["default"] = 5
    other["admission"]["in_flight"] = 5
    publish_as("web-2:4242:abc", other)
    data = status.collect()
    assert {row["id"] for row in data["processes"]} == {identity.id, "web-2:4242:abc"}
    payments = by_name(data["breakers"], "payments")
    assert payments["state"] == "open"  # the worst state of any process
    assert payments["processes"] == {"closed": 1, "open": 1}
    assert payments["calls"] == 10 and payments["time_left_open"] == 12.5
    login = by_name(data["ratelimits"], "login")
    assert (login["decisions"], login["refusals"]) == (7, 3)
    # This request-less test process has nothing in flight; the other has 5.
    assert data["shedding"]["in_flight"]["default"] == 5


def test_the_command_view_leaves_itself_out_unless_alone() -> None:
    alone = status.collect(include_self=False, sections=["processes"])
    assert [row["id"] for row in alone["processes"]] == [identity.id]
    publish_as("web-2:1:abc", other_process())
    others = status.collect(include_self=False, sections=["processes"])
    assert [row["id"] for row in others["processes"]] == ["web-2:1:abc"]


def test_an_expired_report_is_not_read() -> None:
    publish_as("web-3:1:abc", other_process(), lifetime=0.2)
    time.sleep(0.4)
    ids = [row["id"] for row in status.collect(sections=["processes"])["processes"]]
    assert ids == [identity.id]


def test_the_reporter_publishes_this_process_and_reads_it_back() -> None:
    circuit_breaker("payments")
    reporter.publish()
    raw = get_store().get(f"reports:process:{identity.id}")
    assert raw is not None and json.loads(raw)["breakers"]["payments"]["state"] == "closed"
    listed = live_directory(get_store().get(DIRECTORY_KEY), time.time())
    assert identity.id in listed
    # Read back with this process's own fresh report, never twice.
    assert [r["id"] for r in reporter.reports()] == [identity.id]


def test_the_reporter_thread_starts_on_a_request_and_reports(
    client: Any, settings: Any, key_prefix: str
) -> None:
    settings.STABILITY = {**settings.STABILITY, "DASHBOARD_REPORT_INTERVAL": 0.2}
    assert not reporter.running
    client.get("/hello/")
    assert reporter.running
    deadline = time.monotonic() + 10
    while get_store().get(f"reports:process:{identity.id}") is None:
        assert time.monotonic() < deadline, "no report within 10 s"
        time.sleep(0.05)
    settings.STABILITY = {**settings.STABILITY, "DASHBOARD_REPORT_INTERVAL": None}
    reporter.stop()
    assert not reporter.running


def test_a_failing_section_leaves_an_error_and_the_rest_stands(monkeypatch: Any) -> None:
    def broken(reports: Any) -> Any:
        raise RuntimeError("the bulkheads are on fire")

    providers = [(n, broken if n == "bulkheads" else p) for n, p in status.PROVIDERS]
    monkeypatch.setattr(status, "PROVIDERS", tuple(providers))
    data = status.collect()
    assert data["bulkheads"] is None
    assert data["errors"] == {"bulkheads": "RuntimeError: the bulkheads are on fire"}
    assert data["breakers"] == [] or isinstance(data["breakers"], list)


def test_the_store_section_times_a_round_trip_and_sees_the_fallback(
    private_redis: Any, settings: Any
) -> None:
    settings.STABILITY = {
        **settings.STABILITY,
        "STORE_URL": private_redis.url,
        "STORE_BREAKER_THRESHOLD": 1,
    }
    row = status.collect(sections=["store"])["store"]
    assert row["kind"] == "redis" and row["state"] == "closed"
    assert row["round_trip_ms"] is not None and row["error"] is None
    private_redis.stop()
    get_store().get("anything")  # one failure opens the store's breaker (threshold 1)
    row = status.collect(sections=["store"])["store"]
    assert row["state"] == "open"
    assert row["round_trip_ms"] is None and row["time_left_open"] > 0
    assert row["processes_on_fallback"] == 1
