"""The live state of every protection, as plain data: one model for every way of looking.

The Stability page, the JSON status, ``manage.py stability_status`` and the
Prometheus metrics all read ``collect()``; none computes a state of its own.

Two layers:

* ``process_report()``: what this process alone knows (the requests it has in
  flight, its breakers' windows, its bulkhead slots, its cache counters, its
  counts). The reporter thread of each process writes it to the store.
* ``collect()``: the whole site. It merges the live reports of every process
  (``reporter.reports()``) and adds what is shared already: the store's
  verdicts of cluster breakers, the keys limited now, leases, the job table and
  the broker's queues, the per-minute history. One provider per part builds its
  section; a provider that fails leaves an ``error`` in its section and the
  rest of the page stands.

Every value is a number, a string, a boolean, None, or a list or dict of them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from .tally import Key

logger = logging.getLogger("django_stability.status")

#: Limited keys shown per rate-limit policy (those with the longest wait first).
LIMITED_SHOWN = 5
#: Limited keys read per policy to find them.
LIMITED_READ = 100
#: The window of the finished-job counts, in minutes.
JOBS_WINDOW_MINUTES = 60
#: The breaker states from the most to the least alarming (a summary shows the first found).
STATE_ORDER = ("forced_open", "open", "half_open", "closed", "disabled")
Report = Mapping[str, Any]


# This process --------------------------------------------------------------------------


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def process_report() -> dict[str, Any]:
    """What this process knows now, as plain data (what its reporter writes to the store)."""
    from .breaker import breakers
    from .brownout import browned_out
    from .bulkhead import bulkheads
    from .cache import counters as cache_counters
    from .events import cache_states
    from .reporter import encode_counts, identity
    from .shedding import controller
    from .store import FailsafeStore, get_store
    from .tally import tally

    store = get_store()
    if isinstance(store, FailsafeStore):
        store_state = {"kind": "redis", "state": store.breaker.state}
    else:
        store_state = {"kind": store.kind, "state": "local"}
    breaker_rows = {}
    for name, breaker in sorted(breakers().items()):
        found = breaker.metrics()
        breaker_rows[name] = {
            "state": found.state,
            "mode": found.mode,
            "scope": found.scope,
            "failure_rate": _round(found.failure_rate),
            "slow_call_rate": _round(found.slow_call_rate),
            "calls": found.calls,
            "failed_calls": found.failed_calls,
            "slow_calls": found.slow_calls,
            "time_left_open": _round(found.time_left_open),
            "opens": found.opens,
        }
    bulkhead_rows = {}
    for name, bulkhead in sorted(bulkheads().items()):
        slots = bulkhead.metrics()
        bulkhead_rows[name] = {
            "mode": slots.mode,
            "scope": slots.scope,
            "limit": slots.limit,
            "in_use": slots.in_use,
            "waiting": slots.waiting,
            "refused": slots.refused,
        }
    now = time.time()
    return {
        "id": identity.id,
        "host": identity.host,
        "pid": identity.pid,
        "started": round(identity.started, 3),
        "at": round(now, 3),
        "store": store_state,
        "breakers": breaker_rows,
        "bulkheads": bulkhead_rows,
        "admission": {**controller.snapshot(), "browned_out": browned_out()},
        "cache": {"counters": cache_counters.snapshot(), "servers": cache_states()},
        "counts": encode_counts(tally.snapshot()),
    }


# Merging the processes' reports --------------------------------------------------------


def merged_counts(reports: Iterable[Report]) -> Counter[Key]:
    """The counts of every process, summed."""
    from .reporter import decode_counts

    total: Counter[Key] = Counter()
    for report in reports:
        total.update(decode_counts(report.get("counts")))
    return total


def _section(report: Report, name: str) -> Mapping[str, Any]:
    value = report.get(name)
    return value if isinstance(value, Mapping) else {}


def processes_status(reports: list[Report]) -> list[dict[str, Any]]:
    """One row per reporting process: who, since when, how loaded, on which store."""
    now = time.time()
    rows = []
    for report in reports:
        admission = _section(report, "admission")
        rows.append(
            {
                "id": report.get("id"),
                "host": report.get("host"),
                "pid": report.get("pid"),
                "uptime": _round(now - float(report.get("started") or now), 0),
                "report_age": _round(max(0.0, now - float(report.get("at") or now)), 1),
                "in_flight": admission.get("in_flight", 0),
                "limit": admission.get("limit"),
                "browned_out": bool(admission.get("browned_out")),
                "store": _section(report, "store").get("state"),
            }
        )
    return rows


def store_status(reports: list[Report]) -> dict[str, Any]:
    """Redis or the local store, its breaker, and one round trip timed now."""
    from .store import FailsafeStore, get_store

    store = get_store()
    states = Counter(
        str(_section(r, "store").get("state")) for r in reports if _section(r, "store")
    )
    row: dict[str, Any] = {
        "kind": "local",
        "shared": False,
        "state": "local",
        "time_left_open": None,
        "round_trip_ms": None,
        "error": None,
        "processes": dict(states),
        "processes_on_fallback": sum(n for s, n in states.items() if s in ("open", "half_open")),
    }
    if isinstance(store, FailsafeStore):
        row.update(kind="redis", shared=True, state=store.breaker.state)
        if store.breaker.state == "open":
            row["time_left_open"] = _round(store.breaker.time_left_open(), 1)
        else:
            try:
                row["round_trip_ms"] = _round(store.ping() * 1000, 3)
            except Exception as exc:  # the page shows why, and stands
                row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def _overall(mode: str, states: Counter[str], shared: str | None) -> str:
    if mode == "forced_open":
        return "forced_open"
    if mode == "disabled":
        return "disabled"
    if shared is not None:
        return shared
    for state in STATE_ORDER:
        if states.get(state):
            return state
    return "closed"


def breakers_status(reports: list[Report]) -> list[dict[str, Any]]:
    """Every circuit breaker: its state across processes, rates over their windows, time left."""
    from .breaker import BreakerSpec, get_breaker
    from .policies import registry

    per_name: dict[str, list[Mapping[str, Any]]] = {}
    for report in reports:
        for name, row in _section(report, "breakers").items():
            per_name.setdefault(name, []).append(row)
    names = sorted({spec.name for spec in registry.all(BreakerSpec)} | set(per_name))
    rows = []
    now = time.time()
    for name in names:
        spec = registry.get(BreakerSpec, name) or BreakerSpec(name=name)
        seen = per_name.get(name, [])
        states = Counter(str(row.get("state")) for row in seen)
        calls = sum(int(row.get("calls") or 0) for row in seen)
        failed = sum(int(row.get("failed_calls") or 0) for row in seen)
        slow = sum(int(row.get("slow_calls") or 0) for row in seen)
        lefts = [float(row["time_left_open"]) for row in seen if row.get("time_left_open")]
        shared = None
        if spec.scope == "cluster" and spec.mode not in ("disabled", "forced_open"):
            verdict = get_breaker(name).shared_verdict()
            shared = "closed" if verdict is None else verdict.state
            if verdict is not None and verdict.state == "open":
                lefts = [max(0.0, verdict.since_wall + verdict.wait - now)]
        rows.append(
            {
                "name": name,
                "state": _overall(spec.mode, states, shared),
                "mode": spec.mode,
                "scope": spec.scope,
                "failure_rate": _round(100.0 * failed / calls if calls else 0.0, 1),
                "slow_call_rate": _round(100.0 * slow / calls if calls else 0.0, 1),
                "calls": calls,
                "failed_calls": failed,
                "slow_calls": slow,
                "time_left_open": _round(max(lefts), 1) if lefts else None,
                "shared": shared,
                "processes": dict(states),
            }
        )
    return rows


def ratelimits_status(reports: list[Report]) -> list[dict[str, Any]]:
    """Every rate-limit policy: decisions and refusals of the live processes, keys limited now."""
    from .policies import registry
    from .ratelimit import RateLimitSpec, limited_now

    counts = merged_counts(reports)
    counted = {key[1] for key in counts if key[0] in ("ratelimit_decisions", "ratelimit_refusals")}
    names = sorted({spec.name for spec in registry.all(RateLimitSpec)} | counted)
    rows = []
    for name in names:
        spec = registry.get(RateLimitSpec, name)
        limited = sorted(limited_now(name, LIMITED_READ), key=lambda item: -item[1])
        rows.append(
            {
                "name": name,
                "rate": spec.rate if spec is not None else None,
                "key": spec.key if spec is not None else None,
                "mode": spec.mode if spec is not None else None,
                "decisions": counts.get(("ratelimit_decisions", name), 0),
                "refusals": counts.get(("ratelimit_refusals", name, "false"), 0),
                "shadow_refusals": counts.get(("ratelimit_refusals", name, "true"), 0),
                "limited_count": len(limited),
                "limited": [
                    {"key": key, "retry_in": _round(left, 1)}
                    for key, left in limited[:LIMITED_SHOWN]
                ],
            }
        )
    return rows


def shedding_status(reports: list[Report]) -> dict[str, Any]:
    """Admission across processes: in flight per class, who sheds, what was shed and why."""
    from .conf import settings
    from .policies import registry
    from .shedding import PRIORITIES, AdmissionSpec

    in_flight = dict.fromkeys(PRIORITIES, 0)
    shed = dict.fromkeys(PRIORITIES, 0)
    shedding = dict.fromkeys(PRIORITIES, 0)
    limits: list[int | None] = []
    browned = 0
    for report in reports:
        admission = _section(report, "admission")
        if not admission:
            continue
        for name in PRIORITIES:
            in_flight[name] += int(_section(admission, "by_class").get(name) or 0)
            shed[name] += int(_section(admission, "shed_total").get(name) or 0)
            shedding[name] += 1 if _section(admission, "shedding").get(name) else 0
        limits.append(admission.get("limit"))
        browned += 1 if admission.get("browned_out") else 0
    by_reason: Counter[str] = Counter()
    shadow = 0
    for key, value in merged_counts(reports).items():
        if key[0] == "requests_shed":
            if key[3] == "true":
                shadow += value
            else:
                by_reason[key[1]] += value
    return {
        "mode": settings.SHEDDING_MODE,
        "in_flight": in_flight,
        "in_flight_total": sum(in_flight.values()),
        "limit_total": None if not limits or None in limits else sum(int(n or 0) for n in limits),
        "processes_shedding": shedding,
        "shed": shed,
        "shed_by_reason": dict(by_reason),
        "shadow_shed": shadow,
        "browned_out_processes": browned,
        "processes": len(reports),
        "policies": len(registry.all(AdmissionSpec)),
    }


def features_status(reports: list[Report]) -> list[dict[str, Any]]:
    """Feature switches: on or off, and in how many processes brownout turns them off now."""
    from .brownout import FeatureSpec
    from .policies import registry

    browned = sum(1 for r in reports if _section(r, "admission").get("browned_out"))
    rows = []
    for spec in sorted(registry.all(FeatureSpec), key=lambda s: s.name):
        off_in = len(reports) if not spec.enabled else browned if spec.brownout else 0
        rows.append(
            {
                "name": spec.name,
                "enabled": spec.enabled,
                "brownout": spec.brownout,
                "off_in_processes": off_in,
                "state": "off" if not spec.enabled else "browned_out" if off_in else "on",
            }
        )
    return rows


def concurrency_status(reports: list[Report]) -> list[dict[str, Any]]:
    """Cluster-wide concurrency limits and waiting rooms: who holds a slot, who waits."""
    from .concurrency import ConcurrencySpec, lease_key
    from .policies import registry
    from .store import get_store
    from .waiting_room import status as room_status

    rows = []
    for spec in sorted(registry.all(ConcurrencySpec), key=lambda s: s.name):
        row: dict[str, Any] = {
            "name": spec.name,
            "limit": spec.limit,
            "mode": spec.mode,
            "key": spec.key or None,
            "waiting_room": spec.waiting_room,
            "holders": None,
            "waiting": None,
        }
        if spec.waiting_room:
            room = room_status(spec)
            row.update(holders=room.active, waiting=room.waiting)
        elif not spec.key:
            row["holders"] = get_store().count_leases(lease_key(spec))
        rows.append(row)
    return rows


def bulkheads_status(reports: list[Report]) -> list[dict[str, Any]]:
    """Every bulkhead: slots in use and waiting across processes, refusals, cluster leases."""
    from .bulkhead import BulkheadSpec, get_bulkhead
    from .policies import registry
    from .store import get_store

    per_name: dict[str, list[Mapping[str, Any]]] = {}
    for report in reports:
        for name, row in _section(report, "bulkheads").items():
            per_name.setdefault(name, []).append(row)
    names = sorted({spec.name for spec in registry.all(BulkheadSpec)} | set(per_name))
    rows = []
    for name in names:
        spec = registry.get(BulkheadSpec, name) or BulkheadSpec(name=name)
        seen = per_name.get(name, [])
        cluster_in_use = None
        if spec.scope == "cluster" and spec.mode != "off":
            cluster_in_use = get_store().count_leases(get_bulkhead(name).key)
        rows.append(
            {
                "name": name,
                "mode": spec.mode,
                "scope": spec.scope,
                "limit": spec.max_concurrent,
                "in_use": sum(int(row.get("in_use") or 0) for row in seen),
                "waiting": sum(int(row.get("waiting") or 0) for row in seen),
                "refused": sum(int(row.get("refused") or 0) for row in seen),
                "cluster_in_use": cluster_in_use,
                "processes": len(seen),
            }
        )
    return rows


def cache_status(reports: list[Report]) -> dict[str, Any]:
    """The protected cache: what each policy counted in every process, each server's breaker."""
    from .cache import CacheSpec
    from .cache.counters import EVENTS
    from .policies import registry

    totals: dict[str, dict[str, int]] = {
        spec.name: dict.fromkeys(EVENTS, 0) for spec in registry.all(CacheSpec)
    }
    servers: dict[str, Counter[str]] = {}
    for report in reports:
        cache = _section(report, "cache")
        for policy, events in _section(cache, "counters").items():
            row = totals.setdefault(policy, dict.fromkeys(EVENTS, 0))
            for event in EVENTS:
                row[event] += int(events.get(event) or 0)
        for server, state in _section(cache, "servers").items():
            servers.setdefault(server, Counter())[str(state)] += 1
    return {
        "policies": [{"name": name, **row} for name, row in sorted(totals.items())],
        "servers": [
            {"name": name, "state": _overall("", states, None), "processes": dict(states)}
            for name, states in sorted(servers.items())
        ],
    }


def jobs_status(reports: list[Report]) -> dict[str, Any]:
    """Background jobs: queue depths, queued and running jobs, how the last hour's ended."""
    from django.db.models import Count

    from .jobs import JobSpec
    from .models import Job
    from .policies import registry

    since = datetime.now(timezone.utc) - timedelta(minutes=JOBS_WINDOW_MINUTES)
    names: dict[str, dict[str, int]] = {}

    def row(name: str) -> dict[str, int]:
        return names.setdefault(
            name, {"queued": 0, "running": 0, "succeeded": 0, "failed": 0, "refused": 0}
        )

    active = Job.objects.filter(state__in=Job.ACTIVE).values_list("name", "state")
    for name, state, count in active.annotate(count=Count("id")).order_by():
        row(name)[state] += count
    ended = Job.objects.filter(state__in=(Job.SUCCEEDED, Job.FAILED), finished_at__gte=since)
    for name, state, count in (
        ended.values_list("name", "state").annotate(count=Count("id")).order_by()
    ):
        row(name)[state] += count
    for key, value in merged_counts(reports).items():
        if key[0] == "jobs_refused":
            row(key[1])["refused"] += value
    specs = registry.all(JobSpec)
    return {
        "window_minutes": JOBS_WINDOW_MINUTES,
        "by_name": [{"name": name, **counts} for name, counts in sorted(names.items())],
        "queues": _queues(specs) if specs else [],
    }


def _queues(specs: Iterable[Any]) -> list[dict[str, Any]]:
    from .jobs import broker
    from .jobs.backpressure import gauge

    try:
        app = broker.celery_app()
        default = broker.default_queue(app)
    except Exception as exc:
        return [{"name": None, "depth": None, "error": f"No Celery app: {exc}"}]
    rows = []
    for queue in sorted({spec.queue or default for spec in specs}):
        try:
            rows.append({"name": queue, "depth": gauge.depth(app, queue), "error": None})
        except broker.BrokerUnreachable as exc:
            rows.append({"name": queue, "depth": None, "error": str(exc) or "broker unreachable"})
    return rows


def history_status(reports: list[Report]) -> dict[str, Any]:
    """The per-minute counters of the whole site for the charts."""
    from . import history

    window = history.reader.window()
    return {
        **window,
        "charts": [{"title": title, "series": list(series)} for title, series in history.CHARTS],
    }


#: The sections of the status, in the order they are shown, and who builds each.
PROVIDERS: tuple[tuple[str, Callable[[list[Report]], Any]], ...] = (
    ("processes", processes_status),
    ("store", store_status),
    ("breakers", breakers_status),
    ("ratelimits", ratelimits_status),
    ("shedding", shedding_status),
    ("features", features_status),
    ("concurrency", concurrency_status),
    ("bulkheads", bulkheads_status),
    ("cache", cache_status),
    ("jobs", jobs_status),
    ("history", history_status),
)


def collect(*, include_self: bool = True, sections: Iterable[str] | None = None) -> dict[str, Any]:
    """The state of every protection of the site, as plain data.

    ``include_self=False`` leaves out the process asking (a management command
    serves no request) unless no other process reports. ``sections`` narrows the
    result to some providers.
    """
    from .conf import settings
    from .reporter import identity, reporter

    try:
        reporter.flush_history()
    except Exception:  # the history of this process waits for the next round
        logger.debug("Flushing this process's history failed", exc_info=True)
    reports: list[Report]
    try:
        reports = list(reporter.reports(include_self=include_self))
        if not reports:
            reports = list(reporter.reports(include_self=True))
    except Exception:
        logger.warning("Reading the processes' reports failed", exc_info=True)
        reports = [process_report()]
    now = time.time()
    status: dict[str, Any] = {
        "version": 1,
        "generated_at": datetime.fromtimestamp(now, timezone.utc).isoformat(),
        "served_by": identity.id,
        "refresh": settings.DASHBOARD_REFRESH,
        "errors": {},
    }
    wanted = None if sections is None else set(sections)
    for name, provider in PROVIDERS:
        if wanted is not None and name not in wanted:
            continue
        try:
            status[name] = provider(reports)
        except Exception as exc:  # one failing part must not hide the others
            logger.warning("The %s section of the status failed", name, exc_info=True)
            status[name] = None
            status["errors"][name] = f"{type(exc).__name__}: {exc}"
    return status
