"""The breaker's rules as plain functions of state and time: no threads, no sleeping, no store."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from django_stability.breaker import (
    CLOSED,
    FORCED_OPEN,
    HALF_OPEN,
    METRICS_ONLY,
    OPEN,
    BreakerMachine,
    BreakerSpec,
)
from django_stability.windows import FAILED, SLOW, CountWindow, TimeWindow

OK = 0


def spec(**fields: object) -> BreakerSpec:
    values = {
        "window_size": 10,
        "minimum_calls": 5,
        "failure_rate_threshold": 50,
        "wait_in_open": 10,
        "half_open_calls": 3,
        "half_open_max_wait": 0,
        **fields,
    }
    return BreakerSpec.build("dep", values)


def call(machine: BreakerMachine, outcome: int, now: float) -> None:
    decision = machine.acquire(now)
    assert decision.allowed
    machine.record(decision.epoch, decision.probe, outcome, now)


def test_count_window_keeps_the_last_n_outcomes() -> None:
    window = CountWindow(3)
    for outcome in (FAILED, FAILED | SLOW, OK, OK):
        window.add(outcome)
    assert (window.calls, window.failed, window.slow) == (3, 1, 1)
    window.add(OK, count=2)
    assert (window.calls, window.failed, window.slow) == (3, 0, 0)
    window.add(FAILED)
    window.add(OK, count=100)  # a long run of successes replaces everything
    assert (window.calls, window.failed, window.slow) == (3, 0, 0)


def test_time_window_forgets_what_is_older_than_its_span() -> None:
    window = TimeWindow(5)
    window.add(FAILED, 100.2)
    window.add(OK, 101.5, count=3)
    window.add(SLOW, 104.9)
    assert (window.calls, window.failed, window.slow) == (5, 1, 1)
    window.expire(105.0)  # second 100 left the window [101, 105]
    assert (window.calls, window.failed, window.slow) == (4, 0, 1)
    window.add(OK, 104.0)  # late, but still inside the window
    assert window.calls == 5
    window.add(FAILED, 99.0)  # older than the window: already slid past
    assert window.failed == 0
    window.expire(200.0)
    assert (window.calls, window.failed, window.slow) == (0, 0, 0)


def test_opens_on_failure_rate_only_once_the_minimum_is_reached() -> None:
    machine = BreakerMachine(spec(), 0.0)
    for _ in range(4):
        call(machine, FAILED, 1.0)
    assert machine.state == CLOSED  # 100% failures but only 4 calls
    call(machine, FAILED, 1.0)
    assert machine.state == OPEN
    assert machine.opened_with == (100.0, 0.0, 5)


def test_stays_closed_below_the_threshold() -> None:
    machine = BreakerMachine(spec(), 0.0)
    for i in range(40):
        call(machine, FAILED if i % 3 == 0 else OK, 1.0)  # 33% failures
    assert machine.state == CLOSED


def test_opens_on_slow_call_rate_even_when_calls_succeed() -> None:
    machine = BreakerMachine(spec(slow_call_rate_threshold=60), 0.0)
    for outcome in (SLOW, OK, SLOW, OK, SLOW):
        call(machine, outcome, 1.0)
    assert machine.state == OPEN
    metrics = machine.metrics("dep", 1.0)
    assert (metrics.failure_rate, metrics.slow_call_rate, metrics.calls) == (0.0, 60.0, 5)


def test_open_refuses_with_the_time_left_then_lets_exactly_n_probes() -> None:
    machine = BreakerMachine(spec(), 0.0)
    for _ in range(5):
        call(machine, FAILED, 2.0)
    refused = machine.acquire(5.0)
    assert not refused.allowed and refused.retry_after == pytest.approx(7.0)
    decisions = [machine.acquire(12.0) for _ in range(5)]
    assert decisions[0].transition is not None and decisions[0].transition.state == HALF_OPEN
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert all(d.probe for d in decisions[:3])


def test_probes_that_succeed_close_it_and_failed_ones_reopen_with_a_growing_wait() -> None:
    machine = BreakerMachine(spec(wait_multiplier=2, max_wait_in_open=30), 0.0)
    for _ in range(5):
        call(machine, FAILED, 0.0)
    now = 10.0
    waits = []
    for _ in range(4):
        probes = [machine.acquire(now) for _ in range(3)]
        for probe in probes:
            machine.record(probe.epoch, probe.probe, FAILED, now)
        assert machine.state == OPEN
        waits.append(machine.open_until - now)
        now = machine.open_until
    assert waits == [20.0, 30.0, 30.0, 30.0]  # 10 -> 20 -> 40 capped at 30
    probes = [machine.acquire(now) for _ in range(3)]
    machine.record(probes[0].epoch, True, OK, now)
    machine.record(probes[1].epoch, True, OK, now)
    assert machine.state == HALF_OPEN  # waits for every probe
    machine.record(probes[2].epoch, True, FAILED, now)  # 33% < 50%
    assert machine.state == CLOSED
    assert machine.opens == 0
    for _ in range(5):
        call(machine, FAILED, now)
    assert machine.open_until - now == 10.0  # the wait starts over after closing


def test_half_open_for_too_long_opens_again() -> None:
    machine = BreakerMachine(spec(half_open_max_wait=5), 0.0)
    for _ in range(5):
        call(machine, FAILED, 0.0)
    probe = machine.acquire(10.0)
    assert probe.probe
    refused = machine.acquire(15.0)
    assert refused.transition is not None and refused.transition.state == OPEN
    assert "half_open_max_wait" in refused.transition.reason
    # The probe that was still out ends now: it started in another state and does not count.
    machine.record(probe.epoch, True, OK, 15.1)
    assert machine.state == OPEN


def test_an_outcome_from_an_earlier_state_is_not_counted() -> None:
    machine = BreakerMachine(spec(), 0.0)
    early = machine.acquire(0.0)
    for _ in range(5):
        call(machine, FAILED, 0.0)
    assert machine.state == OPEN
    assert machine.record(early.epoch, early.probe, FAILED, 0.5) is None
    machine.acquire(10.0)  # half-open
    assert machine.probe_calls == 0
    machine.record(early.epoch, False, OK, 10.0)
    assert machine.probe_calls == 0


def test_an_ignored_probe_gives_its_permit_back() -> None:
    machine = BreakerMachine(spec(), 0.0)
    for _ in range(5):
        call(machine, FAILED, 0.0)
    probes = [machine.acquire(10.0) for _ in range(3)]
    assert not machine.acquire(10.0).allowed
    machine.release(probes[0].epoch, True)
    assert machine.acquire(10.0).allowed


def test_disabled_lets_everything_through_and_counts_nothing() -> None:
    machine = BreakerMachine(spec(mode="disabled"), 0.0)
    for _ in range(50):
        call(machine, FAILED, 0.0)
    assert machine.state == CLOSED
    assert machine.window.calls == 0
    assert machine.metrics("dep", 0.0).state == "disabled"


def test_forced_open_refuses_everything() -> None:
    machine = BreakerMachine(spec(mode=FORCED_OPEN), 0.0)
    decision = machine.acquire(0.0)
    assert not decision.allowed and decision.retry_after is None
    assert machine.metrics("dep", 0.0).state == "forced_open"


def test_metrics_only_decides_as_automatic_would_but_never_refuses() -> None:
    machine = BreakerMachine(spec(mode=METRICS_ONLY), 0.0)
    last = None
    for _ in range(5):
        decision = machine.acquire(0.0)
        last = machine.record(decision.epoch, decision.probe, FAILED, 0.0) or last
    assert machine.state == OPEN
    assert last is not None and last.shadow
    while_open = machine.acquire(1.0)
    assert while_open.allowed and while_open.epoch == -1  # let through, not counted
    probes = [machine.acquire(10.0) for _ in range(5)]
    assert all(p.allowed for p in probes)
    assert sum(p.probe for p in probes) == 3


def test_time_window_spec_opens_on_recent_failures_only() -> None:
    machine = BreakerMachine(spec(window_type="time", window_size=10, minimum_calls=4), 0.0)
    for _ in range(3):
        call(machine, FAILED, 0.5)
    for _ in range(4):
        call(machine, OK, 20.0)  # the failures have left the 10 s window
    call(machine, FAILED, 20.5)
    assert machine.state == CLOSED  # 1 of 5
    call(machine, FAILED, 21.0)
    call(machine, FAILED, 21.0)
    assert machine.state == CLOSED  # 3 of 7
    call(machine, FAILED, 21.0)
    assert machine.state == OPEN  # 4 of 8


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"minimum_calls": 20, "window_size": 10}, "never holds 20"),
        ({"failure_rate_threshold": 0}, "percentage above 0"),
        ({"failure_rate_threshold": 150}, "at most 100"),
        ({"wait_in_open": -1}, "above 0"),
        ({"wait_multiplier": 0.5}, "at least 1"),
        ({"max_wait_in_open": 5, "wait_in_open": 10}, "at least wait_in_open"),
        ({"record_exceptions": "ConnectionError"}, "dotted paths"),
        ({"mode": "sometimes"}, "Expected one of"),
    ],
)
def test_bad_policies_are_refused_with_the_expected_format(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        BreakerSpec.build("dep", fields)
