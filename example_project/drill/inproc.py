"""The drill's in-process scenarios, each run in a child process of its own.

``python -m example_project.drill.inproc <stampede|cron|scaling> <on|off> [--quick]``
prints one line of JSON: the scenario's measures. The drill runs it with the
shop's settings pointed at its private Redis and database, so each run starts
from a fresh process (no state, no thread, no memory carried over).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")


def _threads(count: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)


# Self-denial: a cache stampede ---------------------------------------------------------------


def stampede(protected: bool, quick: bool) -> dict[str, float]:
    """64 callers at once on an expired product list: how many compute it?

    Protected, the shop's cache is the stampede-protected backend; unprotected,
    django-redis. The calls are the shop's own (``cache.get_or_set`` with the
    catalogue's compute), on a key of the catalogue policy with a 1 s TTL.
    """
    from django.core.cache import cache

    from example_project.shop import catalogue

    key, ttl, callers = "catalogue:drill", 1, 64
    cache.get_or_set(key, catalogue.compute_catalogue, ttl)
    time.sleep(ttl + 0.3)  # expired now (stale, for the protected cache)
    catalogue.computes.reset()
    barrier = threading.Barrier(callers)
    took: list[float] = []
    lock = threading.Lock()

    def caller(_: int) -> None:
        barrier.wait()
        started = time.monotonic()
        cache.get_or_set(key, catalogue.compute_catalogue, ttl)
        with lock:
            took.append(time.monotonic() - started)

    _threads(callers, caller)
    time.sleep(0.6)  # a refresh handed to a background thread lands (0.3 s and a query)
    took.sort()
    return {
        "computes": catalogue.computes.reset(),
        "p99": took[min(len(took) - 1, int(0.99 * len(took)))],
    }


# Self-denial: midnight cron on every server --------------------------------------------------


def cron(protected: bool, quick: bool) -> dict[str, float]:
    """20 servers publish the nightly report in the same second: how many run at once?

    Each simulated server publishes the shop's beat entry through Celery (to
    the drill's Redis), protected with ``jittered()`` as the shop's schedule
    has it (the window shortened to fit the drill), then runs the report at
    the ``eta`` the publish hook wrote into its message, as its worker would.
    """
    from celery.signals import after_task_publish

    from django_stability.jobs import jittered
    from example_project.celery import NIGHTLY_REPORT
    from example_project.shop.jobs import nightly_report

    servers, window = 20, 3.0 if quick else 10.0
    entry = jittered(NIGHTLY_REPORT, window=window) if protected else dict(NIGHTLY_REPORT)
    options = dict(entry.get("options") or {})
    etas: dict[str, str | None] = {}

    def seen(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if headers:
            etas[str(headers.get("id"))] = headers.get("eta")

    after_task_publish.connect(seen, weak=False)
    barrier = threading.Barrier(servers)
    lock = threading.Lock()
    running = [0, 0]  # now, most
    starts: list[float] = []

    def server(_: int) -> None:
        barrier.wait()
        planned = datetime.now().astimezone()
        message = nightly_report.apply_async(
            kwargs={"planned_for": planned.isoformat()}, queue="drill-cron", **options
        )
        eta = etas.get(message.id)
        start = datetime.fromisoformat(eta) if eta else planned
        time.sleep(max(0.0, (start - datetime.now().astimezone()).total_seconds()))
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
            starts.append(time.monotonic())
        try:
            nightly_report.run(planned_for=planned.isoformat())
        finally:
            with lock:
                running[0] -= 1

    _threads(servers, server)
    return {"most_at_once": running[1], "spread": max(starts) - min(starts)}


# Scaling effects -------------------------------------------------------------------------------


def scaling(protected: bool, quick: bool) -> dict[str, float]:
    """Per-request cost with 10, 1000 and 10,000 policies; what a burst of clients leaves.

    With protection: ``StabilityMiddleware`` (an index finds a request's
    policies) and the store's GCRA keys, which expire when their bucket is
    full again. Without: a hand-written middleware that tries each rule's
    pattern in turn (the usual first version) deciding through the same
    store, and django-ratelimit's fixed-window counters, kept for the window.
    """
    import redis
    from django.conf import settings
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory

    from django_stability.middleware import StabilityMiddleware
    from django_stability.policies import registry
    from django_stability.ratelimit import RateLimitSpec, check

    factory = RequestFactory()
    rounds = 300 if quick else 1500

    shop_policies = registry.code_defaults()

    def per_request(policies: int) -> float:
        names = [f"drill-area-{i}" for i in range(policies)]
        registry.restore_code_defaults(shop_policies)  # exactly these policies, no more
        for name in names:
            registry.register(
                RateLimitSpec(name=name, path_prefixes=(f"/{name}/",), rate="100000/s")
            )
        if protected:
            middleware: Callable[[HttpRequest], Any] = StabilityMiddleware(
                lambda request: HttpResponse()
            )
        else:
            rules = [(re.compile(rf"^/{re.escape(name)}/"), name) for name in names]

            def middleware(request: HttpRequest) -> Any:
                for pattern, name in rules:
                    if pattern.match(request.path):
                        if not check(name, request.META["REMOTE_ADDR"]).allowed:
                            return HttpResponse(status=429)
                        break
                return HttpResponse()

        requests = [factory.get(f"/{names[(i * 7919) % policies]}/page") for i in range(rounds)]
        for request in requests[:50]:
            middleware(request)  # warm: indexes, connections
        samples = []
        for request in requests:
            started = time.perf_counter()
            middleware(request)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples) * 1e6

    per_request(10)  # warm: imports, connections, the first decisions
    # Alternated and repeated; the least disturbed median of each (the machine is shared).
    medians: dict[int, list[float]] = {10: [], 1000: [], 10_000: []}
    for _ in range(3):
        for count in medians:
            medians[count].append(per_request(count))
    us_10, us_1000, us_10000 = (min(medians[count]) for count in medians)
    registry.restore_code_defaults(shop_policies)

    clients = 5_000 if quick else 100_000
    server = redis.Redis.from_url(settings.REDIS_URL)

    def memory() -> tuple[int, int]:
        # SCAN touches every key, so that keys already past their TTL are
        # reclaimed (Redis expires keys lazily) and neither counted nor weighed.
        keys = sum(1 for _ in server.scan_iter(count=1000))
        return int(server.info("memory")["used_memory"]), keys

    base_memory, base_keys = memory()
    if protected:
        registry.register(RateLimitSpec(name="drill-clients", rate="100/m"))

        def decide(i: int) -> None:
            check("drill-clients", f"client-{i}")

    else:
        from django_ratelimit.core import is_ratelimited

        request = factory.get("/")

        def decide(i: int) -> None:
            is_ratelimited(
                request, group="drill-clients", key=lambda group, request: f"client-{i}",
                rate="100/m", increment=True,
            )  # fmt: skip

    workers = 4

    def share_of(worker: int) -> None:
        for i in range(worker, clients, workers):
            decide(i)

    started = time.perf_counter()
    _threads(workers, share_of)
    per_decision = (time.perf_counter() - started) / clients * 1e6
    peak_memory, peak_keys = memory()
    # Longer than a GCRA key lives after one request (0.6 s at 100/m), shorter
    # than a fixed window (60 s).
    time.sleep(1.5 if quick else 3.0)
    left_memory, left_keys = memory()
    return {
        "us_10": us_10,
        "us_1000": us_1000,
        "us_10000": us_10000,
        "growth": us_1000 / us_10,
        "clients": clients,
        "keys_peak": peak_keys - base_keys,
        "keys_left": max(0, left_keys - base_keys),
        "mb_peak": max(0, peak_memory - base_memory) / 2**20,
        "mb_left": max(0, left_memory - base_memory) / 2**20,
        "us_per_decision": per_decision,
    }


SCENARIOS: dict[str, Callable[[bool, bool], dict[str, float]]] = {
    "stampede": stampede,
    "cron": cron,
    "scaling": scaling,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("protection", choices=("on", "off"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    django.setup()
    result = SCENARIOS[args.scenario](args.protection == "on", args.quick)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
