"""The policy registry: layers, one snapshot per process, changes reaching every process."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection

from django_stability.models import Policy, RateLimitPolicy
from django_stability.policies import GENERATION_KEY, registry
from django_stability.ratelimit import RateLimitSpec
from django_stability.store import get_store
from tests.multiproc import start_process


def generation() -> str | None:
    return get_store().get(GENERATION_KEY)


@pytest.fixture
def no_code_defaults() -> None:
    """No policy from code: modules imported by other tests register theirs at import.

    (The autouse fixture puts the code layer back after the test.)
    """
    registry.restore_code_defaults({})


def test_layers_override_field_by_field(db: Any, settings: Any) -> None:
    registry.register(RateLimitSpec(name="login", rate="5/m", key="user"))
    assert registry.get(RateLimitSpec, "login") == RateLimitSpec(
        name="login", rate="5/m", key="user"
    )
    settings.STABILITY = {
        **settings.STABILITY,
        "POLICIES": {"ratelimit": {"login": {"rate": "10/m"}}},
    }
    spec = registry.get(RateLimitSpec, "login")
    assert spec is not None and (spec.rate, spec.key) == ("10/m", "user")
    RateLimitPolicy.objects.create(name="login", config={"burst": 3})
    registry.reload()
    spec = registry.get(RateLimitSpec, "login")
    assert spec is not None and (spec.rate, spec.key, spec.burst) == ("10/m", "user", 3)


def test_admin_only_policy_uses_the_kind_defaults(db: Any, no_code_defaults: None) -> None:
    RateLimitPolicy.objects.create(name="search", config={"rate": "20/s"})
    registry.reload()
    spec = registry.get(RateLimitSpec, "search")
    assert spec is not None and spec.rate == "20/s" and spec.key == "ip"
    assert registry.get(RateLimitSpec, "unknown") is None
    assert [s.name for s in registry.all(RateLimitSpec)] == ["search"]


def test_invalid_row_is_ignored_and_the_code_default_serves(db: Any) -> None:
    registry.register(RateLimitSpec(name="api", rate="100/m"))
    Policy.objects.create(kind="ratelimit", name="api", config={"rate": "lots"})
    registry.reload()
    spec = registry.get(RateLimitSpec, "api")
    assert spec is not None and spec.rate == "100/m"


def test_build_refuses_bad_values_with_the_expected_format() -> None:
    with pytest.raises(ValidationError) as info:
        RateLimitSpec.build("x", {"rate": "5 per minute", "burst": "many", "colour": "red"})
    errors = info.value.message_dict
    assert "e.g. 100/m or 5/10s" in errors["rate"][0]
    assert "whole number" in errors["burst"][0]
    assert "colour" in errors["__all__"][0] and "rate" in errors["__all__"][0]


def test_lookups_do_no_query_once_loaded(db: Any, django_assert_num_queries: Any) -> None:
    RateLimitPolicy.objects.create(name="p", config={"rate": "1/s"})
    registry.reload()
    with django_assert_num_queries(0):
        for _ in range(1000):
            registry.get(RateLimitSpec, "p")


def test_derived_values_are_rebuilt_only_when_policies_change(
    db: Any, no_code_defaults: None
) -> None:
    calls = []

    def build() -> int:
        calls.append(1)
        return len(registry.all(RateLimitSpec))

    assert registry.derived("count", build) == 0
    assert registry.derived("count", build) == 0
    registry.register(RateLimitSpec(name="one"))
    assert registry.derived("count", build) == 1
    assert len(calls) == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "change",
    ["save", "delete", "update", "bulk_create", "bulk_update", "queryset_delete", "command"],
)
def test_every_kind_of_change_moves_the_generation(change: str) -> None:
    policy = RateLimitPolicy.objects.create(name="g", config={"rate": "1/s"})
    before = generation()
    assert before is not None
    if change == "save":
        policy.config = {"rate": "2/s"}
        policy.save()
    elif change == "delete":
        policy.delete()
    elif change == "update":
        RateLimitPolicy.objects.filter(name="g").update(config={"rate": "3/s"})
    elif change == "bulk_create":
        RateLimitPolicy.objects.bulk_create([RateLimitPolicy(name="h", kind="ratelimit")])
    elif change == "bulk_update":
        policy.config = {"rate": "4/s"}
        RateLimitPolicy.objects.bulk_update([policy], ["config"])
    elif change == "queryset_delete":
        RateLimitPolicy.objects.filter(name="g").delete()
    else:
        call_command("stability_invalidate", stdout=io.StringIO())
    assert generation() != before


@pytest.mark.django_db(transaction=True)
def test_a_change_in_one_process_reaches_another_within_two_seconds() -> None:
    registry.register(RateLimitSpec(name="xproc", rate="1/m"))
    RateLimitPolicy.objects.create(name="xproc", config={"rate": "2/m"})
    child = start_process("tests.children.wait_for_rate", "xproc", "3/m", 30.0)
    store = get_store()
    deadline = time.monotonic() + 60
    while store.get("ready:xproc") is None:
        assert time.monotonic() < deadline, "the child process did not start"
        assert child.is_alive() or child.exitcode == 0
        time.sleep(0.05)
    saved_at = time.time()
    RateLimitPolicy.objects.filter(name="xproc").update(config={"rate": "3/m"})
    child.join(timeout=30)
    assert child.exitcode == 0
    seen_at = float(store.get("seen:xproc") or "inf")
    assert seen_at - saved_at < 2.0


@pytest.mark.django_db(transaction=True)
def test_database_unreadable_keeps_the_last_snapshot(client: Any) -> None:
    RateLimitPolicy.objects.create(name="kept", config={"rate": "7/m"})
    registry.reload()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE django_stability_policy RENAME TO django_stability_policy_away")
    try:
        registry.publish_change()  # everyone must reload now, but nobody can read the table
        registry.refresh_if_due()
        spec = registry.get(RateLimitSpec, "kept")
        assert spec is not None and spec.rate == "7/m"
        assert client.get("/hello/").status_code == 200
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "ALTER TABLE django_stability_policy_away RENAME TO django_stability_policy"
            )


@pytest.mark.django_db(transaction=True)
def test_database_unreadable_from_the_start_serves_the_code_defaults() -> None:
    registry.register(RateLimitSpec(name="code", rate="9/m"))
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE django_stability_policy RENAME TO django_stability_policy_away")
    try:
        spec = registry.get(RateLimitSpec, "code")
        assert spec is not None and spec.rate == "9/m"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "ALTER TABLE django_stability_policy_away RENAME TO django_stability_policy"
            )


def test_refresh_interval_bounds_the_store_lookups(db: Any) -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    registry.clock = clock
    try:
        registry.reset()
        registry.get(RateLimitSpec, "x")
        looked_at = generation()
        get_store().set(GENERATION_KEY, "changed-elsewhere", 60)
        clock.now = 0.5  # before POLICY_REFRESH (1 s, jittered to at least 0.75 s)
        registry.get(RateLimitSpec, "x")
        RateLimitPolicy.objects.create(name="x", config={"rate": "4/s"})
        assert looked_at is not None
        spec = registry.get(RateLimitSpec, "x")
        assert spec is None  # not reloaded yet
        clock.now = 1.01
        spec = registry.get(RateLimitSpec, "x")
        assert spec is not None and spec.rate == "4/s"
    finally:
        registry.clock = time.monotonic


def test_policies_from_settings_are_validated_at_lookup(db: Any, settings: Any) -> None:
    settings.STABILITY = {
        **settings.STABILITY,
        "POLICIES": {"ratelimit": {"bad": {"rate": "fast"}}},
    }
    assert registry.get(RateLimitSpec, "bad") is None


def test_an_unreadable_database_is_asked_again_later_and_later(db: Any) -> None:
    class Clock:
        now = 100.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    registry.clock = clock
    try:
        registry.reset()
        with connection.cursor() as cursor:
            cursor.execute(
                "ALTER TABLE django_stability_policy RENAME TO django_stability_policy_away"
            )
        with connection.cursor() as cursor:
            cursor.execute("SAVEPOINT before_reads")
        waits = []
        for _ in range(4):
            clock.now = registry._next_check
            started = clock.now
            registry.get(RateLimitSpec, "x")
            waits.append(registry._next_check - started)
            with connection.cursor() as cursor:
                cursor.execute("ROLLBACK TO SAVEPOINT before_reads")
        assert waits == sorted(waits)
        assert waits[-1] > waits[0] * 4
    finally:
        registry.clock = time.monotonic
