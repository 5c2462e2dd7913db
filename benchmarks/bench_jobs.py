"""Background jobs: the time to answer 202, and the cost of the backpressure probe.

Side by side in one run: Celery's ``apply_async`` alone, a hand-written view
(a row, then ``apply_async``, then 202), celery-once's ``QueueOnce`` (a Redis
lock, then ``apply_async``), and ``accept()`` (dedup lease, row, message, 202).
The probe: this app's Redis probe (one pipelined LLEN plus the scheduled
count), its cached answer, and what a hand-written probe does (a kombu
connection and a passive declare per call), on Redis and on RabbitMQ.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.harness import line, median_seconds

ROUNDS = 300


def interleaved(
    calls: dict[str, Callable[[int], object]], rounds: int = ROUNDS
) -> dict[str, tuple[float, float]]:
    """(p50, p99) in seconds of each ``call(i)``, the calls taken in turns.

    Each round calls every contender once, so that a noisy moment on the
    shared machine falls on all of them alike; 30 warm-up rounds first.
    """
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(-30, rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call(i)
            if i >= 0:
                samples[name].append(time.perf_counter() - start)
    result = {}
    for name, values in samples.items():
        values.sort()
        result[name] = (statistics.median(values), values[int(len(values) * 0.99) - 1])
    return result


def ms(value: float) -> str:
    return f"{value * 1e3:6.2f} ms"


def main() -> None:
    from django.test.utils import setup_databases, teardown_databases

    old = setup_databases(verbosity=0, interactive=False)
    try:
        run()
    finally:
        teardown_databases(old, verbosity=0)


def run() -> None:
    import redis
    from celery_once import QueueOnce
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.http import JsonResponse
    from django.test import RequestFactory

    from django_stability import background_job
    from django_stability.jobs import backpressure, broker
    from django_stability.models import Job
    from django_stability.store import get_store
    from tests.celery_app import app

    queue = f"stabbench-{uuid.uuid4().hex[:8]}"  # no worker reads it
    user = get_user_model().objects.create_user(f"bench-{uuid.uuid4().hex[:6]}")
    factory = RequestFactory()
    broker_client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"]
    app.conf.ONCE = {
        "backend": "celery_once.backends.Redis",
        "settings": {"url": settings.CELERY_BROKER_URL, "default_timeout": 3600},
    }

    @app.task(base=QueueOnce, once={"graceful": True}, name=f"stabbench.once.{queue}")
    def once_task(n: int) -> None:
        """celery-once's task: a lock per arguments, then the message."""

    plain_task = app.tasks["stabtest.record_time"]

    def noop(job: Any, n: int) -> None:
        """Never runs: no worker reads the benchmark's queue."""

    job = background_job(f"stabbench-{queue}", queue=queue)(noop)
    deep = background_job(f"stabbench-depth-{queue}", queue=queue, max_queue_depth=10**9)(noop)

    ping = median_seconds(broker_client.ping, rounds=500, warmup=50)
    print(
        f"background jobs (Redis broker and PostgreSQL on loopback, one process, "
        f"{ROUNDS} requests each, taken in turns; PING {ping * 1e6:.0f} us):"
    )

    def celery_alone(i: int) -> None:
        plain_task.apply_async(args=(f"k{i}",), queue=queue)

    def hand_written(i: int) -> None:
        row = Job.objects.create(
            name="hand-written", owner=user, parameters={"n": i}, dedup_key=str(i), queue=queue
        )
        plain_task.apply_async(args=(str(row.id),), queue=queue)
        response = JsonResponse({"id": str(row.id)}, status=202)
        response["Location"] = f"/jobs/{row.id}/"

    def celery_once(i: int) -> None:
        once_task.apply_async(args=(i,), queue=queue)

    request = factory.post("/export/")
    request.user = user

    def ours(i: int) -> None:
        response = job.accept(request, n=i)
        assert response.status_code == 202, response.content

    def ours_again(i: int) -> None:
        response = job.accept(request, n=-1000)
        assert i == -30 or json.loads(response.content).get("created") is False, response.content

    def ours_with_depth(i: int) -> None:
        response = deep.accept(request, n=i)
        assert response.status_code == 202, response.content

    results = interleaved(
        {
            "Celery apply_async alone (no row, no answer)": celery_alone,
            "hand-written: row + apply_async + 202": hand_written,
            "celery-once QueueOnce.apply_async (lock + message)": celery_once,
            "accept(): dedup lock + row + message + 202": ours,
            "accept() of a duplicate (the existing job's 202)": ours_again,
            "accept() with max_queue_depth (probe, cached 1 s)": ours_with_depth,
        }
    )
    base = results["hand-written: row + apply_async + 202"][0]
    for name, (p50, p99) in results.items():
        line(
            f"202 answer, {name}",
            f"p50 {ms(p50)}  p99 {ms(p99)}  p50 = {p50 / base:4.2f} x hand-written",
        )

    # The backpressure probe ---------------------------------------------------------
    print("backpressure probe (queue depth before enqueueing):")
    now = [0.0]

    def advancing() -> float:
        now[0] += 10.0
        return now[0]

    uncached = backpressure.QueueGauge(clock=advancing)
    cached = backpressure.QueueGauge()
    redis_probe = median_seconds(lambda: uncached.depth(app, queue), rounds=500, warmup=50)
    cached_probe = median_seconds(lambda: cached.depth(app, queue), rounds=5000, warmup=100)

    def kombu_fresh() -> int:
        # What a hand-written probe does: a connection, a declare (kombu's
        # passive declare misses queues under a global_keyprefix), the count.
        with app.connection_for_read() as connection:
            return int(connection.default_channel.queue_declare(queue=queue).message_count)

    naive = median_seconds(kombu_fresh, rounds=200, warmup=20)
    depth = uncached.depth(app, queue)
    line("depth seen (messages in the queue)", f"{depth}")
    line(
        "Redis: pipelined LLEN + scheduled count (a probe)",
        f"{redis_probe * 1e6:8.0f} us = {redis_probe / ping:4.2f} x PING",
    )
    line("Redis: cached answer (all requests but one a second)", f"{cached_probe * 1e6:8.2f} us")
    line(
        "Redis: hand-written, a new kombu connection + declare",
        f"{naive * 1e6:8.0f} us = {naive / redis_probe:4.1f} x our probe",
    )

    rabbit_url = "amqp://guest:guest@127.0.0.1:5672//"
    try:
        from celery import Celery

        rabbit = Celery("stabbench-rabbit", broker=rabbit_url, set_as_current=False)
        rabbit_queue = declare_rabbit_queue(rabbit_url, queue)
    except Exception as exc:  # the benchmark runs without RabbitMQ too
        line("RabbitMQ", f"skipped ({type(exc).__name__}: {exc})")
    else:
        with rabbit_queue:
            kept = median_seconds(lambda: broker.queue_depth(rabbit, queue), rounds=300, warmup=30)

            def rabbit_fresh() -> int:
                with rabbit.connection_for_read() as connection:
                    return int(
                        connection.default_channel.queue_declare(
                            queue=queue, passive=True
                        ).message_count
                    )

            fresh = median_seconds(rabbit_fresh, rounds=100, warmup=10)
            line(
                "RabbitMQ: passive declare on a kept connection (a probe)", f"{kept * 1e6:8.0f} us"
            )
            line(
                "RabbitMQ: hand-written new connection + passive declare",
                f"{fresh * 1e6:8.0f} us = {fresh / kept:4.1f} x our probe",
            )

    # Tasks under a rate limit ------------------------------------------------------
    from kombu.utils.limits import TokenBucket

    from django_stability import RateLimited, rate_limit

    print("a task rate limit (the decision around each run of a task's body, in the worker):")

    def body() -> None:
        """A task's body that does nothing: what is measured is the decision around it."""

    admitted = rate_limit(f"stabbench-task-{queue}", rate="1000000/s")(body)
    refused = rate_limit(f"stabbench-refused-{queue}", rate="1/h")(body)
    refused()  # spends the only run of the hour: every later call is refused

    def refused_run() -> None:
        try:
            refused()
        except RateLimited:
            pass

    # What Celery's own rate_limit task option does in each worker process.
    bucket = TokenBucket(1e9, capacity=1)
    ours = median_seconds(admitted, rounds=2000, warmup=200)
    ours_refused = median_seconds(refused_run, rounds=2000, warmup=200)
    celery_bucket = median_seconds(lambda: bucket.can_consume(1), rounds=2000, warmup=200)
    line(
        "ours, admitted: one round trip, every worker together",
        f"{ours * 1e6:8.0f} us = {ours / ping:4.2f} x PING",
    )
    line(
        "ours, refused (this process remembers: no round trip)",
        f"{ours_refused * 1e6:8.1f} us, then the message sent again (an apply_async)",
    )
    line(
        "Celery's rate_limit: a token bucket in each worker process",
        f"{celery_bucket * 1e6:8.1f} us (N processes run N times the rate)",
    )

    # Clean up what the benchmark left on the shared Redis: every broker key
    # of this run's prefix, celery-once's locks, the store's scheduled set.
    for key in broker_client.scan_iter(match=f"{prefix}*", count=1000):
        broker_client.delete(key)
    for key in broker_client.scan_iter(match=f"qo_stabbench.once.{queue}*", count=1000):
        broker_client.delete(key)
    store = get_store()
    store.delete(backpressure.scheduled_key(queue))


class declare_rabbit_queue:
    """A queue on RabbitMQ holding a few messages, deleted on exit."""

    def __init__(self, url: str, name: str) -> None:
        from kombu import Connection
        from kombu import Queue as KombuQueue

        self.connection = Connection(
            url, connect_timeout=2, transport_options={"confirm_publish": True}
        )
        self.channel = self.connection.channel()
        self.name = name
        KombuQueue(name, channel=self.channel, auto_delete=False).declare()
        producer = self.connection.Producer(self.channel)
        for n in range(5):
            producer.publish({"n": n}, routing_key=name)

    def __enter__(self) -> Iterator[None]:
        return iter(())

    def __exit__(self, *exc: Any) -> None:
        self.channel.queue_delete(self.name)
        self.connection.close()
