"""Circuit breakers in process scope: real threads, real time, no mocks."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from django_stability import BreakerOpen, BulkheadFull, circuit_breaker, signals
from django_stability.breaker import CLOSED, HALF_OPEN, OPEN, BreakerSpec, get_breaker
from django_stability.test import override_policy


@pytest.fixture
def transitions() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def record(**kwargs: Any) -> None:
        seen.append(kwargs)

    signals.breaker_state_changed.connect(record, weak=False)
    try:
        yield seen
    finally:
        signals.breaker_state_changed.disconnect(record)


def fail() -> None:
    raise ConnectionError("refused")


def trip(breaker: Any, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            breaker.call(fail)


@pytest.mark.slow
def test_dead_dependency_at_100_calls_a_second_from_8_threads(
    transitions: list[dict[str, Any]],
) -> None:
    """Once open, no call reaches the dependency until the wait is over; then exactly N probes."""
    breaker = circuit_breaker(
        "dead",
        window_size=20,
        minimum_calls=10,
        failure_rate_threshold=50,
        wait_in_open=1.0,
        half_open_calls=3,
        half_open_max_wait=0,
    )
    reached: list[float] = []
    lock = threading.Lock()

    def dependency() -> None:
        with lock:
            reached.append(time.monotonic())
        raise ConnectionError("the dependency is dead")

    stop_at = time.monotonic() + 3.4
    refused = [0]

    def client() -> None:
        # 8 threads, one call each 80 ms: about 100 calls a second in all.
        while time.monotonic() < stop_at:
            try:
                breaker.call(dependency)
            except ConnectionError:
                pass
            except BreakerOpen:
                with lock:
                    refused[0] += 1
            time.sleep(0.08)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    moves = [(t["previous"], t["state"], t["at"]) for t in transitions]
    assert moves[0][:2] == (CLOSED, OPEN)
    cycles = [
        (moves[i][2], moves[i + 1][2], moves[i + 2][2] if i + 2 < len(moves) else None)
        for i in range(0, len(moves) - 1, 2)
    ]
    assert len(cycles) >= 2, moves  # opened, probed and re-opened at least twice
    for i in range(1, len(moves)):
        expected = (OPEN, HALF_OPEN) if i % 2 == 1 else (HALF_OPEN, OPEN)
        assert moves[i][:2] == expected, moves
    for number, (opened_at, half_open_at, reopened_at) in enumerate(cycles):
        # Calls let through just before the first opening may still be on their way
        # (at most one per thread, within a scheduler slice); after that, none at all.
        grace = 0.05 if number == 0 else 0.0
        during_open = [t for t in reached if opened_at + grace < t < half_open_at]
        assert during_open == [], (number, during_open)
        if reopened_at is not None:
            probes = [t for t in reached if half_open_at <= t <= reopened_at]
            assert len(probes) == 3, (
                number,
                probes,
                str(moves[:4]),
                [t for t in reached if half_open_at - 0.05 < t < half_open_at + 0.3],
            )
    assert refused[0] > 100  # the rest was refused at once


def test_successes_on_the_fast_path_are_counted_in_the_window() -> None:
    breaker = circuit_breaker("fast", window_size=50, minimum_calls=10)
    for _ in range(1000):
        assert breaker.call(lambda: 7) == 7
    metrics = breaker.metrics()
    assert (metrics.state, metrics.calls, metrics.failed_calls) == (CLOSED, 50, 0)
    trip(breaker, 24)
    assert breaker.metrics().failure_rate == 48.0  # 24 failures among the last 50 calls
    assert breaker.state == CLOSED
    trip(breaker, 1)
    assert breaker.state == OPEN  # 25 of 50: the 50% threshold


def test_a_call_that_started_before_a_transition_is_not_counted_after_it() -> None:
    breaker = circuit_breaker(
        "stale", window_size=4, minimum_calls=2, wait_in_open=0.05, half_open_calls=1
    )
    entered, release = threading.Event(), threading.Event()

    def slow_success() -> str:
        entered.set()
        release.wait(5)
        return "late"

    results: list[str] = []
    thread = threading.Thread(target=lambda: results.append(breaker.call(slow_success)))
    thread.start()
    assert entered.wait(5)
    trip(breaker, 2)  # opens while the slow call is out
    assert breaker.state == OPEN
    time.sleep(0.06)
    assert breaker.call(lambda: "probe") == "probe"  # half-open, one probe, closes
    assert breaker.state == CLOSED
    release.set()
    thread.join()
    assert results == ["late"]
    assert breaker.metrics().calls == 0  # the late success belongs to the first closed state


def test_slow_calls_open_the_breaker_on_slow_call_rate() -> None:
    breaker = circuit_breaker(
        "slowish",
        window_size=4,
        minimum_calls=4,
        slow_call_duration=0.02,
        slow_call_rate_threshold=75,
    )
    for _ in range(3):
        breaker.call(time.sleep, 0.03)
    assert breaker.state == CLOSED
    breaker.call(lambda: None)
    assert breaker.state == CLOSED  # 3 of 4 slow: 75%... reached only with the next slow one
    breaker.call(time.sleep, 0.03)
    assert breaker.state == OPEN
    assert breaker.metrics().slow_call_rate == 75.0


def test_exceptions_recorded_ignored_or_counted_as_success() -> None:
    class NotFound(Exception):
        pass

    breaker = circuit_breaker(
        "classify",
        record=(ConnectionError, lambda e: isinstance(e, ValueError) and "bad" in str(e)),
        ignore=(NotFound,),
        window_size=10,
        minimum_calls=10,
    )
    assert breaker.classify(ConnectionError()) == "failure"
    assert breaker.classify(ValueError("bad gateway")) == "failure"
    assert breaker.classify(ValueError("fine")) == "success"  # not recorded: a success
    assert breaker.classify(NotFound()) == "ignored"
    assert breaker.classify(KeyboardInterrupt()) == "ignored"
    assert breaker.classify(asyncio.CancelledError()) == "ignored"
    assert breaker.classify(BulkheadFull()) == "ignored"
    with override_policy(
        BreakerSpec(name="classify", ignore_exceptions=("builtins.ConnectionError",))
    ):
        breaker.refresh_policy()
        assert breaker.classify(ConnectionError()) == "ignored"
    for _ in range(5):
        with pytest.raises(NotFound):
            breaker.call(_raise, NotFound())
    assert breaker.metrics().calls == 0


def _raise(error: Exception) -> None:
    raise error


def test_failure_result_counts_a_returned_value_as_a_failure() -> None:
    breaker = circuit_breaker(
        "results", failure_result=lambda r: r >= 500, window_size=2, minimum_calls=2
    )
    assert breaker.call(lambda: 503) == 503
    assert breaker.call(lambda: 502) == 502
    assert breaker.state == OPEN


def test_decorator_context_manager_and_async(transitions: list[dict[str, Any]]) -> None:
    breaker = circuit_breaker(
        "forms", window_size=5, minimum_calls=5, failure_rate_threshold=40, wait_in_open=60
    )

    @breaker
    def sync_call(x: int) -> int:
        return x * 2

    @breaker
    async def async_call(x: int) -> int:
        await asyncio.sleep(0)
        return x * 3

    assert sync_call(2) == 4
    assert sync_call.__name__ == "sync_call"
    assert asyncio.run(async_call(2)) == 6
    with breaker:
        pass
    with pytest.raises(ConnectionError), breaker:
        raise ConnectionError

    async def async_block() -> None:
        async with breaker:
            raise ConnectionError

    with pytest.raises(ConnectionError):
        asyncio.run(async_block())
    assert breaker.state == OPEN
    with pytest.raises(BreakerOpen) as refused:
        sync_call(1)
    assert 59 < refused.value.retry_after <= 60  # type: ignore[operator]
    with pytest.raises(BreakerOpen):
        asyncio.run(async_call(1))
    with pytest.raises(BreakerOpen), breaker:
        pass
    assert [t["state"] for t in transitions] == [OPEN]


def test_operator_modes_from_the_policy() -> None:
    breaker = circuit_breaker("modes", window_size=2, minimum_calls=2)
    with override_policy(BreakerSpec(name="modes", mode="forced_open")):
        breaker.refresh_policy()
        with pytest.raises(BreakerOpen):
            breaker.call(lambda: 1)
        assert breaker.state == "forced_open"
    with override_policy(
        BreakerSpec(name="modes", mode="disabled", window_size=2, minimum_calls=2)
    ):
        breaker.refresh_policy()
        trip(breaker, 10)
        assert breaker.state == "disabled"
        assert breaker.call(lambda: 1) == 1
    with override_policy(
        BreakerSpec(name="modes", mode="metrics_only", window_size=2, minimum_calls=2)
    ):
        breaker.refresh_policy()
        trip(breaker, 3)
        assert breaker.state == OPEN  # it would be open...
        assert breaker.call(lambda: 1) == 1  # ...and lets the call through anyway


def test_a_policy_change_reaches_the_hot_path_without_a_refresh_call() -> None:
    breaker = circuit_breaker("recheck", window_size=2, minimum_calls=2)
    assert breaker.call(lambda: 1) == 1
    with override_policy(BreakerSpec(name="recheck", mode="forced_open")):
        deadline = time.monotonic() + breaker.policy_recheck + 1
        while time.monotonic() < deadline:
            try:
                breaker.call(lambda: 1)
            except BreakerOpen:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the forced-open policy never reached the breaker")


def test_trip_reset_and_one_object_per_name() -> None:
    breaker = circuit_breaker("manual")
    assert get_breaker("manual") is breaker
    breaker.trip()
    assert breaker.state == OPEN
    breaker.reset()
    assert breaker.state == CLOSED
    assert breaker.call(lambda: 1) == 1


def test_every_transition_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    breaker = circuit_breaker(
        "logged", window_size=2, minimum_calls=2, wait_in_open=0.01, half_open_calls=1
    )
    with caplog.at_level(logging.INFO, logger="django_stability.breaker"):
        trip(breaker, 2)
        time.sleep(0.02)
        breaker.call(lambda: 1)
    messages = [r.getMessage() for r in caplog.records if r.name == "django_stability.breaker"]
    assert len(messages) == 3
    assert "'logged' moved from closed to open (failure rate 100% over 2 calls" in messages[0]
    assert [r.levelno for r in caplog.records if r.name == "django_stability.breaker"] == [
        logging.WARNING,
        logging.INFO,
        logging.INFO,
    ]
    assert "from open to half_open" in messages[1]
    assert "from half_open to closed" in messages[2]


@pytest.mark.urls("tests.integration_urls")
def test_an_open_breaker_in_a_view_is_a_503_with_the_time_left(client: Any) -> None:
    from tests.testapp.integration_views import charge

    assert client.get("/pay/").status_code == 200
    charge.breaker.trip()  # type: ignore[attr-defined]
    response = client.get("/pay/", HTTP_ACCEPT="application/json")
    assert response.status_code == 503
    assert response["Retry-After"] == "30"  # the time left open, rounded up
    body = json.loads(response.content)
    assert body["policy"] == "view-dependency" and body["retry_after"] == 30
    handled = client.get("/pay-or-later/")
    assert handled.status_code == 202  # the view handled it: no 503
