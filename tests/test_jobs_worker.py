"""Background jobs on a real prefork worker and the real Redis broker (no eager mode).

One worker serves the whole module. Jobs that must be caught half way wait on
a gate (a store key the test opens), so no test depends on timing; where a
promise is a time bound, the bound is asserted with a generous margin.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
from django.conf import settings as django_settings
from django.core.files.storage import storages
from django.test import Client

from django_stability.jobs import backpressure, broker, locks
from django_stability.jobs.policy import JobSpec
from django_stability.models import Job
from django_stability.store import get_store
from django_stability.test import override_policy
from tests.celery_worker import CeleryWorker, clean_up_run
from tests.testapp import jobs

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RUN_ID = os.environ["STABILITY_TEST_RUN"]
#: The store prefix the worker and these tests share.
WORKER_PREFIX = f"stabtest:{RUN_ID}:jobs"
#: A queue the worker consumes, used only by the scheduled-depth test.
DELAYED_QUEUE = f"stabtest-{RUN_ID}-delayed"
BROKER_PREFIX = django_settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"]

T = TypeVar("T")


@pytest.fixture(scope="module")
def worker(django_db_setup: Any, django_db_blocker: Any) -> Iterator[CeleryWorker]:
    started = CeleryWorker([jobs.QUEUE, DELAYED_QUEUE], concurrency=2, prefix=WORKER_PREFIX)
    started.start()
    try:
        yield started
    finally:
        started.stop()
        clean_up_run()


@pytest.fixture
def on_worker(worker: CeleryWorker, settings: Any, _isolated_state: str) -> CeleryWorker:
    """The worker, with this test's store prefix set to the one the worker uses."""
    settings.STABILITY = {**settings.STABILITY, "STORE_KEY_PREFIX": WORKER_PREFIX}
    backpressure.gauge.reset()
    return worker


def wait_for(
    what: str, probe: Callable[[], T | None], worker: CeleryWorker, timeout: float = 30.0
) -> T:
    """Poll ``probe`` until it answers something truthy; after ``timeout``, fail with the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{worker.log()}")


def job_in(job_id: Any, *states: str) -> Job | None:
    job = Job.objects.filter(pk=job_id).first()
    return job if job is not None and job.state in states else None


def open_gate(tag: str) -> None:
    get_store().set(f"gate:{tag}", "1", 120)


def lock_held(job: Job) -> bool:
    return locks.lock_holder(job.dedup_key) == str(job.id)


def lock_given_back(job: Job, worker: CeleryWorker) -> bool:
    """The job's lock is given back (waiting for it: a job is marked ended first, then its
    lock is given back, so that a request in between never starts the same work twice)."""
    wait_for("the lock to be given back", lambda: not lock_held(job), worker, timeout=10)
    return True


def logged_in(user_model: Any, name: str) -> tuple[Any, Client]:
    user = user_model.objects.create_user(f"{name}-{uuid.uuid4().hex[:6]}", password="x")
    client = Client()
    client.force_login(user)
    return user, client


def test_post_then_poll_queued_running_succeeded_and_owner_only(
    on_worker: CeleryWorker, django_user_model: Any
) -> None:
    alice, as_alice = logged_in(django_user_model, "alice")
    _, as_bob = logged_in(django_user_model, "bob")
    # Keep both worker processes busy, so that the next job has to wait in
    # the queue and its "queued" state can be seen for sure.
    busy = [uuid.uuid4().hex for _ in range(2)]
    for tag in busy:
        assert as_alice.post("/jobs-test/report/", {"tag": tag}).status_code == 202
    wait_for(
        "both worker processes busy",
        lambda: Job.objects.filter(state=Job.RUNNING, parameters__tag__in=busy).count() == 2,
        on_worker,
    )

    tag = uuid.uuid4().hex
    accepted = as_alice.post("/jobs-test/report/", {"tag": tag})
    assert accepted.status_code == 202
    body = accepted.json()
    assert body["state"] == "queued" and body["created"] is True
    status_url = accepted["Location"]
    assert status_url == body["status_url"] == f"/stability/jobs/{body['id']}/"
    assert int(accepted["Retry-After"]) >= 1

    queued = as_alice.get(status_url)
    assert queued.status_code == 200
    assert queued.json()["state"] == "queued"
    assert int(queued["Retry-After"]) >= 1

    # The same request while it waits returns the same job.
    again = as_alice.post("/jobs-test/report/", {"tag": tag})
    assert again.status_code == 202
    assert again["Location"] == status_url and again.json()["created"] is False

    # Another user sees nothing: not the status, not the download.
    assert as_bob.get(status_url).status_code == 404
    assert as_bob.get(f"{status_url}download/").status_code == 404
    assert Client().get(status_url).status_code == 404

    open_gate(busy[0])  # frees a worker process for our job
    running = wait_for(
        "the job running with progress",
        lambda: (lambda d: d if d["state"] == "running" and d["progress"] == 0.5 else None)(
            as_alice.get(status_url).json()
        ),
        on_worker,
    )
    assert running["message"] == "half way"

    # The same request while it runs returns the same job too.
    again = as_alice.post("/jobs-test/report/", {"tag": tag})
    assert again["Location"] == status_url and again.json()["created"] is False
    assert Job.objects.filter(name="test-report", parameters__tag=tag).count() == 1

    open_gate(tag)
    open_gate(busy[1])
    done = wait_for(
        "the job to succeed",
        lambda: (lambda r: r if r.status_code == 303 else None)(as_alice.get(status_url)),
        on_worker,
    )
    assert done.json()["state"] == "succeeded"
    download_url = done["Location"]
    assert download_url == f"{status_url}download/"
    download = as_alice.get(download_url)
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == f"0,{tag}\n1,{tag}\n2,{tag}\n".encode()
    assert f"report-{tag}.csv" in download["Content-Disposition"]
    assert as_bob.get(download_url).status_code == 404

    # The dedup lock went with the job: the same request now starts a new job.
    job = Job.objects.get(pk=body["id"])
    assert job.owner_id == alice.pk and lock_given_back(job, on_worker)
    fresh = as_alice.post("/jobs-test/report/", {"tag": tag})
    assert fresh.json()["created"] is True and fresh["Location"] != status_url
    open_gate(tag)


def test_soft_time_limit_ends_failed_with_a_clear_message(
    on_worker: CeleryWorker, django_user_model: Any
) -> None:
    user, _ = logged_in(django_user_model, "soft")
    tag = uuid.uuid4().hex
    job = jobs.soft_limited.submit(user, tag=tag).job
    ended = wait_for("the soft limit", lambda: job_in(job.id, Job.FAILED), on_worker)
    assert "soft time limit of 1 s" in ended.error
    assert get_store().get(f"cleaned:{tag}") == "1"  # the job's own clean-up ran
    assert ended.result_name == ""
    assert not storages["default"].exists(f"stability-jobs/{job.id}/1-partial.bin")
    assert lock_given_back(ended, on_worker)


def test_hard_time_limit_ends_failed_not_running(
    on_worker: CeleryWorker, django_user_model: Any
) -> None:
    user, _ = logged_in(django_user_model, "hard")
    tag = uuid.uuid4().hex
    job = jobs.hard_limited.submit(user, tag=tag).job
    ended = wait_for("the hard limit", lambda: job_in(job.id, Job.FAILED), on_worker)
    assert "time limit of 1 s" in ended.error and "killed" in ended.error
    pid = int(get_store().get(f"pid:{tag}") or 0)
    # The process that ran it is killed (the pool ends the job, then kills
    # and reaps the process; 10 s is a wide margin for that).
    wait_for("the process to be killed", lambda: not process_exists(pid), on_worker, timeout=10)
    assert lock_given_back(ended, on_worker)
    time.sleep(0.5)
    assert Job.objects.get(pk=job.id).state == Job.FAILED  # and it stays so


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_run(tag: str, attempt: int, worker: CeleryWorker) -> int:
    pid = int(
        wait_for(f"run {attempt} to start", lambda: get_store().get(f"pid:{tag}:{attempt}"), worker)
    )
    assert pid in worker.children()
    os.kill(pid, signal.SIGKILL)
    return pid


def test_worker_killed_mid_job_is_run_again_then_succeeds(
    on_worker: CeleryWorker, django_user_model: Any
) -> None:
    user, _ = logged_in(django_user_model, "killed")
    tag = uuid.uuid4().hex
    job = jobs.killable.submit(user, tag=tag).job
    kill_run(tag, 1, on_worker)
    # Bounded: the pool notices a dead child within a second or two; 30 s is
    # a wide margin for a loaded machine.
    wait_for("run 2", lambda: get_store().get(f"pid:{tag}:2"), on_worker)
    rerun = Job.objects.get(pk=job.id)
    assert rerun.state == Job.RUNNING and rerun.attempts == 2
    assert lock_held(rerun)  # still deduplicated while it runs again
    open_gate(tag)
    ended = wait_for("the job to succeed", lambda: job_in(job.id, Job.SUCCEEDED), on_worker)
    with storages["default"].open(ended.result_name) as result:
        assert result.read() == b"run 2"
    assert lock_given_back(ended, on_worker)


def test_worker_killed_past_the_bound_ends_failed_and_frees_the_lock(
    on_worker: CeleryWorker, django_user_model: Any
) -> None:
    user, _ = logged_in(django_user_model, "killed-once")
    tag = uuid.uuid4().hex
    job = jobs.killable_once.submit(user, tag=tag).job
    kill_run(tag, 1, on_worker)
    ended = wait_for("the job to fail", lambda: job_in(job.id, Job.FAILED), on_worker)
    assert "worker running the job was lost" in ended.error
    assert lock_given_back(ended, on_worker)
    open_gate(tag)
    time.sleep(0.5)
    assert get_store().get(f"pid:{tag}:2") is None  # never run again
    assert Job.objects.get(pk=job.id).state == Job.FAILED


def redelivered(user: Any, attempts: int, max_attempts: int) -> Job:
    """A job whose run was lost without a word (the whole worker died): the broker delivers it
    again, as Redis does after its visibility timeout and RabbitMQ when the connection drops."""
    from django_stability.jobs import runner

    job = Job.objects.create(
        name="test-jitter",
        owner=user,
        parameters={"n": 0},
        dedup_key=uuid.uuid4().hex,
        queue=jobs.QUEUE,
        state=Job.RUNNING,
        attempts=attempts,
        max_attempts=max_attempts,
    )
    runner.send(job)
    return job


def test_a_redelivered_job_runs_again_within_its_bound(
    on_worker: CeleryWorker, django_user_model: Any
) -> None:
    user, _ = logged_in(django_user_model, "redelivered")
    job = redelivered(user, attempts=1, max_attempts=2)
    ended = wait_for("the second run", lambda: job_in(job.id, Job.SUCCEEDED), on_worker)
    assert ended.attempts == 2


def test_a_redelivered_job_past_its_bound_ends_failed(
    on_worker: CeleryWorker, django_user_model: Any
) -> None:
    user, _ = logged_in(django_user_model, "redelivered")
    job = redelivered(user, attempts=2, max_attempts=2)
    ended = wait_for("the job to fail", lambda: job_in(job.id, Job.FAILED), on_worker)
    assert ended.attempts == 2 and "lost (killed or out of memory) twice" in ended.error


def test_a_failing_job_tells_its_owner_without_internals(
    on_worker: CeleryWorker, django_user_model: Any
) -> None:
    user, client = logged_in(django_user_model, "fails")
    job = jobs.fails.submit(user, tag="x").job
    ended = wait_for("the job to fail", lambda: job_in(job.id, Job.FAILED), on_worker)
    assert "secret internals" in ended.error_detail
    status = client.get(f"/stability/jobs/{job.id}/").json()
    assert status["state"] == "failed" and status["error"] == "The job failed unexpectedly."
    assert "secret" not in str(status)
    assert client.get(f"/stability/jobs/{job.id}/download/").status_code == 409


def ks_uniform(samples: list[float], width: float) -> float:
    """The Kolmogorov-Smirnov distance between ``samples`` and U(0, width)."""
    ordered = sorted(samples)
    n = len(ordered)
    return max(max((i + 1) / n - x / width, x / width - i / n) for i, x in enumerate(ordered))


def rank_correlation(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (no ties in continuous samples)."""

    def ranks(values: list[float]) -> list[int]:
        order = sorted(range(len(values)), key=values.__getitem__)
        result = [0] * len(values)
        for rank, index in enumerate(order):
            result[index] = rank
        return result

    rx, ry = ranks(xs), ranks(ys)
    n = len(xs)
    return 1 - 6 * sum((a - b) ** 2 for a, b in zip(rx, ry, strict=True)) / (n * (n * n - 1))


def test_jittered_jobs_start_spread_over_the_window(
    on_worker: CeleryWorker, django_user_model: Any
) -> None:
    user, _ = logged_in(django_user_model, "jitter")
    window = jobs.jittered_start.policy.jitter
    ids = [jobs.jittered_start.submit(user, n=i).job.id for i in range(200)]
    wait_for(
        "200 jobs to run",
        lambda: Job.objects.filter(pk__in=ids, state=Job.SUCCEEDED).count() == 200,
        on_worker,
        timeout=60,
    )
    ran = list(Job.objects.filter(pk__in=ids))
    countdowns = [job.countdown for job in ran]
    starts = [(job.started_at - job.created_at).total_seconds() for job in ran]
    assert all(0 <= c <= window for c in countdowns)
    # No job starts before its jittered time (0.25 s for clock rounding).
    assert all(s >= c - 0.25 for s, c in zip(starts, countdowns, strict=True))
    # Statistics, not timing: the delays are uniform on [0, J] (KS critical
    # value 0.115 at alpha = 0.01 for n = 200, and each quarter of the window
    # gets its share), and the worker starts the jobs in the order of their
    # delays (rank correlation), over the whole window. A stalled machine
    # makes starts late, never early, and keeps their order.
    assert ks_uniform(countdowns, window) < 0.115
    quarters = [
        sum(q * window / 4 <= c < (q + 1) * window / 4 for c in countdowns) for q in range(4)
    ]
    assert all(25 <= count <= 75 for count in quarters), quarters
    assert rank_correlation(countdowns, starts) > 0.9
    assert min(starts) < window / 4 and max(starts) > 3 * window / 4


def broker_length(queue: str) -> int:
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    return sum(
        int(client.llen(key))
        for key in broker.redis_queue_keys(queue, {"global_keyprefix": BROKER_PREFIX})
    )


def test_queue_over_its_maximum_refuses_with_503_and_enqueues_nothing(
    on_worker: CeleryWorker, django_user_model: Any
) -> None:
    _, client = logged_in(django_user_model, "pressure")
    queue = f"stabtest-{RUN_ID}-bp-{uuid.uuid4().hex[:6]}"  # no worker reads it
    policy = JobSpec(name="test-unconsumed", queue=queue, max_queue_depth=3, retry_after=7)
    with override_policy(policy):
        for n in range(3):
            assert client.post("/jobs-test/unconsumed/", {"n": n}).status_code == 202
        refused = client.post("/jobs-test/unconsumed/", {"n": 3}, HTTP_ACCEPT="application/json")
        assert refused.status_code == 503
        assert refused["Retry-After"] == "7"
        assert refused.json()["policy"] == "test-unconsumed"
        assert broker_length(queue) == 3  # nothing more was sent
        assert Job.objects.filter(name="test-unconsumed").count() == 3  # no row left
        # Another process (a fresh gauge) sees the same through LLEN.
        backpressure.gauge.reset()
        assert client.post("/jobs-test/unconsumed/", {"n": 4}).status_code == 503
        assert Job.objects.filter(name="test-unconsumed").count() == 3
        assert broker_length(queue) == 3


def test_jobs_waiting_out_their_jitter_count_although_the_broker_does_not_see_them(
    on_worker: CeleryWorker, django_user_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, _ = logged_in(django_user_model, "scheduled")
    # The longest delay, so the jobs surely wait in the worker's memory.
    monkeypatch.setattr("django_stability.jobs.background.random.uniform", lambda a, b: b)
    policy = JobSpec(name="test-unconsumed", queue=DELAYED_QUEUE, jitter=600, max_queue_depth=2)
    with override_policy(policy):
        first = [jobs.unconsumed.submit(user, n=n).job for n in range(2)]
        # The worker takes jobs with a countdown off the broker's list at once.
        wait_for("the worker to take both", lambda: broker_length(DELAYED_QUEUE) == 0, on_worker)
        assert all(job_in(job.id, Job.QUEUED) for job in first)
        backpressure.gauge.reset()  # as a process that never sent them sees it
        with pytest.raises(backpressure_error()):
            jobs.unconsumed.submit(user, n=2)
        assert Job.objects.filter(name="test-unconsumed").count() == 2


def backpressure_error() -> type[Exception]:
    from django_stability.exceptions import QueueFull

    return QueueFull


def test_spread_fans_a_batch_out_over_the_window(on_worker: CeleryWorker) -> None:
    from django_stability.jobs import spread

    run = uuid.uuid4().hex[:8]
    signatures = [jobs.record_time.s(f"ran:{run}:{i}").set(queue=jobs.QUEUE) for i in range(20)]
    started = time.time()
    result = spread(signatures, over=3.0, horizon=1.0)
    assert result.sent + result.relayed == 20 and result.relays >= 1
    times = wait_for(
        "20 runs",
        lambda: (lambda v: v if all(v) else None)(
            [get_store().get(f"ran:{run}:{i}") for i in range(20)]
        ),
        on_worker,
    )
    offsets = [float(t) - started for t in times]
    # Each message has its own slot of 0.15 s in the 3 s window: they come in
    # order of their slots, over the whole window (0.5 s margin for latency).
    assert min(offsets) >= 0
    assert sum(o < 1.5 for o in offsets) in range(7, 14)
    assert max(offsets) > 2.0


def test_a_solo_worker_says_at_start_that_it_ignores_time_limits(worker: CeleryWorker) -> None:
    # The pool is chosen on the command line, out of reach of the system
    # checks: the worker itself reports it (check E051's message).
    solo = CeleryWorker([f"stabtest-{RUN_ID}-solo"], pool="solo", prefix=WORKER_PREFIX)
    with solo:
        log = solo.log()
    assert "django_stability.E051" not in log  # the message, not the id, is logged
    assert "ignores time limits" in log and "test-hard-limit" in log
    assert "ignores time limits" not in worker.log()  # the prefork worker is quiet
