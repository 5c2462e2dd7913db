"""Per-minute counters of the whole site, kept in the store for the charts of the last minutes.

Each process adds what it counted to one counter per series and minute
(``store.incr``, from the reporter thread, never on a request), so the
counters hold the sum of every process. Every counter expires a few minutes
after it leaves the charts' window: the store holds at most
``len(SERIES) * (DASHBOARD_HISTORY_MINUTES + a few)`` of them.

Reading a window costs one ``get`` per series and minute the first time; a
minute that has closed (and whose late reports are in) never changes again,
so each process keeps it and reads only the last minutes after that.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from .tally import Key

#: The series the charts draw, in the order they are drawn.
SERIES = (
    "requests",
    "rate_limited",
    "shed",
    "breaker_opened",
    "bulkhead_full",
    "cache_hits",
    "cache_stale",
    "cache_recomputes",
    "cache_errors",
    "jobs_succeeded",
    "jobs_failed",
    "jobs_refused",
)

#: The charts of the page: a title and the series drawn together.
CHARTS = (
    ("Requests and refusals", ("requests", "rate_limited", "shed")),
    ("Integration points", ("breaker_opened", "bulkhead_full")),
    ("Cache", ("cache_hits", "cache_stale", "cache_recomputes", "cache_errors")),
    ("Background jobs", ("jobs_succeeded", "jobs_failed", "jobs_refused")),
)

#: Minutes a counter outlives the window (late readers, clock skew between hosts).
SPARE_MINUTES = 3
#: Seconds after its end before a minute counts as closed: reports of other
#: processes may still arrive until their next report (at most their interval later).
SETTLE_SECONDS = 30.0
#: Closed minutes each process keeps, at most (several windows' worth).
KEPT_MINUTES = 4 * 24 * 60


def minute_of(wall: float) -> int:
    """The minute ``wall`` (seconds since the epoch) falls in, as the epoch second it starts at."""
    return int(wall // 60) * 60


def key(series: str, minute: int) -> str:
    return f"history:{series}:{minute}"


def series_of(counter: Key) -> str | None:
    """The series a tally counter feeds, or None (most labels are summed away)."""
    name = counter[0]
    if name == "requests":
        return "requests"
    if name == "ratelimit_refusals" and counter[2] == "false":
        return "rate_limited"
    if name == "requests_shed" and counter[3] == "false":
        return "shed"
    if name == "breaker_transitions" and counter[2] == "open" and counter[3] == "false":
        return "breaker_opened"
    if name == "bulkhead_refusals" and counter[2] == "false":
        return "bulkhead_full"
    if name == "jobs_finished" and counter[2] in ("succeeded", "failed"):
        return f"jobs_{counter[2]}"
    if name == "jobs_refused":
        return "jobs_refused"
    return None


#: Cache counter events that have a series.
CACHE_SERIES = {
    "hits": "cache_hits",
    "stale": "cache_stale",
    "recomputes": "cache_recomputes",
    "errors": "cache_errors",
}


def series_deltas(
    tally_deltas: Mapping[Key, int], cache_deltas: Mapping[str, int]
) -> dict[str, int]:
    """What each series gained, from the tally's and the cache counters' gains."""
    gained: dict[str, int] = {}
    for counter, amount in tally_deltas.items():
        series = series_of(counter)
        if series is not None:
            gained[series] = gained.get(series, 0) + amount
    for event, amount in cache_deltas.items():
        series = CACHE_SERIES.get(event)
        if series is not None and amount:
            gained[series] = gained.get(series, 0) + amount
    return {name: amount for name, amount in gained.items() if amount > 0}


def record(
    gained: Mapping[str, int], *, now: float | None = None, minutes: int | None = None
) -> None:
    """Add ``gained`` to this minute's counters in the store (an ``incr`` per series that moved)."""
    from .conf import settings
    from .store import get_store

    if not gained:
        return
    wall = time.time() if now is None else now
    window = settings.DASHBOARD_HISTORY_MINUTES if minutes is None else minutes
    ttl = (window + SPARE_MINUTES) * 60.0
    store = get_store()
    minute = minute_of(wall)
    for series, amount in gained.items():
        store.incr(key(series, minute), amount, ttl)


class HistoryReader:
    """Reads windows of the series, keeping closed minutes. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._closed: OrderedDict[tuple[str, str, int], int] = OrderedDict()

    def window(
        self, minutes: int | None = None, series: tuple[str, ...] = SERIES
    ) -> dict[str, object]:
        """The last ``minutes`` minutes, the current one last.

        ``{"minutes": [start, ...], "series": {name: [count, ...]}}``.
        """
        from .conf import settings
        from .store import get_store

        count = settings.DASHBOARD_HISTORY_MINUTES if minutes is None else minutes
        now = self.clock()
        current = minute_of(now)
        starts = [current - 60 * (count - 1 - i) for i in range(count)]
        store = get_store()
        # Late reports may arrive until every process has reported once more.
        settle = max(SETTLE_SECONDS, 2 * (settings.DASHBOARD_REPORT_INTERVAL or 0.0))
        # Zeros read from the fallback while Redis is away are not the minute's counts.
        keep = not getattr(store, "degraded", False)
        # Kept per store prefix: tests and several sites may share a process.
        prefix = str(getattr(getattr(store, "primary", store), "prefix", "")) or str(id(store))
        values: dict[str, list[int]] = {}
        for name in series:
            row = []
            for start in starts:
                memo = (prefix, name, start)
                with self._lock:
                    known = self._closed.get(memo)
                if known is None:
                    raw = store.get(key(name, start))
                    try:
                        known = int(raw) if raw is not None else 0
                    except ValueError:
                        known = 0
                    if keep and now >= start + 60 + settle:
                        with self._lock:
                            self._closed[memo] = known
                            while len(self._closed) > KEPT_MINUTES * len(SERIES):
                                self._closed.popitem(last=False)
                row.append(known)
            values[name] = row
        return {"minutes": starts, "series": values}

    def forget(self) -> None:
        with self._lock:
            self._closed.clear()


#: The reader of this process.
reader = HistoryReader()
