"""Celery tasks under a rate limit, a circuit breaker and a bulkhead (tests/test_jobs_tasks.py).

The decorators sit below ``@shared_task``, as the docs say. Each run records
itself in the store: when it ran, on which worker, after how many refusals,
and how many times it ran.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import shared_task

from django_stability import bulkhead, circuit_breaker, rate_limit
from django_stability.jobs.tasks import refusals_of
from django_stability.store import get_store

RUN_ID = os.environ["STABILITY_TEST_RUN"]
#: One queue per worker, so that both workers surely take part.
QUEUES = (f"stabtest-{RUN_ID}-tasks-a", f"stabtest-{RUN_ID}-tasks-b")
#: The task rate limit: one run a second (burst 1), so at most 6 in any 6 s.
TASK_RATE = "6/6s"
BREAKER = "test-task-breaker"
BULKHEAD = "test-task-bulkhead"
#: Seconds the breaker stays open once tripped.
BREAKER_WAIT = 3.0


def record(task: Any, tag: str, n: int) -> None:
    """Note this run of task ``n`` of test ``tag``."""
    at = time.time()
    request = task.request
    store = get_store()
    runs = store.incr(f"task-runs:{tag}:{n}", 1, 300)
    entry = {
        "at": at,
        "worker": request.hostname,
        "refusals": refusals_of(request),
        "retries": request.retries,
        "runs": runs,
    }
    store.set(f"task-ran:{tag}:{n}", json.dumps(entry), 300)


@shared_task(bind=True, name="stabtest.rate_limited", ignore_result=True, max_retries=0)
@rate_limit("test-task-rate", rate=TASK_RATE, burst=1)
def rate_limited(self: Any, tag: str, n: int) -> None:
    record(self, tag, n)


@shared_task(bind=True, name="stabtest.behind_breaker", ignore_result=True)
@circuit_breaker(
    BREAKER,
    scope="cluster",
    wait_in_open=BREAKER_WAIT,
    half_open_calls=1,
    minimum_calls=1,
    window_size=10,
)
def behind_breaker(self: Any, tag: str, n: int) -> None:
    record(self, tag, n)


@shared_task(bind=True, name="stabtest.behind_bulkhead", ignore_result=True)
@bulkhead(BULKHEAD, scope="cluster", max_concurrent=1, lease_ttl=30)
def behind_bulkhead(self: Any, tag: str, n: int) -> None:
    record(self, tag, n)
