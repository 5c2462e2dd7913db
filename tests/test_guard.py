"""guard(): the layers in their order, retries within a budget, fallbacks."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import requests
from django.core.cache import cache

from django_stability import (
    BreakerOpen,
    BulkheadFull,
    DeadlineExceeded,
    bulkhead,
    circuit_breaker,
    guard,
)
from django_stability.guard import LAST_GOOD, Guard, GuardSpec
from django_stability.retry import backoff_delay, get_budget, parse_retry_after, retry_after_of
from django_stability.test import override_policy
from django_stability.timeouts import remaining


class Dependency:
    """A dependency that fails the first ``failures`` calls (or all), and counts its calls."""

    def __init__(self, failures: int = 10**9, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.calls += 1
            failing = self.calls <= self.failures
        if failing:
            raise self.error(f"call {self.calls} failed")
        return {"args": list(args), "kwargs": kwargs}


def quiet(name: str, **fields: Any) -> Guard:
    """A guard that does not sleep between retries, and whose breaker never opens by itself."""
    made = guard(name, **fields)
    made.sleep = lambda seconds: None
    return made


def test_an_idempotent_call_is_retried_then_succeeds() -> None:
    dependency = Dependency(failures=2)
    profiles = quiet("retried", retries=2, idempotent=True)
    assert profiles.call(dependency, 7) == {"args": [7], "kwargs": {}}
    assert dependency.calls == 3


def test_a_call_not_marked_idempotent_is_never_retried() -> None:
    dependency = Dependency(failures=1)
    payments = quiet("not-idempotent", retries=5)
    with pytest.raises(ConnectionError):
        payments.call(dependency)
    assert dependency.calls == 1
    # The call site may say it is idempotent even when the policy does not.
    again = Guard("not-idempotent", idempotent=True)
    again.sleep = lambda s: None
    dependency = Dependency(failures=1)
    assert again.call(dependency) is not None and dependency.calls == 2


def test_retry_budget_bounds_the_extra_calls_a_failing_dependency_receives() -> None:
    """1000 calls, 3 retries each, a 10% budget: at most about 100 extra calls, not 3000."""
    dependency = Dependency()
    failing = quiet(
        "budgeted",
        retries=3,
        idempotent=True,
        retry_budget=0.1,
        retry_budget_minimum=0,
        use_breaker=False,
    )
    for _ in range(1000):
        with pytest.raises(ConnectionError):
            failing.call(dependency)
    extra = dependency.calls - 1000
    assert 90 <= extra <= 100, extra  # the budget is spent, never overspent
    first_attempts, retries = get_budget("budgeted").usage()
    assert (first_attempts, retries) == (1000, extra)
    # Without a budget the same calls would have cost four times as many.
    unbounded = Dependency()
    free = quiet(
        "unbudgeted",
        retries=3,
        idempotent=True,
        retry_budget=1.0,
        retry_budget_minimum=100_000,
        use_breaker=False,
    )
    for _ in range(100):
        with pytest.raises(ConnectionError):
            free.call(unbounded)
    assert unbounded.calls == 400


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    assert [backoff_delay(n, 0.1, 1.0, random=lambda: 1.0) for n in range(6)] == [
        0.1,
        0.2,
        0.4,
        0.8,
        1.0,
        1.0,
    ]
    assert backoff_delay(3, 0.1, 1.0, random=lambda: 0.0) == 0.0
    waits: list[float] = []
    dependency = Dependency(failures=3)
    jittered = guard("jittered", retries=3, idempotent=True, backoff=0.1, backoff_max=0.3)
    jittered.sleep = waits.append
    jittered.random = lambda: 0.5
    jittered.call(dependency)
    assert waits == [0.05, 0.1, 0.15]


class Throttled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("slow down")
        self.retry_after = retry_after


def test_retry_after_is_honoured_and_a_long_one_is_not_waited_for() -> None:
    waits: list[float] = []
    dependency = Dependency(failures=1, error=lambda message: Throttled(1.5))  # type: ignore[arg-type]
    polite = guard("polite", retries=2, idempotent=True, backoff=0.01)
    polite.sleep = waits.append
    polite.call(dependency)
    assert waits == [1.5]
    impatient = Dependency(failures=1, error=lambda message: Throttled(60))  # type: ignore[arg-type]
    with pytest.raises(Throttled):
        guard("polite", retries=2, idempotent=True, max_retry_after=5).call(impatient)
    assert impatient.calls == 1


def test_retry_after_from_http_headers() -> None:
    response = requests.Response()
    response.status_code = 503
    response.headers["Retry-After"] = "3"
    assert retry_after_of(response) == 3.0
    assert retry_after_of(requests.HTTPError(response=response)) == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None


def test_refusals_are_never_retried_and_fall_back() -> None:
    circuit_breaker("refused-open", window_size=2, minimum_calls=2).trip()
    dependency = Dependency(failures=0)
    fallback_calls: list[Any] = []

    def fallback(*args: Any) -> str:
        fallback_calls.append(args)
        return "from the fallback"

    opened = quiet("refused-open", retries=3, idempotent=True, fallback=fallback)
    assert opened.call(dependency, 1) == "from the fallback"
    assert dependency.calls == 0
    assert fallback_calls == [(1,)]
    with pytest.raises(BreakerOpen):
        quiet("refused-open", retries=3, idempotent=True).call(dependency)

    slots = bulkhead("refused-full", max_concurrent=1)
    held = slots.acquire()
    full = quiet("refused-full", retries=3, idempotent=True)
    with pytest.raises(BulkheadFull):
        full.call(dependency)
    slots.release(held)
    assert dependency.calls == 0
    assert full.breaker.metrics().calls == 0  # a full bulkhead says nothing about the dependency


def test_the_attempt_timeout_in_thread_mode_counts_as_a_failure_and_is_retried() -> None:
    release = threading.Event()
    calls: list[float] = []

    def hangs_once() -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            release.wait(5)
        return "second try"

    timed = quiet(
        "timed",
        timeout=0.1,
        timeout_mode="thread",
        retries=1,
        idempotent=True,
        breaker={"window_size": 10, "minimum_calls": 10},
    )
    assert timed.call(hangs_once) == "second try"
    assert len(calls) == 2
    metrics = timed.breaker.metrics()
    assert (metrics.calls, metrics.failed_calls) == (2, 1)
    release.set()


def test_the_deadline_reaches_the_code_of_each_attempt() -> None:
    seen: list[float | None] = []
    limited = guard("deadline-seen", timeout=0.5, total_timeout=2.0)
    limited.call(lambda: seen.append(remaining()))
    assert seen[0] is not None and 0 < seen[0] <= 0.5


def test_total_timeout_bounds_attempts_and_waits_together() -> None:
    dependency = Dependency()
    bounded_guard = guard(
        "total",
        retries=50,
        idempotent=True,
        backoff=0.1,
        backoff_max=0.1,
        total_timeout=0.35,
        retry_budget_minimum=1000,
    )
    bounded_guard.random = lambda: 1.0
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        bounded_guard.call(dependency)
    assert time.monotonic() - started < 0.35 + 0.3
    assert 2 <= dependency.calls <= 4  # three 0.1 s waits fit in 0.35 s, not fifty


def test_exceptions_the_breaker_ignores_are_neither_retried_nor_replaced() -> None:
    class NotFound(Exception):
        pass

    circuit_breaker("lookups", ignore=(NotFound,))
    dependency = Dependency(error=NotFound)
    lookups = quiet("lookups", retries=3, idempotent=True, fallback=lambda *a: "fallback")
    with pytest.raises(NotFound):
        lookups.call(dependency)
    assert dependency.calls == 1


def test_last_good_value_from_the_cache(caplog: pytest.LogCaptureFixture) -> None:
    profile = {"id": 7, "name": "Ada"}
    answers: list[Any] = [profile, ConnectionError("down")]

    def get_user_profile(user_id: int) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    profiles = quiet("profiles", fallback=LAST_GOOD)
    assert profiles.call(get_user_profile, 7) == profile
    key = profiles.last_good_key((7,), {})
    assert isinstance(cache.get(key), str)  # plain JSON in the cache, no pickled objects
    assert profiles.call(get_user_profile, 7) == profile  # the dependency failed: last good
    with pytest.raises(ConnectionError):
        profiles.call(_fails, 8)  # nothing kept for user 8: the error comes out
    profiles.call(lambda user_id: object(), 9)  # not JSON: served, not kept
    assert any("not plain JSON" in r.getMessage() for r in caplog.records)
    cache.delete(key)


def _fails(*args: Any) -> Any:
    raise ConnectionError("down")


def test_a_failed_result_is_retried_then_returned_or_replaced() -> None:
    answers = [503, 503, 200]
    http = quiet("results", retries=2, idempotent=True, failure_result=lambda r: r >= 500)
    assert http.call(answers.pop, 0) == 200
    still_failing = quiet("results", retries=1, idempotent=True, failure_result=lambda r: r >= 500)
    assert still_failing.call(lambda: 503) == 503  # no fallback: the caller sees it
    replaced = quiet(
        "results",
        retries=1,
        idempotent=True,
        failure_result=lambda r: r >= 500,
        fallback=lambda: 299,
    )
    assert replaced.call(lambda: 503) == 299


def test_decorator_context_manager_and_async_forms() -> None:
    dependency = Dependency(failures=1)
    profiles = guard("forms", retries=1, idempotent=True, backoff=0.0)

    @profiles
    def sync_profile(user_id: int) -> Any:
        return dependency(user_id)

    @profiles
    async def async_profile(user_id: int) -> Any:
        await asyncio.sleep(0)
        return dependency(user_id)

    assert sync_profile(1) == {"args": [1], "kwargs": {}}
    assert asyncio.run(async_profile(2)) == {"args": [2], "kwargs": {}}
    with profiles:
        assert remaining() is not None  # the deadline applies to the block
    assert remaining() is None

    async def block() -> float | None:
        async with profiles:
            return remaining()

    assert asyncio.run(block()) is not None
    with pytest.raises(ConnectionError), profiles:
        raise ConnectionError  # the block is not retried: its error comes out


def test_async_attempts_are_cancelled_at_the_timeout_and_retried() -> None:
    attempts: list[int] = []

    async def slow_then_fast() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            await asyncio.sleep(5)
        return "fast"

    made = guard("async-timeout", timeout=0.1, retries=1, idempotent=True, backoff=0.0)
    started = time.monotonic()
    assert asyncio.run(made.acall(slow_then_fast)) == "fast"
    assert time.monotonic() - started < 0.1 + 0.3
    with pytest.raises(DeadlineExceeded):
        asyncio.run(guard("async-timeout-2", timeout=0.05).acall(asyncio.sleep, 5))


def test_off_calls_straight_through_and_bad_values_are_refused() -> None:
    from django.core.exceptions import ValidationError

    circuit_breaker("escape").trip()
    with override_policy(GuardSpec(name="escape", mode="off")):
        assert guard("escape").call(lambda: "direct") == "direct"
    with pytest.raises(ValidationError, match="between 0 and 1"):
        guard("bad-budget", retry_budget=5)
    with pytest.raises(ValueError, match="a callable or 'last_good'"):
        guard("bad-fallback", fallback="cached")


def test_every_decorator_takes_any_callable_sync_or_async() -> None:
    import functools

    from django_stability import timeout

    class AsyncCallable:
        async def __call__(self, x: int) -> int:
            await asyncio.sleep(0)
            return x

    class Task:
        """Shaped like a Celery task: an instance with a name and __call__."""

        name = "shop.tasks.add"

        def __call__(self, x: int, y: int) -> int:
            return x + y

    def add(x: int, y: int) -> int:
        return x + y

    async def add_later(x: int, y: int) -> int:
        return x + y

    decorators = [
        circuit_breaker("any-callable"),
        bulkhead("any-callable"),
        guard("any-callable"),
        timeout(2),
    ]
    for decorate in decorators:
        assert asyncio.run(decorate(AsyncCallable())(3)) == 3
        assert decorate(Task())(1, 2) == 3
        assert decorate(functools.partial(add, 1))(2) == 3
        assert asyncio.run(decorate(functools.partial(add_later, 1))(2)) == 3
