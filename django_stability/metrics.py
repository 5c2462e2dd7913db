"""Prometheus metrics of every protection, through ``prometheus_client`` (the ``prometheus`` extra).

Names follow Prometheus conventions: the ``django_stability_`` prefix, base
units (seconds), ``_total`` on counters. Three sources:

* counters of events (refusals, sheds, transitions, jobs): each process counts
  in its ``tally`` at no I/O cost, and hands the increments to
  ``prometheus_client`` from its reporter thread (every
  ``DASHBOARD_REPORT_INTERVAL`` seconds, and before each scrape it answers);
* gauges of each process (requests in flight, slots in use, breaker states),
  set by the same thread; under several processes they are summed
  (``livesum``: e.g. ``django_stability_breaker_state{state="open"}`` is the
  number of processes whose breaker is open);
* gauges of the whole site (queue depths, jobs queued and running, the store's
  round trip, cluster breakers, concurrency leases), read when scraped.

Under gunicorn or any server with several worker processes, set the
environment variable ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before
the server starts (``prometheus_client``'s multiprocess mode), and add
``child_exit = django_stability.metrics.child_exit`` to the gunicorn config, so
that any worker answering a scrape reports the sum of all of them.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from .tally import COUNTERS, Key, deltas, tally

#: Counters of the tally, as Prometheus names them (``_total`` is added on exposition).
COUNTER_NAMES: dict[str, tuple[str, str]] = {
    "requests": ("django_stability_requests", "Requests the process started to serve."),
    "ratelimit_decisions": (
        "django_stability_rate_limit_decisions",
        "Rate-limit decisions, by policy.",
    ),
    "ratelimit_refusals": (
        "django_stability_rate_limit_refusals",
        "Calls a rate limit refused (shadow: would have refused), by policy.",
    ),
    "requests_shed": (
        "django_stability_requests_shed",
        "Requests refused to shed load (shadow: would have been), by reason and class.",
    ),
    "breaker_transitions": (
        "django_stability_breaker_transitions",
        "Circuit-breaker transitions made by this process, by breaker and new state.",
    ),
    "bulkhead_refusals": (
        "django_stability_bulkhead_refusals",
        "Calls a full bulkhead refused, by bulkhead.",
    ),
    "cache_transitions": (
        "django_stability_cache_breaker_transitions",
        "Transitions of a protected cache server's breaker, by cache and new state.",
    ),
    "store_transitions": (
        "django_stability_store_breaker_transitions",
        "Transitions of the shared store's breaker (open: on the local fallback), by new state.",
    ),
    "jobs_finished": (
        "django_stability_jobs_finished",
        "Background jobs that ended, by job name and end state.",
    ),
    "jobs_refused": (
        "django_stability_jobs_refused",
        "Background jobs refused before anything was enqueued, by job name and reason.",
    ),
    "policy_reloads": (
        "django_stability_policy_reloads",
        "Policy snapshots loaded from the database.",
    ),
    "operator_actions": (
        "django_stability_operator_actions",
        "Actions taken on the Stability page, by target and action.",
    ),
}


@functools.cache
def available() -> bool:
    """True when ``prometheus_client`` can be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def enabled() -> bool:
    """Whether metrics are on: ``METRICS_ENABLED``, or (None) whether the client is installed."""
    from .conf import settings

    wanted = settings.METRICS_ENABLED
    return available() if wanted is None else bool(wanted) and available()


def multiprocess_dir() -> str | None:
    """The directory of ``prometheus_client``'s multiprocess mode, or None when not in use."""
    # The lower-case spelling is the one older prometheus_client versions read.
    legacy = os.environ.get("prometheus_multiproc_dir")  # noqa: SIM112
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or legacy


class _Instruments:
    """The metric objects, made once per process on first use."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        self.counters = {
            name: Counter(metric, doc, labelnames=COUNTERS[name])
            for name, (metric, doc) in COUNTER_NAMES.items()
        }
        self.cache_events = Counter(
            "django_stability_cache_events",
            "What the protected cache did (hits, stale, waits, recomputes, errors, degraded), "
            "by policy.",
            labelnames=("policy", "event"),
        )
        livesum: dict[str, Any] = {"multiprocess_mode": "livesum"}
        self.in_flight = Gauge(
            "django_stability_in_flight_requests",
            "Requests in flight, by priority class (summed over processes).",
            labelnames=("priority",),
            **livesum,
        )
        self.in_flight_limit = Gauge(
            "django_stability_in_flight_limit",
            "The in-flight limit (summed over processes; 0 when none is set).",
            **livesum,
        )
        self.shedding = Gauge(
            "django_stability_shedding",
            "Processes shedding the priority class now.",
            labelnames=("priority",),
            **livesum,
        )
        self.browned_out = Gauge(
            "django_stability_browned_out",
            "Processes that turn brownout features off now (they shed load lately).",
            **livesum,
        )
        self.breaker_state = Gauge(
            "django_stability_breaker_state",
            "Processes whose circuit breaker is in the state (closed, open, half_open, "
            "forced_open, disabled).",
            labelnames=("breaker", "state"),
            **livesum,
        )
        self.bulkhead_in_use = Gauge(
            "django_stability_bulkhead_in_use",
            "Bulkhead slots in use (summed over processes).",
            labelnames=("bulkhead",),
            **livesum,
        )
        self.bulkhead_waiting = Gauge(
            "django_stability_bulkhead_waiting",
            "Calls waiting for a bulkhead slot (summed over processes).",
            labelnames=("bulkhead",),
            **livesum,
        )
        self.store_on_fallback = Gauge(
            "django_stability_store_on_fallback",
            "Processes answering from the local store because Redis is unreachable.",
            **livesum,
        )


_instruments: _Instruments | None = None
_lock = threading.Lock()
_mirrored: dict[Key, int] = {}
_cache_mirrored: dict[tuple[str, str], int] = {}

BREAKER_STATES = ("closed", "open", "half_open", "forced_open", "disabled")


def instruments() -> _Instruments:
    global _instruments
    if _instruments is None:
        with _lock:
            if _instruments is None:
                _instruments = _Instruments()
    return _instruments


def _cache_counts() -> dict[tuple[str, str], int]:
    from .cache import counters

    return {
        (policy, event): value
        for policy, events in counters.snapshot().items()
        for event, value in events.items()
    }


def mirror_counts() -> None:
    """Hand this process's counts since the last call to ``prometheus_client``."""
    if not enabled():
        return
    found = instruments()
    with _lock:
        now_counts = tally.snapshot()
        now_cache = _cache_counts()
        for key, gained in deltas(_mirrored, now_counts).items():
            counter = found.counters.get(key[0])
            if counter is not None and gained > 0:
                labels = key[1:]
                (counter.labels(*labels) if labels else counter).inc(gained)
        for (policy, event), value in now_cache.items():
            gained = value - _cache_mirrored.get((policy, event), 0)
            if gained > 0:
                found.cache_events.labels(policy, event).inc(gained)
        _mirrored.clear()
        _mirrored.update(now_counts)
        _cache_mirrored.clear()
        _cache_mirrored.update(now_cache)


def sample_process(report: Mapping[str, Any]) -> None:
    """Set this process's gauges from its report (``status.process_report()``)."""
    found = instruments()
    admission = report.get("admission") or {}
    for priority, count in (admission.get("by_class") or {}).items():
        found.in_flight.labels(priority).set(count)
    for priority, flag in (admission.get("shedding") or {}).items():
        found.shedding.labels(priority).set(1 if flag else 0)
    found.in_flight_limit.set(admission.get("limit") or 0)
    found.browned_out.set(1 if admission.get("browned_out") else 0)
    for name, row in (report.get("breakers") or {}).items():
        for state in BREAKER_STATES:
            found.breaker_state.labels(name, state).set(1 if row.get("state") == state else 0)
    for name, row in (report.get("bulkheads") or {}).items():
        found.bulkhead_in_use.labels(name).set(row.get("in_use") or 0)
        found.bulkhead_waiting.labels(name).set(row.get("waiting") or 0)
    store = report.get("store") or {}
    found.store_on_fallback.set(1 if store.get("state") in ("open", "half_open") else 0)


def update_process(report: Mapping[str, Any] | None = None) -> None:
    """Counts and gauges of this process, up to date (the reporter calls it each round)."""
    if not enabled():
        return
    from .status import process_report

    mirror_counts()
    sample_process(process_report() if report is None else report)


class SiteCollector:
    """Gauges of the whole site, read from ``status.collect()`` when scraped."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from .status import collect

        status = collect(sections=("processes", "store", "breakers", "concurrency", "jobs"))
        processes = status.get("processes") or []
        yield GaugeMetricFamily(
            "django_stability_processes_reporting",
            "Processes whose report is in the store now.",
            value=len(processes),
        )
        store = status.get("store") or {}
        yield GaugeMetricFamily(
            "django_stability_store_up",
            "1 when the shared store's Redis answered the scraped process (0 on the fallback).",
            value=1 if store.get("round_trip_ms") is not None else 0,
        )
        if store.get("round_trip_ms") is not None:
            yield GaugeMetricFamily(
                "django_stability_store_round_trip_seconds",
                "One round trip to the shared store's Redis, timed at the scrape.",
                value=float(store["round_trip_ms"]) / 1000,
            )
        cluster = GaugeMetricFamily(
            "django_stability_breaker_cluster_state",
            "The shared verdict of each cluster-scope breaker (1 for its state).",
            labels=("breaker", "state"),
        )
        for row in status.get("breakers") or []:
            if row.get("shared") is not None:
                for state in ("closed", "open", "half_open"):
                    cluster.add_metric((row["name"], state), 1 if row["shared"] == state else 0)
        yield cluster
        holders = GaugeMetricFamily(
            "django_stability_concurrency_holders",
            "Slots held under a cluster-wide concurrency limit (admitted, for waiting rooms).",
            labels=("policy",),
        )
        waiting = GaugeMetricFamily(
            "django_stability_waiting_room_waiting",
            "Visitors waiting in line in a waiting room.",
            labels=("policy",),
        )
        for row in status.get("concurrency") or []:
            if row.get("holders") is not None:
                holders.add_metric((row["name"],), row["holders"])
            if row.get("waiting") is not None:
                waiting.add_metric((row["name"],), row["waiting"])
        yield holders
        yield waiting
        jobs = status.get("jobs") or {}
        depth = GaugeMetricFamily(
            "django_stability_job_queue_depth",
            "Messages waiting in a job queue, with jobs waiting out their jittered start.",
            labels=("queue",),
        )
        for row in jobs.get("queues") or []:
            if row.get("name") and row.get("depth") is not None:
                depth.add_metric((row["name"],), row["depth"])
        yield depth
        active = GaugeMetricFamily(
            "django_stability_jobs_active",
            "Background jobs queued or running now, by job name and state.",
            labels=("job", "state"),
        )
        for row in jobs.get("by_name") or []:
            for state in ("queued", "running"):
                active.add_metric((row["name"], state), row.get(state, 0))
        yield active


class _Forward:
    """The collectors of the default registry (single-process mode)."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        return iter(self.registry.collect())


def exposition() -> tuple[bytes, str]:
    """The metrics page: every process's metrics (multiprocess mode) and the site's gauges."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    update_process()
    registry = CollectorRegistry()
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(SiteCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def child_exit(server: Any, worker: Any) -> None:
    """A gunicorn ``child_exit`` hook: drop the gauges of a worker that exited."""
    if multiprocess_dir() and available():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def reset() -> None:
    """Forget what was handed over (tests): the next mirror starts from the tally as it is."""
    with _lock:
        _mirrored.clear()
        _mirrored.update(tally.snapshot())
        _cache_mirrored.clear()
        _cache_mirrored.update(_cache_counts())


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    _mirrored.clear()
    _cache_mirrored.clear()


os.register_at_fork(after_in_child=_after_fork)
