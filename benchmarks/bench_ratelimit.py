"""Rate limits, side by side in one run against the same Redis.

1. The cost of one request's decision, as a multiple of a Redis PING, and the
   round trips it makes, with 1 and with 3 policies matching the request: this
   app, django-ratelimit, and the ``limits`` library.
2. Requests per second of a small view under gunicorn on 127.0.0.1 with no
   limiter, with django-ratelimit, and with this app's middleware.
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.connection

from benchmarks.harness import line

ROOT = Path(__file__).resolve().parents[1]
HUGE = "1000000/s"  # never reached: what is measured is the limiter's own cost


class RoundTrips:
    """Counts what redis-py sends on a connection (one send is one round trip)."""

    def __init__(self) -> None:
        self.sent = 0
        self._original = redis.connection.AbstractConnection.send_packed_command

    def __enter__(self) -> RoundTrips:
        counter = self
        original = self._original

        def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            counter.sent += 1
            original(conn, command, check_health)

        redis.connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        redis.connection.AbstractConnection.send_packed_command = self._original  # type: ignore[method-assign]


def round_trips(call: Callable[[], object], times: int = 50) -> float:
    call()
    with RoundTrips() as counter:
        for _ in range(times):
            call()
    return counter.sent / times


def decision_costs() -> None:
    from django.conf import settings
    from django.test import RequestFactory
    from django_ratelimit.core import is_ratelimited
    from limits import parse
    from limits.storage import RedisStorage
    from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

    from django_stability.ratelimit import RateLimitSpec, compile_policy, decide_request
    from django_stability.store import FailsafeStore, get_store

    store = get_store()
    assert isinstance(store, FailsafeStore), "the benchmark needs the Redis store"
    client = store.primary.client  # type: ignore[attr-defined]
    url = settings.CACHES["default"]["LOCATION"]
    run = uuid.uuid4().hex[:6]
    request = RequestFactory().get("/hello/", REMOTE_ADDR="203.0.113.7")

    ours = [compile_policy(RateLimitSpec(name=f"b{run}-{i}", rate=HUGE)) for i in range(3)]
    storage = RedisStorage(url)
    moving = MovingWindowRateLimiter(storage)
    fixed = FixedWindowRateLimiter(storage)
    item = parse("1000000/second")

    def stability(n: int) -> Callable[[], object]:
        return lambda: decide_request(ours[:n], request)

    def django_ratelimit(n: int) -> Callable[[], object]:
        def call() -> None:
            for i in range(n):
                is_ratelimited(request, group=f"d{run}-{i}", key="ip", rate=HUGE, increment=True)

        return call

    def limits_lib(limiter: Any, n: int) -> Callable[[], object]:
        kind = type(limiter).__name__

        def call() -> None:
            for i in range(n):
                limiter.hit(item, f"l{run}-{kind}-{i}", request.META["REMOTE_ADDR"])

        return call

    candidates: dict[tuple[str, int], Callable[[], object]] = {}
    for n in (1, 3):
        candidates[("django-stability", n)] = stability(n)
        candidates[("django-ratelimit", n)] = django_ratelimit(n)
        candidates[("limits, moving window", n)] = limits_lib(moving, n)
        candidates[("limits, fixed window", n)] = limits_lib(fixed, n)
    costs = interleaved_medians({("redis PING", 0): client.ping, **candidates})
    ping = costs[("redis PING", 0)]
    print(f"rate-limit decision per request (Redis at {url}, one process, medians):")
    line("redis PING", f"{ping * 1e6:8.1f} us")
    for (name, n), call in candidates.items():
        cost = costs[(name, n)]
        trips = round_trips(call)
        line(
            f"{name}, {n} polic{'y' if n == 1 else 'ies'}",
            f"{cost * 1e6:8.1f} us = {cost / ping:5.2f} x PING, {trips:4.1f} round trips",
        )
    for n in (1, 3):
        ratio = costs[("django-ratelimit", n)] / costs[("django-stability", n)]
        line(
            f"django-ratelimit / django-stability, {n} polic{'y' if n == 1 else 'ies'}",
            f"{ratio:5.2f} x (goal: at least 1.8 x)",
        )


def interleaved_medians(
    calls: dict[Any, Callable[[], object]], rounds: int = 1500, warmup: int = 200
) -> dict[Any, float]:
    """Median time of each call, taking turns round by round.

    The machine is shared and noisy: taking turns spreads any slow spell over
    every candidate alike, where timing one after the other would not.
    """
    samples: dict[Any, list[float]] = {name: [] for name in calls}
    for round_ in range(warmup + rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            took = time.perf_counter() - start
            if round_ >= warmup:
                samples[name].append(took)
    return {name: statistics.median(values) for name, values in samples.items()}


def _load(url_port: int, seconds: float, requests: int, threads: int, out: Any) -> None:
    """One load process: ``threads`` keep-alive clients, bounded in count and time."""
    done = [0] * threads
    errors = [0] * threads
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=5)
        while time.monotonic() < deadline and done[index] + errors[index] < requests:
            try:
                conn.request("GET", "/hello/")
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    done[index] += 1
                else:
                    errors[index] += 1
            except (OSError, http.client.HTTPException):
                errors[index] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=5)
        conn.close()

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put((sum(done), sum(errors)))


def _serve(limiter: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "benchmarks.ratelimit_site",
        "BENCH_LIMITER": limiter,
        "PYTHONPATH": str(ROOT),
    }
    command = [
        sys.executable, "-m", "gunicorn", "benchmarks.ratelimit_site_wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4",
        "--worker-class", "gthread", "--keep-alive", "30", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/hello/")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError(f"gunicorn ({limiter}) did not start")


def _measure(
    limiter: str, seconds: float, per_thread: int, threads: int, processes: int
) -> tuple[float, int]:
    """Requests per second served with ``limiter`` under bounded load, and the errors seen."""
    from port_for import get_port

    port = int(get_port(None))  # type: ignore[arg-type]
    server = _serve(limiter, port)
    try:
        context = multiprocessing.get_context("fork")
        out = context.Queue()
        loaders = [
            context.Process(target=_load, args=(port, seconds, per_thread, threads, out))
            for _ in range(processes)
        ]
        start = time.monotonic()
        for loader in loaders:
            loader.start()
        totals = [out.get(timeout=seconds + 30) for _ in loaders]
        elapsed = time.monotonic() - start
        for loader in loaders:
            loader.join(timeout=10)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
    return sum(t[0] for t in totals) / elapsed, sum(t[1] for t in totals)


def throughput() -> None:
    seconds, per_thread, threads, processes, rounds = 3.0, 4000, 4, 2, 2
    print(
        f"small view under gunicorn (2 workers x 4 threads, 127.0.0.1), {processes} x {threads} "
        f"keep-alive clients, {rounds} rounds of {seconds:.0f} s each, taking turns (mean):"
    )
    limiters = ("none", "django-ratelimit", "stability")
    samples: dict[str, list[float]] = {limiter: [] for limiter in limiters}
    errors: dict[str, int] = dict.fromkeys(limiters, 0)
    for _ in range(rounds):
        for limiter in limiters:
            rate, failed = _measure(limiter, seconds, per_thread, threads, processes)
            samples[limiter].append(rate)
            errors[limiter] += failed
    rates = {limiter: statistics.mean(values) for limiter, values in samples.items()}
    names = {"none": "no limiter", "stability": "django-stability middleware"}
    for limiter in limiters:
        line(
            names.get(limiter, limiter),
            f"{rates[limiter]:8.0f} req/s ({errors[limiter]} errors)",
        )
    for limiter in limiters[1:]:
        line(
            f"  {names.get(limiter, limiter)} as a share of no limiter",
            f"{rates[limiter] / rates['none'] * 100:6.1f} %",
        )


def main() -> None:
    decision_costs()
    throughput()
