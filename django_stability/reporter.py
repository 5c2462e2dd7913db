"""Every process tells the store what it sees, so that any process can show the whole site.

Each process (a gunicorn worker, a uvicorn worker, a Celery worker) keeps its
own live state: the requests it has in flight, its breakers' windows, its
bulkhead slots, what it counted. Every ``DASHBOARD_REPORT_INTERVAL`` seconds a
thread of the process (started by its first request or job) writes that state
to the store as one JSON report that expires after three intervals, and lists
itself in a directory of reporting processes; the Stability page, the JSON
status and ``manage.py stability_status`` read every live report, whichever
process serves them. The same thread adds the process's counts to the
per-minute history, hands them to the Prometheus metrics, and writes the counts
of log lines the event log held back.

Nothing here runs on a request: a request only checks that the thread is
alive. While Redis is unreachable the reports go to the process's local
store, and each process shows only itself.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from .tally import Key, deltas, tally

logger = logging.getLogger("django_stability.reporter")

DIRECTORY_KEY = "reports:directory"
#: A report lives this many intervals without being rewritten.
LIFETIME_INTERVALS = 3
#: Attempts at updating the directory when other processes update it at the same time.
DIRECTORY_ATTEMPTS = 5


def report_key(process: str) -> str:
    return f"reports:process:{process}"


class Identity:
    """Who this process is, in the reports: host, pid and a random part (pids are reused)."""

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:6]}"
        self.started = time.time()


identity = Identity()


def encode_counts(counts: Mapping[Key, int]) -> list[list[Any]]:
    """The tally as JSON: ``[[name, label, ...], value]`` pairs."""
    return [[list(counter), value] for counter, value in counts.items()]


def decode_counts(raw: Any) -> dict[Key, int]:
    found: dict[Key, int] = {}
    for item in raw or ():
        try:
            counter, value = item
            found[tuple(str(part) for part in counter)] = int(value)
        except (TypeError, ValueError):
            continue
    return found


def live_directory(raw: str | None, now: float) -> dict[str, float]:
    """The directory's entries that have not expired (a bad value reads as empty)."""
    try:
        entries = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    if not isinstance(entries, dict):
        return {}
    return {
        str(process): float(until)
        for process, until in entries.items()
        if isinstance(until, (int, float)) and until > now
    }


class Reporter:
    """The reporting thread of this process, and the readers of every process's reports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._listed_until = 0.0
        self._history_base: dict[Key, int] = {}
        self._cache_base: dict[str, int] = {}
        self._history_lock = threading.Lock()
        self._failing = False

    # The thread -------------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start the reporting thread unless it runs (or reports are off). Cheap when it runs."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        from .conf import settings

        if settings.DASHBOARD_REPORT_INTERVAL is None:
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, name="django-stability-reporter", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread (tests)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        from .conf import settings

        stop = self._stop
        while not stop.is_set():
            self.tick()
            interval = settings.DASHBOARD_REPORT_INTERVAL
            if interval is None:
                return
            stop.wait(interval)

    def tick(self) -> None:
        """One round: publish the report, record the history, feed the metrics, flush the log."""
        from . import metrics
        from .eventlog import events_log
        from .status import process_report

        try:
            report = process_report()
            self.publish(report)
            self.flush_history()
            metrics.update_process(report)
            events_log.flush()
        except Exception as exc:  # the next round tries again
            if not self._failing:
                logger.warning("Reporting this process's state failed (%s); retrying.", exc)
            self._failing = True
        else:
            self._failing = False
        finally:
            if threading.current_thread() is self._thread:
                # A policy reload on this thread opened a connection; do not keep it
                # between rounds (nor leave it open when the thread ends).
                from django.db import connections

                connections.close_all()

    # Writing ----------------------------------------------------------------------------

    def publish(self, report: dict[str, Any] | None = None) -> None:
        """Write this process's report, and list the process in the directory when due."""
        from .conf import settings
        from .status import process_report
        from .store import get_store

        interval = settings.DASHBOARD_REPORT_INTERVAL or 5.0
        lifetime = interval * LIFETIME_INTERVALS
        report = process_report() if report is None else report
        store = get_store()
        store.set(report_key(identity.id), json.dumps(report, separators=(",", ":")), lifetime)
        now = time.time()
        if now + interval * 1.5 >= self._listed_until:
            self._list(store, now, lifetime)

    def _list(self, store: Any, now: float, lifetime: float) -> None:
        until = now + lifetime
        for _ in range(DIRECTORY_ATTEMPTS):
            raw = store.get(DIRECTORY_KEY)
            entries = live_directory(raw, now)
            entries[identity.id] = until
            new = json.dumps(entries, separators=(",", ":"))
            if store.compare_and_set(DIRECTORY_KEY, raw, new, lifetime * 2):
                self._listed_until = until
                return
        logger.debug(
            "The reports directory changed under us %d times; next round.", DIRECTORY_ATTEMPTS
        )

    def flush_history(self) -> None:
        """Add what this process counted since the last flush to the per-minute history."""
        from . import history
        from .cache import counters as cache_counters

        with self._history_lock:
            now_counts = tally.snapshot()
            cache_now = _cache_totals(cache_counters.snapshot())
            gained = history.series_deltas(
                deltas(self._history_base, now_counts),
                {
                    event: value - self._cache_base.get(event, 0)
                    for event, value in cache_now.items()
                },
            )
            self._history_base, self._cache_base = now_counts, cache_now
            history.record(gained)

    # Reading ----------------------------------------------------------------------------

    def reports(self, *, include_self: bool = True) -> list[dict[str, Any]]:
        """The live report of every process, this one's made now (unless left out)."""
        from .status import process_report
        from .store import get_store

        store = get_store()
        now = time.time()
        found: list[dict[str, Any]] = []
        if include_self:
            found.append(process_report())
        for process in sorted(live_directory(store.get(DIRECTORY_KEY), now)):
            if process == identity.id:
                continue
            raw = store.get(report_key(process))
            if raw is None:
                continue
            try:
                report = json.loads(raw)
            except ValueError:
                continue
            if isinstance(report, dict):
                found.append(report)
        return found

    # Lifecycle --------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget what was flushed (tests; a forked child)."""
        with self._history_lock:
            self._history_base = {}
            self._cache_base = {}
        self._listed_until = 0.0

    def after_fork(self) -> None:
        # The thread did not survive the fork, and its locks may have been held.
        self._lock = threading.Lock()
        self._history_lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()
        self.reset()


def _cache_totals(snapshot: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for events in snapshot.values():
        for event, value in events.items():
            totals[event] = totals.get(event, 0) + value
    return totals


#: The reporter of this process.
reporter = Reporter()


def _after_fork() -> None:
    identity.renew()
    reporter.after_fork()


os.register_at_fork(after_in_child=_after_fork)
