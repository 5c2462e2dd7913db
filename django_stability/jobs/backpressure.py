"""Backpressure: refuse new jobs while their queue is too deep.

The depth of a queue is what the broker holds (``broker.queue_depth``) plus
the jobs this app sent with a countdown that have not started yet: a worker
takes those off the broker's list at once and keeps them in memory until
their time, so the broker no longer counts them, but they are work waiting
all the same. They are kept in a lease set in the store (one member per job,
expiring by itself shortly after the job's start time, removed when it starts).

Each process probes a queue at most every ``JOBS_DEPTH_CACHE`` seconds and
adds the jobs it sent itself since; between probes a refusal costs nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..conf import settings
from ..store import get_store
from . import broker

#: How long after its planned start a scheduled job still counts as waiting,
#: should its worker never report that it started.
SCHEDULED_GRACE = 60.0
#: A lease limit no queue reaches: the scheduled set counts, it never refuses.
_UNBOUNDED = 2**31 - 1


def scheduled_key(queue: str) -> str:
    """The store key of the set of jobs sent to ``queue`` with a countdown, not started yet."""
    return f"jobs:scheduled:{queue}"


def note_scheduled(queue: str, job_id: str, countdown: float) -> None:
    """Count a job sent with a countdown as waiting until it starts (or long after its time)."""
    get_store().acquire_lease(scheduled_key(queue), job_id, _UNBOUNDED, countdown + SCHEDULED_GRACE)


def note_started(queue: str, job_id: str) -> None:
    """The job started: it no longer waits."""
    get_store().release_lease(scheduled_key(queue), job_id)


def over_capacity(depth: int, maximum: int | None) -> bool:
    """True when one more job would make the queue deeper than ``maximum`` allows."""
    return maximum is not None and depth >= maximum


@dataclass
class _Reading:
    taken_at: float
    depth: int | None
    error: str = ""
    sent_since: int = 0


class QueueGauge:
    """Queue depths as this process last saw them, probed at most every ``JOBS_DEPTH_CACHE`` s."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # Keyed by the app object itself: reading its broker URL from Celery's
        # configuration costs more than the rest of a cached answer.
        self._readings: dict[tuple[int, str], _Reading] = {}
        self._lock = threading.Lock()

    def depth(self, app: Any, queue: str) -> int:
        """Messages waiting in ``queue`` plus jobs scheduled on it; raises ``BrokerUnreachable``.

        An unreachable broker is remembered for the same time as a depth, so
        that a broker outage costs one probe timeout per second, not one per
        request.
        """
        key = (id(app), queue)
        reading = self._readings.get(key)
        now = self.clock()
        if reading is None or now - reading.taken_at >= settings.JOBS_DEPTH_CACHE:
            reading = self._probe(app, queue, now)
            self._readings[key] = reading
        if reading.depth is None:
            raise broker.BrokerUnreachable(reading.error)
        return reading.depth + reading.sent_since

    def _probe(self, app: Any, queue: str, now: float) -> _Reading:
        try:
            waiting = broker.queue_depth(app, queue)
        except broker.BrokerUnreachable as exc:
            return _Reading(now, None, str(exc))
        scheduled = get_store().count_leases(scheduled_key(queue))
        return _Reading(now, waiting + scheduled)

    def note_sent(self, app: Any, queue: str) -> None:
        """This process sent a job to ``queue``: count it until the next probe."""
        reading = self._readings.get((id(app), queue))
        if reading is not None:
            with self._lock:
                reading.sent_since += 1

    def reset(self) -> None:
        """Forget every reading (the next call probes)."""
        self._readings = {}


#: The gauge of this process.
gauge = QueueGauge()
