"""The decisions of a protected call, driven with made-up readings: no Redis, no sleeping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from django_stability.cache.envelope import (
    jittered,
    pack_header,
    pack_tuple,
    split,
    unpack_tuple,
    xfetch_factor,
)
from django_stability.cache.flow import (
    GET,
    MISS,
    Compute,
    Computed,
    Count,
    Failed,
    Land,
    Plan,
    Read,
    Refresh,
    Release,
    Wait,
    Watch,
    protect,
    refresh_in_background,
    serve_stale,
)
from django_stability.cache.home import ABSENT, FRESH, STALE, Keys, Reading
from django_stability.cache.policy import CacheSpec
from django_stability.exceptions import CacheWaitTimeout

NOW = 1000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def plan(clock: FakeClock | None = None, mode: str = "compute", **policy: Any) -> Plan:
    return Plan(
        keys=Keys("k", None, ":1:k"),
        policy=CacheSpec(name="p", **policy),
        ttl=10.0,
        token="t",
        mode=mode,
        clock=clock or FakeClock(),
    )


def fresh(value: Any = "old", locked: bool = False) -> Reading:
    return Reading(FRESH, value, soft_expiry=NOW + 5, compute_time=0.1, now=NOW, locked=locked)


def stale(age: float, locked: bool = False, backoff: bool = False, value: Any = "old") -> Reading:
    return Reading(STALE, value, NOW - age, 0.1, NOW, locked, backoff)


def absent(locked: bool = False) -> Reading:
    return Reading(ABSENT, now=NOW, locked=locked)


def run(
    flow_plan: Plan,
    readings: list[Reading],
    outcome: Computed | Failed | None = None,
    refresh_taken: bool = False,
    flow: Any = None,
) -> tuple[Any, list[Any]]:
    """Drive the flow; returns (result or the exception raised, effects)."""
    effects: list[Any] = []
    pending: Iterator[Reading] = iter(readings)
    gen = flow if flow is not None else protect(flow_plan)
    answer: Any = None
    clock = flow_plan.clock
    while True:
        try:
            effect = gen.send(answer)
        except StopIteration as done:
            return done.value, effects
        except Exception as exc:  # the flow raised to its caller
            return exc, effects
        effects.append(effect)
        answer = None
        if isinstance(effect, Read):
            answer = next(pending)
        elif isinstance(effect, Compute):
            answer = outcome or Computed("new", 0.2)
        elif isinstance(effect, Land):
            answer = True
        elif isinstance(effect, Refresh):
            answer = refresh_taken
        elif isinstance(effect, Wait):
            assert isinstance(clock, FakeClock)
            clock.now += effect.timeout


def kinds(effects: list[Any]) -> list[str]:
    return [type(e).__name__ for e in effects]


def counted(effects: list[Any]) -> list[str]:
    return [e.event for e in effects if isinstance(e, Count)]


def test_a_fresh_value_is_returned_as_it_is() -> None:
    result, effects = run(plan(), [fresh()])
    assert result == "old"
    assert kinds(effects) == ["Read", "Count"]
    assert counted(effects) == ["hits"]


def test_early_refresh_winner_recomputes_and_serves_the_fresh_value_if_that_fails() -> None:
    result, effects = run(plan(), [fresh(locked=True)])
    assert result == "new"
    assert Land("new", 0.2, NOW, True) in effects
    result, effects = run(plan(), [fresh(locked=True)], Failed(RuntimeError("db down")))
    assert result == "old"
    assert Release(backoff=True) in effects
    assert counted(effects) == ["errors", "hits"]


def test_stale_value_one_recomputes_the_others_get_it_at_once() -> None:
    result, effects = run(plan(), [stale(age=1, locked=True)])
    assert result == "new"
    assert "Compute" in kinds(effects)
    assert counted(effects) == ["recomputes"]
    result, effects = run(plan(), [stale(age=1)])
    assert result == "old"
    assert kinds(effects) == ["Read", "Count"]  # no wait, no compute
    assert counted(effects) == ["stale"]


def test_background_refresh_returns_stale_at_once_or_recomputes_when_the_pool_is_busy() -> None:
    background = plan(refresh="thread")
    result, effects = run(background, [stale(age=1, locked=True)], refresh_taken=True)
    assert result == "old"
    assert "Compute" not in kinds(effects)
    result, effects = run(background, [stale(age=1, locked=True)], refresh_taken=False)
    assert result == "new"


def test_a_failed_recompute_serves_stale_within_the_window_then_raises() -> None:
    p = plan(stale_if_error=30)
    error = RuntimeError("db down")
    result, effects = run(p, [stale(age=10, locked=True)], Failed(error))
    assert result == "old"
    assert Release(backoff=True) in effects
    assert counted(effects) == ["errors", "stale"]
    result, effects = run(p, [stale(age=31, locked=True)], Failed(error))
    assert result is error
    assert Release(backoff=True) in effects


def test_while_backing_off_stale_is_served_past_the_grace_within_the_window() -> None:
    p = plan(grace=5, stale_if_error=30)
    assert serve_stale(p.policy, stale(age=4))
    assert not serve_stale(p.policy, stale(age=6))
    assert serve_stale(p.policy, stale(age=6, backoff=True))
    assert not serve_stale(p.policy, stale(age=31, backoff=True))
    result, effects = run(p, [stale(age=20, backoff=True)])
    assert result == "old"
    assert "Watch" not in kinds(effects)


def test_no_value_one_computes() -> None:
    result, effects = run(plan(), [absent(locked=True)])
    assert result == "new"
    assert kinds(effects) == ["Read", "Compute", "Land", "Count"]


def test_no_value_the_others_wait_and_get_the_value_without_computing() -> None:
    clock = FakeClock()
    result, effects = run(
        plan(clock, wait=5, lease=1.5), [absent(), absent(), absent(), fresh("v")]
    )
    assert result == "v"
    assert "Compute" not in kinds(effects)
    assert kinds(effects)[:4] == ["Read", "Watch", "Count", "Read"]
    waits = [e.timeout for e in effects if isinstance(e, Wait)]
    assert waits == [0.5, 0.5]  # a third of a lease: a dead holder is seen within one lease
    assert counted(effects) == ["waits"]


def test_a_waiter_takes_over_when_the_holder_is_gone() -> None:
    result, effects = run(plan(), [absent(), absent(), absent(locked=True)])
    assert result == "new"
    assert Compute(True) in effects


def test_the_wait_is_bounded_then_compute_without_the_lock_or_raise() -> None:
    readings = [absent()] * 20
    result, effects = run(plan(FakeClock(), wait=1.0, lease=0.3), readings)
    assert result == "new"
    assert Compute(False) in effects
    assert Land("new", 0.2, NOW, False) in effects
    assert "Release" not in kinds(effects)

    result, effects = run(plan(FakeClock(), wait=1.0, on_wait_timeout="raise"), readings)
    assert isinstance(result, CacheWaitTimeout)
    assert result.policy == "p"
    assert "Compute" not in kinds(effects)  # a waiter never computes and then raises


def test_get_mode_tells_one_caller_to_compute_and_never_computes_itself() -> None:
    result, effects = run(plan(mode=GET), [absent(locked=True)])
    assert result is MISS
    assert "Compute" not in kinds(effects)
    result, _ = run(plan(mode=GET), [stale(age=1, locked=True)])
    assert result is MISS
    result, _ = run(plan(mode=GET), [stale(age=1)])
    assert result == "old"
    result, effects = run(plan(FakeClock(), mode=GET, wait=1), [absent()] * 20)
    assert result is MISS
    assert "Compute" not in kinds(effects)


def test_background_refresh_never_raises_and_backs_off() -> None:
    p = plan()
    result, effects = run(
        p, [], Failed(RuntimeError("x")), flow=refresh_in_background(p, stale(age=1, locked=True))
    )
    assert result is None
    assert Release(backoff=True) in effects
    _, effects = run(p, [], flow=refresh_in_background(p, stale(age=1, locked=True)))
    assert Land("new", 0.2, NOW, True) in effects


def test_plan_keeps_values_for_the_longest_stale_window_and_get_mode_leases_longer() -> None:
    p = plan(grace=5, stale_if_error=30)
    assert p.hard == 40.0
    assert plan(mode=GET, lease=1, wait=4).lease == 4
    assert plan(lease=1, wait=4).lease == 1
    assert Plan(Keys("k", None, "k"), CacheSpec(), None, "t").hard is None
    assert plan(error_backoff=2, stale_if_error=600).backoff.cap == 60.0


def test_watch_comes_before_the_read_that_decides_to_wait() -> None:
    # A value landing between the first read and the watch is seen by the next read.
    _, effects = run(plan(), [absent(), fresh("v")])
    assert kinds(effects)[:4] == ["Read", "Watch", "Count", "Read"]
    assert isinstance(effects[1], Watch)


# The envelope and the randomness -----------------------------------------------------


def test_envelope_header_round_trip_and_plain_values() -> None:
    raw = pack_header(1700000000.123456, 0.25, 1699999999.5) + b"\x80payload"
    header, payload = split(raw)  # type: ignore[misc]
    assert payload == b"\x80payload"
    assert header.soft_expiry == pytest.approx(1700000000.123456)
    assert header.compute_time == 0.25
    assert split(b"\x80\x05plain pickle") is None
    assert split(b"123") is None
    assert unpack_tuple(pack_tuple({"a": 1}, 5.0, 0.1, 4.0))[1] == {"a": 1}  # type: ignore[index]
    assert unpack_tuple(("x", 1, 2, 3, 4)) is None


def test_jitter_only_shortens_within_the_fraction() -> None:
    assert jittered(100, 0.1, rand=0.0) == 100
    assert jittered(100, 0.1, rand=1.0) == pytest.approx(90)
    values = {round(jittered(100, 0.1), 3) for _ in range(50)}
    assert len(values) > 40
    assert all(90 <= v <= 100 for v in values)


def test_xfetch_factor() -> None:
    assert xfetch_factor(0) == 0
    assert xfetch_factor(1, rand=1.0) == 0
    assert xfetch_factor(1, rand=0.5) == pytest.approx(0.693, abs=1e-3)
    assert xfetch_factor(2, rand=0.5) == pytest.approx(1.386, abs=1e-3)
