"""Background jobs without a worker: policy, submission, refusals, views, cleanup, schedules.

Messages go to the real Redis broker (and RabbitMQ for its probe) on queues
no worker reads; the worker's side is in ``test_jobs_worker.py``.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from celery import Celery
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from django_stability import signals
from django_stability.exceptions import Overloaded, QueueFull, TooManyJobs
from django_stability.jobs import (
    JITTER_HEADER,
    background_job,
    backpressure,
    broker,
    cleanup_jobs,
    jittered,
    locks,
    plan_spread,
)
from django_stability.jobs.policy import JobSpec
from django_stability.jobs.schedules import jitter_eta
from django_stability.models import Job
from django_stability.store import get_store
from django_stability.test import override_policy
from tests.celery_app import app as test_app
from tests.celery_worker import clean_up_run
from tests.redis_servers import PrivateRedis, free_port
from tests.testapp import jobs

RUN_ID = os.environ["STABILITY_TEST_RUN"]
BROKER_PREFIX = django_settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"]


def fresh_queue() -> str:
    return f"stabtest-{RUN_ID}-q-{uuid.uuid4().hex[:8]}"


def broker_messages(queue: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    raw = client.lrange(f"{BROKER_PREFIX}{queue}", 0, -1)
    return [json.loads(item) for item in raw]


@pytest.fixture
def queue() -> Iterator[str]:
    name = fresh_queue()
    yield name
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    for key in broker.redis_queue_keys(name, {"global_keyprefix": BROKER_PREFIX}):
        client.delete(key)


@pytest.fixture(autouse=True)
def _fresh_gauge() -> None:
    backpressure.gauge.reset()


@pytest.fixture(autouse=True, scope="module")
def _clean_up_run() -> Iterator[None]:
    yield
    clean_up_run()


# The policy ------------------------------------------------------------------------


def test_policy_fields_parse_and_explain_bad_values() -> None:
    spec = JobSpec.build("export", {"jitter": "30", "time_limit": "300", "max_queue_depth": "50"})
    assert (spec.jitter, spec.time_limit, spec.max_queue_depth) == (30.0, 300.0, 50)
    assert spec.max_attempts == 2 and spec.lock_ttl_while_running == 300.0
    with pytest.raises(ValidationError) as error:
        JobSpec.build("export", {"soft_time_limit": 300, "time_limit": 200})
    assert "must be shorter than the hard one" in str(error.value)
    with pytest.raises(ValidationError) as error:
        JobSpec.build("export", {"time_limit": "0"})
    assert "greater than 0" in str(error.value)
    with pytest.raises(ValidationError) as error:
        JobSpec.build("export", {"max_queue_depth": "lots"})
    assert "whole number" in str(error.value)


def test_decorator_refuses_a_bad_policy_and_a_missing_name() -> None:
    with pytest.raises(TypeError, match="soft time limit"):
        background_job("bad-limits", soft_time_limit=10, time_limit=5)(lambda job: None)
    with pytest.raises(TypeError, match="needs a name"):
        background_job("")


def test_parameters_must_be_json() -> None:
    with pytest.raises(TypeError, match="plain JSON data"):
        locks.parameters_json("export", {"when": datetime.now()})
    assert locks.parameters_json("x", {"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    same = locks.dedup_key("x", 1, locks.parameters_json("x", {"a": 1, "b": 2}))
    assert same == locks.dedup_key("x", 1, locks.parameters_json("x", {"b": 2, "a": 1}))
    assert same != locks.dedup_key("x", 2, locks.parameters_json("x", {"a": 1, "b": 2}))


# Backpressure, pure and against the brokers -----------------------------------------


def test_over_capacity_is_a_plain_comparison() -> None:
    assert not backpressure.over_capacity(10**9, None)
    assert not backpressure.over_capacity(2, 3)
    assert backpressure.over_capacity(3, 3)


def test_gauge_probes_at_most_once_per_cache_period(queue: str) -> None:
    now = [100.0]
    gauge = backpressure.QueueGauge(clock=lambda: now[0])
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    key = f"{BROKER_PREFIX}{queue}"
    assert gauge.depth(test_app, queue) == 0
    client.lpush(key, "m1", "m2")
    gauge.note_sent(test_app, queue)
    assert gauge.depth(test_app, queue) == 1  # cached probe plus what this process sent
    now[0] += 1.0
    assert gauge.depth(test_app, queue) == 2  # probed again: what the broker holds
    backpressure.note_scheduled(queue, "job-a", 60)
    now[0] += 1.0
    assert gauge.depth(test_app, queue) == 3  # plus a job waiting out its jitter
    backpressure.note_started(queue, "job-a")
    now[0] += 1.0
    assert gauge.depth(test_app, queue) == 2


def test_redis_probe_counts_every_priority_list(queue: str) -> None:
    for priority in (0, 0, 9, 5):
        test_app.send_task("stabtest.nothing", queue=queue, priority=priority)
    assert broker.queue_depth(test_app, queue) == 4
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    assert client.llen(f"{BROKER_PREFIX}{queue}") < 4  # LLEN of the queue's name alone misses some


def test_rabbitmq_probe_uses_a_passive_declare() -> None:
    from kombu import Connection
    from kombu import Queue as KombuQueue

    url = "amqp://guest:guest@127.0.0.1:5672//"
    # Not the current app: a shared task would send with it in later tests.
    app = Celery("stabtest-rabbit", broker=url, set_as_current=False)
    name = fresh_queue()
    # Confirmed publishing: the broker has every message before the probe asks.
    with Connection(
        url, connect_timeout=2, transport_options={"confirm_publish": True}
    ) as connection:
        channel = connection.channel()
        KombuQueue(name, channel=channel, auto_delete=False).declare()
        try:
            producer = connection.Producer(channel)
            for n in range(3):
                producer.publish({"n": n}, routing_key=name)
            assert broker.queue_depth(app, name) == 3
            assert broker.queue_depth(app, f"{name}-missing") == 0  # no queue holds nothing
            assert broker.queue_depth(app, name) == 3  # and the next probe still works
        finally:
            channel.queue_delete(name)


def test_unreachable_broker_is_reported_not_raised_as_anything_else() -> None:
    app = Celery("stabtest-down", broker=f"redis://127.0.0.1:{free_port()}/0", set_as_current=False)
    started = time.monotonic()
    with pytest.raises(broker.BrokerUnreachable):
        broker.queue_depth(app, "anything")
    assert time.monotonic() - started < 2  # the probe's own timeout, not kombu's retries


# Submitting -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_too_many_active_jobs_per_owner_get_429(queue: str, django_user_model: Any) -> None:
    alice = django_user_model.objects.create_user("alice")
    bob = django_user_model.objects.create_user("bob")
    with override_policy(JobSpec(name="test-unconsumed", queue=queue, max_active_per_owner=2)):
        jobs.unconsumed.submit(alice, n=1)
        jobs.unconsumed.submit(alice, n=2)
        with pytest.raises(TooManyJobs) as refused:
            jobs.unconsumed.submit(alice, n=3)
        assert refused.value.status_code == 429
        jobs.unconsumed.submit(bob, n=3)  # a slot is per owner
        # A job that ends gives its slot back.
        Job.objects.filter(owner=alice, parameters__n=1).first().delete()  # type: ignore[union-attr]
        jobs.unconsumed.submit(alice, n=3)
    assert len(broker_messages(queue)) == 4


@pytest.mark.django_db(transaction=True)
def test_unreachable_or_hung_broker_gets_503_fast_and_leaves_nothing(
    settings: Any, django_user_model: Any
) -> None:
    user = django_user_model.objects.create_user("carol")
    refusals: list[str] = []

    def refused(reason: str, **kwargs: Any) -> None:
        refusals.append(reason)

    signals.job_refused.connect(refused)
    server = PrivateRedis().start()
    try:
        DOWN_APPS["hung"] = Celery(
            "stabtest-hung", broker=f"redis://127.0.0.1:{server.port}/0", set_as_current=False
        )
        settings.STABILITY = {**settings.STABILITY, "JOBS_CELERY_APP": f"{__name__}.HUNG_APP"}
        server.hang()
        for policy in (
            JobSpec(name="test-unconsumed", queue="q"),  # fails at sending
            JobSpec(name="test-unconsumed", queue="q", max_queue_depth=5),  # fails at the probe
        ):
            with override_policy(policy):
                started = time.monotonic()
                with pytest.raises(Overloaded) as error:
                    jobs.unconsumed.submit(user, n=1)
                # The probe's timeout (0.5 s) and not Celery's 4 s of retries;
                # 3 s of margin for a loaded machine.
                assert time.monotonic() - started < 3
                assert "cannot be reached" in error.value.message
        assert Job.objects.count() == 0
        assert locks.lock_holder(locks.dedup_key("test-unconsumed", user.pk, '{"n":1}')) is None
        assert refusals == ["broker_unreachable", "broker_unreachable"]
    finally:
        signals.job_refused.disconnect(refused)
        server.close()


DOWN_APPS: dict[str, Celery] = {}


def __getattr__(name: str) -> Any:
    # JOBS_CELERY_APP is a dotted path; this module hands out the apps the
    # tests make on the fly.
    if name == "HUNG_APP":
        return DOWN_APPS["hung"]
    raise AttributeError(name)


@pytest.mark.django_db(transaction=True)
def test_in_a_transaction_the_job_is_sent_on_commit_and_a_rollback_frees_the_lock(
    queue: str, django_user_model: Any
) -> None:
    user = django_user_model.objects.create_user("dave")
    store = get_store()
    with override_policy(JobSpec(name="test-unconsumed", queue=queue)):
        with transaction.atomic():
            job = jobs.unconsumed.submit(user, n=1).job
            assert broker_messages(queue) == []  # not before the row is visible
        messages = broker_messages(queue)
        assert [m["headers"]["id"] for m in messages] == [str(job.id)]

        started: list[Job] = []

        def view_that_fails() -> None:
            with transaction.atomic():
                started.append(jobs.unconsumed.submit(user, n=2).job)
                raise RuntimeError("the view failed")

        with pytest.raises(RuntimeError):
            view_that_fails()
        rolled = started[0]
        assert not Job.objects.filter(pk=rolled.id).exists()
        assert len(broker_messages(queue)) == 1
        # The committed job's lock is its own, for the job's lifetime; the
        # rolled-back job's lock is pending and short-lived: it blocks the
        # same work for at most UNCOMMITTED_LOCK_TTL.
        redis_store = store.primary  # type: ignore[attr-defined]
        assert locks.lock_holder(job.dedup_key) == str(job.id)
        assert redis_store.client.pttl(redis_store.key(locks.lock_key(job.dedup_key))) > 60_000
        assert store.get(locks.lock_key(rolled.dedup_key)) == f"pending:{rolled.id}"
        ttl = redis_store.client.pttl(redis_store.key(locks.lock_key(rolled.dedup_key)))
        assert 0 < ttl <= locks.UNCOMMITTED_LOCK_TTL * 1000


@pytest.mark.django_db(transaction=True)
def test_an_uncommitted_job_is_not_duplicated_by_a_concurrent_request(
    queue: str, django_user_model: Any
) -> None:
    user = django_user_model.objects.create_user("frank")
    outcome: list[Any] = []

    def concurrent_request() -> None:
        try:
            outcome.append(jobs.unconsumed.submit(user, n=1))
        except Overloaded as exc:
            outcome.append(exc)
        finally:
            connection.close()

    with override_policy(JobSpec(name="test-unconsumed", queue=queue)):
        with transaction.atomic():
            first = jobs.unconsumed.submit(user, n=1).job
            other = threading.Thread(target=concurrent_request)
            other.start()
            other.join(10)
        # The other request could not see the job yet, and did not start a
        # second one: it was told to come back in a second.
        assert isinstance(outcome[0], Overloaded) and outcome[0].retry_after == 1
        assert Job.objects.filter(name="test-unconsumed").count() == 1
        again = jobs.unconsumed.submit(user, n=1)
        assert not again.created and again.job.id == first.id


@pytest.mark.django_db(transaction=True)
def test_a_lock_whose_job_vanished_is_taken_over(queue: str, django_user_model: Any) -> None:
    user = django_user_model.objects.create_user("gina")
    with override_policy(JobSpec(name="test-unconsumed", queue=queue)):
        first = jobs.unconsumed.submit(user, n=1).job
        # The row disappears behind the ORM's back (a restored database).
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM django_stability_job WHERE id = %s", [first.id])
        second = jobs.unconsumed.submit(user, n=1)
        assert second.created and locks.lock_holder(second.job.dedup_key) == str(second.job.id)


@pytest.mark.django_db(transaction=True)
def test_a_stale_lock_of_an_ended_job_does_not_block_new_work(
    queue: str, django_user_model: Any
) -> None:
    user = django_user_model.objects.create_user("erin")
    with override_policy(JobSpec(name="test-unconsumed", queue=queue)):
        first = jobs.unconsumed.submit(user, n=1).job
        # The job ended but its lock was not given back (Redis was away then).
        Job.objects.filter(pk=first.pk).update(state=Job.SUCCEEDED)
        assert locks.lock_holder(first.dedup_key) == str(first.id)
        second = jobs.unconsumed.submit(user, n=1)
        assert second.created and second.job.id != first.id


@pytest.mark.django_db(transaction=True)
def test_a_lock_given_back_a_moment_ago_is_free(queue: str, django_user_model: Any) -> None:
    user = django_user_model.objects.create_user("hana")
    with override_policy(JobSpec(name="test-unconsumed", queue=queue)):
        dedup = locks.dedup_key("test-unconsumed", user.pk, '{"n":1}')
        # A given-back lock lingers as an empty value for a moment (a
        # compare-and-set cannot delete); here for longer than every look.
        get_store().set(locks.lock_key(dedup), "", 60)
        taken = jobs.unconsumed.submit(user, n=1)
        assert taken.created and locks.lock_holder(dedup) == str(taken.job.id)


@pytest.mark.django_db(transaction=True)
def test_anonymous_users_cannot_start_jobs(queue: str) -> None:
    response = Client().post("/jobs-test/unconsumed/", {"n": 1})
    assert response.status_code == 403
    assert "Sign in" in response.json()["detail"]
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_queue_full_is_a_503_problem_with_retry_after() -> None:
    error = QueueFull(policy="export", retry_after=7.2)
    assert error.status_code == 503 and error.retry_after_header == "8"


# Views ----------------------------------------------------------------------------


def make_job(owner: Any, state: str, **fields: Any) -> Job:
    return Job.objects.create(
        name="test-report",
        owner=owner,
        parameters={},
        dedup_key=uuid.uuid4().hex,
        queue="q",
        state=state,
        **fields,
    )


@pytest.mark.django_db
def test_status_and_download_answer_only_the_owner(django_user_model: Any) -> None:
    owner = django_user_model.objects.create_user("owner")
    other = django_user_model.objects.create_user("other")
    name = storages["default"].save(f"stability-jobs/{uuid.uuid4()}/r.txt", ContentFile(b"data"))
    done = make_job(owner, Job.SUCCEEDED, result_name=name, result_filename="r.txt", result_size=4)
    as_owner, as_other = Client(), Client()
    as_owner.force_login(owner)
    as_other.force_login(other)
    status = as_owner.get(f"/stability/jobs/{done.id}/")
    assert status.status_code == 303
    assert status["Location"] == f"/stability/jobs/{done.id}/download/"
    assert status.json()["size"] == 4
    assert b"".join(as_owner.get(status["Location"]).streaming_content) == b"data"
    for url in (f"/stability/jobs/{done.id}/", f"/stability/jobs/{done.id}/download/"):
        assert as_other.get(url).status_code == 404
        assert Client().get(url).status_code == 404
    # An unknown id looks the same as somebody else's; a malformed one is no URL.
    unknown = as_other.get(f"/stability/jobs/{uuid.uuid4()}/")
    assert (
        unknown.status_code == 404
        and unknown.json() == as_other.get(f"/stability/jobs/{done.id}/").json()
    )
    assert as_owner.get("/stability/jobs/1/").status_code == 404
    assert as_owner.post(f"/stability/jobs/{done.id}/").status_code == 405
    storages["default"].delete(name)


@pytest.mark.django_db
def test_status_of_queued_failed_and_expired_jobs(django_user_model: Any) -> None:
    owner = django_user_model.objects.create_user("owner")
    client = Client()
    client.force_login(owner)
    queued = make_job(owner, Job.QUEUED)
    response = client.get(f"/stability/jobs/{queued.id}/")
    assert response.status_code == 200 and response.json()["state"] == "queued"
    assert response["Retry-After"] == "2" and response["Cache-Control"] == "no-store"
    assert client.get(f"/stability/jobs/{queued.id}/download/").status_code == 409
    failed = make_job(owner, Job.FAILED, error="It broke.")
    response = client.get(f"/stability/jobs/{failed.id}/")
    assert response.json()["error"] == "It broke." and "Retry-After" not in response
    expired = make_job(owner, Job.EXPIRED)
    assert client.get(f"/stability/jobs/{expired.id}/").json()["state"] == "expired"
    assert client.get(f"/stability/jobs/{expired.id}/download/").status_code == 410
    gone = make_job(owner, Job.SUCCEEDED, result_name="stability-jobs/none/missing.txt")
    assert client.get(f"/stability/jobs/{gone.id}/download/").status_code == 410


# Cleanup --------------------------------------------------------------------------


@pytest.mark.django_db
def test_cleanup_deletes_old_files_and_marks_jobs_expired(django_user_model: Any) -> None:
    owner = django_user_model.objects.create_user("owner")
    storage = storages["default"]
    now = timezone.now()
    old_name = storage.save(f"stability-jobs/{uuid.uuid4()}/old.txt", ContentFile(b"old"))
    new_name = storage.save(f"stability-jobs/{uuid.uuid4()}/new.txt", ContentFile(b"new"))
    old = make_job(owner, Job.SUCCEEDED, result_name=old_name, expires_at=now - timedelta(1))
    new = make_job(owner, Job.SUCCEEDED, result_name=new_name, expires_at=now + timedelta(1))
    failed = make_job(owner, Job.FAILED, expires_at=now - timedelta(1))
    report = cleanup_jobs(now=now)
    assert report.expired == 2
    assert not storage.exists(old_name) and storage.exists(new_name)
    assert {j.pk: j.state for j in Job.objects.filter(pk__in=[old.pk, new.pk, failed.pk])} == {
        old.pk: Job.EXPIRED,
        new.pk: Job.SUCCEEDED,
        failed.pk: Job.EXPIRED,
    }
    assert cleanup_jobs(now=now).expired == 0
    storage.delete(new_name)


@pytest.mark.django_db
def test_cleanup_ends_runs_long_past_their_hard_limit(django_user_model: Any) -> None:
    owner = django_user_model.objects.create_user("owner")
    now = timezone.now()
    lost = make_job(owner, Job.RUNNING, time_limit=60, started_at=now - timedelta(minutes=10))
    alive = make_job(owner, Job.RUNNING, time_limit=60, started_at=now - timedelta(seconds=30))
    unbounded = make_job(owner, Job.RUNNING, started_at=now - timedelta(days=1))
    assert locks.take_lock(lost.dedup_key, str(lost.id), 600) is None
    finished: list[tuple[Any, str]] = []

    def on_finished(job: Job, state: str, **kwargs: Any) -> None:
        finished.append((job.pk, state))

    signals.job_finished.connect(on_finished)
    try:
        assert cleanup_jobs(now=now).lost == 1
    finally:
        signals.job_finished.disconnect(on_finished)
    assert finished == [(lost.pk, Job.FAILED)]
    lost.refresh_from_db()
    assert lost.state == Job.FAILED and "worker was lost" in lost.error
    assert locks.lock_holder(lost.dedup_key) is None
    assert Job.objects.get(pk=alive.pk).state == Job.RUNNING
    assert Job.objects.get(pk=unbounded.pk).state == Job.RUNNING


# Schedules ------------------------------------------------------------------------


def test_plan_spread_gives_each_message_its_slot() -> None:
    rng = random.Random(7)
    plan = plan_spread(100, over=50, rng=rng)
    assert all(i * 0.5 <= c < (i + 1) * 0.5 for i, c in enumerate(plan))
    assert plan_spread(10, over=1, rate=2, jitter=False) == [i * 0.5 for i in range(10)]
    assert plan_spread(4, over=100, rate=1000, jitter=False) == [0, 25, 50, 75]
    assert plan_spread(0, over=5) == []
    with pytest.raises(ValueError, match="needs over="):
        plan_spread(3)
    with pytest.raises(ValueError, match="above 0"):
        plan_spread(3, rate=0)


def test_jittered_entry_and_eta_never_past_expiry() -> None:
    entry = {"task": "t", "schedule": 60.0, "options": {"queue": "q"}}
    made = jittered(entry, 30)
    assert made["options"] == {"queue": "q", "headers": {JITTER_HEADER: 30.0}}
    assert "headers" not in entry["options"]  # the original is left alone
    with pytest.raises(ValueError):
        jittered(entry, -1)
    now = timezone.now()
    assert jitter_eta(None, None, 30, now, 12) == now + timedelta(seconds=12)
    later = now + timedelta(seconds=100)
    assert jitter_eta(later, None, 30, now, 40) == later + timedelta(seconds=30)
    expires = now + timedelta(seconds=10)
    assert jitter_eta(None, expires, 30, now, 25) == expires - timedelta(seconds=1)


def test_jitter_header_moves_the_published_eta_whatever_sends_it(queue: str) -> None:
    before = timezone.now()
    for _ in range(40):
        # As beat sends an entry made by jittered(): its options go to apply_async.
        test_app.send_task("stabtest.nothing", queue=queue, headers={JITTER_HEADER: 10})
    after = timezone.now()
    headers = [message["headers"] for message in broker_messages(queue)]
    assert len(headers) == 40
    assert all(JITTER_HEADER not in h for h in headers)
    offsets = [(datetime.fromisoformat(h["eta"]) - before).total_seconds() for h in headers]
    span = (after - before).total_seconds()
    assert all(0 <= o <= 10 + span for o in offsets)
    # Spread, not bunched: 40 uniform draws over 10 s fill at least 3 of 4 quarters.
    assert len({int(o // 2.5) for o in offsets}) >= 3
    body = json.loads(base64.b64decode(broker_messages(queue)[0]["body"]))
    assert body[0] == []  # the message itself is untouched


def test_messages_without_the_header_keep_their_eta(queue: str) -> None:
    before = timezone.now()
    test_app.send_task("stabtest.nothing", queue=queue)
    test_app.send_task("stabtest.nothing", queue=queue, countdown=30)
    etas = [m["headers"]["eta"] for m in broker_messages(queue)]
    assert None in etas
    planned = datetime.fromisoformat(next(e for e in etas if e))
    assert 29 < (planned - before).total_seconds() < 32


# Admin ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_lists_jobs_and_edits_job_policies(admin_client: Any, django_user_model: Any) -> None:
    owner = django_user_model.objects.create_user("owner")
    job = make_job(owner, Job.SUCCEEDED, expires_at=timezone.now() + timedelta(1))
    listing = admin_client.get("/admin/django_stability/job/")
    assert listing.status_code == 200 and str(job.id) in listing.content.decode()
    assert admin_client.get(f"/admin/django_stability/job/{job.pk}/change/").status_code == 200
    response = admin_client.post(
        "/admin/django_stability/job/",
        {"action": "expire_now", "_selected_action": [str(job.pk)]},
    )
    assert response.status_code == 302
    assert Job.objects.get(pk=job.pk).state == Job.EXPIRED
    form = admin_client.get("/admin/django_stability/jobpolicy/add/").content.decode()
    for field in (
        "jitter",
        "soft_time_limit",
        "time_limit",
        "max_active_per_owner",
        "queue",
        "max_queue_depth",
        "result_lifetime",
    ):
        assert f'name="{field}"' in form
    response = admin_client.post(
        "/admin/django_stability/jobpolicy/add/",
        {"name": "test-report", "description": "", "soft_time_limit": "50", "time_limit": "20"},
    )
    assert (
        response.status_code == 200
        and "must be shorter than the hard one" in response.content.decode()
    )
