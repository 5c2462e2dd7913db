"""Background jobs the tests run on a real worker, and the views that start them.

A job that must be caught in the middle waits for a gate: a store key the
test sets when it has seen what it wanted to see. No job relies on timing.
"""

from __future__ import annotations

import os
import time

from celery import shared_task
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_POST

from django_stability import background_job
from django_stability.jobs import JobFailed, RunningJob
from django_stability.store import get_store

RUN_ID = os.environ["STABILITY_TEST_RUN"]
#: The queue the shared test worker consumes.
QUEUE = f"stabtest-{RUN_ID}-jobs"
GATE_TIMEOUT = 30.0


def wait_for_gate(tag: str) -> None:
    """Block until the test opens the gate ``tag`` (or fail after GATE_TIMEOUT)."""
    deadline = time.monotonic() + GATE_TIMEOUT
    while time.monotonic() < deadline:
        if get_store().get(f"gate:{tag}"):
            return
        time.sleep(0.05)
    raise JobFailed(f"The test never opened gate {tag}.")


@background_job("test-report", queue=QUEUE, lock_ttl=120)
def report(job: RunningJob, *, tag: str, rows: int = 3) -> None:
    job.progress(0.5, "half way")
    wait_for_gate(tag)
    with job.result_file(f"report-{tag}.csv", "text/csv", encoding="utf-8") as out:
        for i in range(rows):
            out.write(f"{i},{tag}\n")


@background_job("test-soft-limit", queue=QUEUE, soft_time_limit=1, time_limit=20)
def soft_limited(job: RunningJob, *, tag: str) -> None:
    job.add_cleanup(lambda: get_store().set(f"cleaned:{tag}", "1", 60))
    with job.result_file("partial.bin") as out:
        out.write(b"partial")
        time.sleep(30)


@background_job("test-hard-limit", queue=QUEUE, time_limit=1)
def hard_limited(job: RunningJob, *, tag: str) -> None:
    get_store().set(f"pid:{tag}", str(os.getpid()), 60)
    time.sleep(30)


@background_job("test-killable", queue=QUEUE, max_redeliveries=1, lock_ttl=120)
def killable(job: RunningJob, *, tag: str) -> None:
    get_store().set(f"pid:{tag}:{job.attempt}", str(os.getpid()), 60)
    wait_for_gate(tag)
    job.save_result("done.txt", f"run {job.attempt}", "text/plain")


@background_job("test-killable-once", queue=QUEUE, max_redeliveries=0, lock_ttl=120)
def killable_once(job: RunningJob, *, tag: str) -> None:
    get_store().set(f"pid:{tag}:{job.attempt}", str(os.getpid()), 60)
    wait_for_gate(tag)


@background_job("test-jitter", queue=QUEUE, jitter=4.0)
def jittered_start(job: RunningJob, *, n: int) -> None:
    """Does nothing: the test looks at when it started."""


@background_job("test-fails", queue=QUEUE)
def fails(job: RunningJob, *, tag: str) -> None:
    raise ValueError(f"secret internals {tag}")


@background_job("test-unconsumed")
def unconsumed(job: RunningJob, *, n: int) -> None:
    """Sent to queues no worker reads (backpressure tests set the queue)."""


@shared_task(name="stabtest.record_time", ignore_result=True)
def record_time(key: str) -> None:
    """Write when it ran (for the fan-out test)."""
    get_store().set(key, repr(time.time()), 120)


@require_POST
def start_report(request: HttpRequest) -> HttpResponse:
    return report.accept(request, tag=request.POST.get("tag", ""))


@require_POST
def start_unconsumed(request: HttpRequest) -> HttpResponse:
    return unconsumed.accept(request, n=int(request.POST.get("n", "0")))
