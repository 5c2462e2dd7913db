"""Celery tasks under rate limits, circuit breakers, bulkheads and guards.

The first tests need no worker (the retry delay, the decorator order, calls
made directly or eagerly, what a breaker counts). The others run the tasks
of ``tests/testapp/protected_tasks.py`` on two real prefork workers on the
real Redis broker (no eager mode), each worker reading a queue of its own so
that both surely take part, and read what each run recorded in the store.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Ignore, Retry

from django_stability import (
    BreakerOpen,
    BulkheadFull,
    RateLimited,
    bulkhead,
    circuit_breaker,
    guard,
    rate_limit,
)
from django_stability.bulkhead import get_bulkhead
from django_stability.jobs.tasks import max_refusals, refusal_delay
from django_stability.ratelimit import parse_rate
from django_stability.store import get_store
from tests.celery_app import app as test_app
from tests.celery_worker import CeleryWorker, clean_up_run
from tests.testapp import protected_tasks as tasks

RUN_ID = os.environ["STABILITY_TEST_RUN"]
#: The store prefix the workers and these tests share.
WORKER_PREFIX = f"stabtest:{RUN_ID}:tasks"


# No worker -------------------------------------------------------------------------------


def test_the_retry_delay_waits_out_retry_after_then_spreads_wider_each_refusal() -> None:
    def delay(retry_after: float | None, refusals: int, pick: str) -> float:
        uniform = (lambda a, b: a) if pick == "least" else (lambda a, b: b)
        return refusal_delay(retry_after, refusals, jitter=1.0, horizon=300, uniform=uniform)

    # Never before retry_after; then up to retry_after (or the jitter, if longer) more.
    assert delay(3.0, 0, "least") == 3.0 and delay(3.0, 0, "most") == 6.0
    assert delay(0.2, 0, "least") == 0.2 and delay(0.2, 0, "most") == 1.2
    # A full bulkhead says nothing about when: the jitter alone.
    assert delay(None, 0, "least") == 0.0 and delay(None, 0, "most") == 1.0
    # The window widens with each refusal, so a backlog comes back spread out.
    assert [delay(2.0, r, "most") for r in range(4)] == [4.0, 6.0, 8.0, 10.0]
    # Never past the horizon (the broker would deliver a message held longer twice).
    assert refusal_delay(3600, 0, jitter=1.0, horizon=300) == 300
    samples = [refusal_delay(2.0, 1, jitter=1.0, horizon=300) for _ in range(200)]
    assert all(2.0 <= s <= 6.0 for s in samples) and max(samples) - min(samples) > 2


def private_app() -> Celery:
    app = Celery(f"private-{uuid.uuid4().hex[:6]}", set_as_current=False)
    app.conf.task_always_eager = False
    return app


def test_a_celery_task_given_to_a_decorator_is_refused_with_the_order_to_use() -> None:
    app = private_app()

    def body(x: int) -> int:
        return x

    lazy = app.task(name="lazy")(body)  # a proxy until the app is finalized
    app.finalize()
    made = app.task(name="made")(body)  # a task object
    decorators: list[tuple[str, Callable[[Any], Any]]] = [
        ("@rate_limit('t-order')", rate_limit("t-order", rate="5/m")),
        ("@circuit_breaker('t-order')", circuit_breaker("t-order")),
        ("@bulkhead('t-order')", bulkhead("t-order")),
        ("@guard('t-order')", guard("t-order")),
    ]
    for label, decorate in decorators:
        for task in (lazy, made):
            with pytest.raises(TypeError, match="Put it below the task decorator") as refused:
                decorate(task)
            assert label in str(refused.value) and "@app.task(bind=True)" in str(refused.value)
        # Below the task decorator, it is the task's body.
        protected = app.task(name=f"below-{label}")(decorate(body))
        assert protected.run.__wrapped__ is body
        assert protected(4) == 4  # called directly: a plain call


def test_a_task_called_directly_or_eagerly_raises_the_refusal() -> None:
    app = private_app()

    @app.task(bind=True, name="direct")
    @rate_limit("t-direct", rate="1/h")
    def direct(self: Any, x: int) -> int:
        return x

    assert direct(1) == 1
    with pytest.raises(RateLimited):
        direct(2)  # no message to send again: the caller gets the refusal
    eager = direct.apply(args=(3,))
    assert eager.failed() and isinstance(eager.result, RateLimited)


def test_how_often_a_task_may_be_refused_comes_from_the_task_or_the_setting(
    settings: Any,
) -> None:
    app = private_app()

    def body() -> None:
        pass

    plain = app.task(name="plain")(body)
    own = app.task(name="own", stability_max_refusals=3)(body)
    assert max_refusals(plain) == 100 and max_refusals(own) == 3
    settings.STABILITY = {**settings.STABILITY, "JOBS_TASK_MAX_REFUSALS": 7}
    assert max_refusals(plain) == 7 and max_refusals(own) == 3


def test_refusals_and_celery_control_flow_are_not_breaker_failures() -> None:
    breaker = circuit_breaker("t-counts", minimum_calls=2, failure_rate_threshold=50)

    @breaker
    @rate_limit("t-counts", rate="1/h")
    def limited() -> str:
        return "ran"

    assert limited() == "ran"
    for _ in range(5):
        with pytest.raises(RateLimited):
            limited()
    metrics = breaker.metrics()
    assert metrics.state == "closed" and metrics.failed_calls == 0 and metrics.calls == 1
    for refusal in (RateLimited(), BreakerOpen(), BulkheadFull()):
        assert breaker.classify(refusal) == "ignored"
    # A task's own Retry counts as the error it was raised for; Ignore as nothing.
    assert breaker.classify(Retry(exc=ConnectionError("down"))) == "failure"
    assert breaker.classify(Retry()) == "ignored"
    assert breaker.classify(Ignore()) == "ignored"
    assert breaker.classify(ConnectionError("down")) == "failure"  # as before


# Two real workers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def workers(django_db_setup: Any, django_db_blocker: Any) -> Iterator[list[CeleryWorker]]:
    started: list[CeleryWorker] = []
    try:
        for queue in tasks.QUEUES:
            started.append(CeleryWorker([queue], concurrency=2, prefix=WORKER_PREFIX).start())
        yield started
    finally:
        for worker in started:
            worker.stop()
        clean_up_run()


@pytest.fixture
def on_workers(
    workers: list[CeleryWorker], settings: Any, _isolated_state: str
) -> list[CeleryWorker]:
    """The workers, with this test's store prefix set to the one they use."""
    settings.STABILITY = {**settings.STABILITY, "STORE_KEY_PREFIX": WORKER_PREFIX}
    return workers


def send(task: Any, tag: str, n: int, queue: str) -> None:
    # Through the test app by name: a shared task sends with Celery's current
    # app, which is whichever app was made last.
    test_app.tasks[task.name].apply_async((tag, n), queue=queue)


def records(tag: str, count: int) -> list[dict[str, Any]] | None:
    store = get_store()
    found = [store.get(f"task-ran:{tag}:{n}") for n in range(count)]
    return [json.loads(raw) for raw in found] if all(found) else None


def wait_for_runs(tag: str, count: int, workers: list[CeleryWorker], timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = records(tag, count)
        if found is not None:
            return found
        if not no_failure_logged(workers):
            break  # a task failed: it will not run
        time.sleep(0.1)
    logs = "\n".join(worker.log() for worker in workers)
    raise AssertionError(f"no {count} runs of {tag}; worker logs:\n{logs}")


def ran_once(tag: str, count: int) -> bool:
    store = get_store()
    return all(store.get(f"task-runs:{tag}:{n}") == "1" for n in range(count))


def no_failure_logged(workers: list[CeleryWorker]) -> bool:
    """No task failed on these workers so far (Celery logs each failure so)."""
    return not any(
        "raised unexpected" in worker.log_file.read_text(errors="replace") for worker in workers
    )


@pytest.mark.slow
def test_a_task_rate_limit_holds_across_two_workers_and_refused_runs_come_back(
    on_workers: list[CeleryWorker],
) -> None:
    limit, period = parse_rate(tasks.TASK_RATE)
    total = 14
    tag = uuid.uuid4().hex
    for n in range(total):
        send(tasks.rate_limited, tag, n, tasks.QUEUES[n % 2])
    # Ideal: one run a second, 13 s; the retries' jitter costs some more.
    runs = wait_for_runs(tag, total, on_workers, timeout=120)
    time.sleep(1.0)  # a duplicate run would show now
    assert ran_once(tag, total)  # none lost, none twice
    assert {run["worker"].split("@")[0] for run in runs} == {
        worker.name.split("@")[0] for worker in on_workers
    }
    # The limit holds for both workers (four processes) together: no window of
    # the period holds more than the limit. (A window 0.25 s shorter than the
    # period: a run records its time a moment after the store admitted it.)
    times = sorted(run["at"] for run in runs)
    busiest = max(sum(t <= u < t + period - 0.25 for u in times) for t in times)
    assert busiest <= limit, times
    # Runs the limit refused were sent again and ran later, not failed; their
    # refusals are counted apart from Celery's retries (the task allows none).
    assert sum(run["refusals"] > 0 for run in runs) >= total - limit
    assert all(run["retries"] == 0 for run in runs)
    assert no_failure_logged(on_workers)


@pytest.mark.slow
def test_an_open_breaker_makes_the_task_run_later(on_workers: list[CeleryWorker]) -> None:
    breaker = circuit_breaker(tasks.BREAKER)
    breaker.trip("the test opens it")
    tripped = time.time()
    verdict = breaker.shared_verdict()
    assert verdict is not None and verdict.state == "open"
    tag = uuid.uuid4().hex
    for n in range(2):
        send(tasks.behind_breaker, tag, n, tasks.QUEUES[n])
    runs = wait_for_runs(tag, 2, on_workers, timeout=60)
    assert ran_once(tag, 2)
    for run in runs:
        assert run["refusals"] >= 1
        # Not before the breaker let calls through again (0.5 s for the clocks).
        assert run["at"] >= tripped + tasks.BREAKER_WAIT - 0.5
    # The probe succeeded and closed it: the refusals counted as no failure.
    verdict = breaker.shared_verdict()
    assert verdict is not None and verdict.state == "closed"
    assert no_failure_logged(on_workers)


@pytest.mark.slow
def test_a_full_cluster_bulkhead_makes_the_task_run_later(
    on_workers: list[CeleryWorker],
) -> None:
    slots = get_bulkhead(tasks.BULKHEAD)
    held = slots.acquire()  # the only slot, held by this process
    tag = uuid.uuid4().hex
    try:
        for n in range(2):
            send(tasks.behind_bulkhead, tag, n, tasks.QUEUES[n])
        time.sleep(3.0)
        # Refused, not run, while the slot is held elsewhere.
        assert all(get_store().get(f"task-ran:{tag}:{n}") is None for n in range(2))
    finally:
        released = time.time()
        slots.release(held)
    runs = wait_for_runs(tag, 2, on_workers, timeout=60)
    assert ran_once(tag, 2)
    assert all(run["refusals"] >= 1 and run["at"] >= released for run in runs)
    assert get_store().count_leases(slots.key) == 0  # every slot given back
    assert no_failure_logged(on_workers)
