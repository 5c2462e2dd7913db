"""The cache's background work in each process: heartbeats, refreshes, counter flushes.

One daemon thread renews the leases of the computes running in this process
(every third of a lease) and flushes the counters. Background refreshes run
in a small bounded pool: when it is busy, a refresh is not queued, the stale
value keeps being served and a later caller tries again. After a fork, the
child starts its own thread and pool on first use.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..conf import settings
from .counters import counters

logger = logging.getLogger("django_stability.cache")


@dataclass
class Lease:
    """A lock this process holds while its compute runs."""

    renew: Callable[[], bool]
    interval: float
    due: float
    lost: bool = False
    ident: int = field(default=0)


class Maintenance:
    """The heartbeat thread and the refresh pool of this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._cond = threading.Condition()
        self._leases: dict[int, Lease] = {}
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots: threading.BoundedSemaphore | None = None
        self._pid = os.getpid()
        self._next_flush = 0.0

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self.__init__(self.clock)  # type: ignore[misc]

    def _ensure_thread(self) -> None:
        self._check_fork()
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="stability-cache-heartbeat", daemon=True
                )
                self._thread.start()

    def started(self) -> None:
        """Make sure the thread runs (counters are flushed even when nothing computes)."""
        if self._thread is None or self._pid != os.getpid():
            self._ensure_thread()

    def hold(self, renew: Callable[[], bool], lease: float) -> Lease:
        """Renew a lease every third of ``lease`` seconds until ``drop``."""
        self._ensure_thread()
        interval = lease / 3.0
        held = Lease(renew, interval, self.clock() + interval, ident=next(self._ids))
        with self._cond:
            self._leases[held.ident] = held
            self._cond.notify()
        return held

    def drop(self, held: Lease) -> None:
        with self._cond:
            self._leases.pop(held.ident, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = self.clock()
                flush_every = settings.CACHE_COUNTERS_FLUSH
                if self._next_flush == 0.0:
                    self._next_flush = now + flush_every
                next_due = min([lease.due for lease in self._leases.values()], default=now + 1.0)
                timeout = max(0.0, min(next_due, self._next_flush) - now)
                if timeout > 0:
                    self._cond.wait(timeout)
                now = self.clock()
                due = [lease for lease in self._leases.values() if lease.due <= now]
                for lease in due:
                    lease.due = now + lease.interval
                flush = now >= self._next_flush
                if flush:
                    self._next_flush = now + flush_every
            for lease in due:
                try:
                    kept = lease.renew()
                except Exception:  # a heartbeat must never kill the thread
                    logger.exception("renewing a cache lease failed")
                    kept = True  # try again at the next beat
                if not kept:
                    lease.lost = True
                    self.drop(lease)
            if flush:
                try:
                    counters.flush()
                except Exception:  # counters are best effort
                    logger.exception("flushing cache counters failed")

    def submit(self, work: Callable[[], None]) -> bool:
        """Run ``work`` in the refresh pool; False (and nothing run) when the pool is busy."""
        self._check_fork()
        if self._pool is None:
            with self._cond:
                if self._pool is None:
                    workers = settings.CACHE_REFRESH_THREADS
                    self._slots = threading.BoundedSemaphore(workers)
                    self._pool = ThreadPoolExecutor(workers, thread_name_prefix="stability-refresh")
        assert self._slots is not None and self._pool is not None
        if not self._slots.acquire(blocking=False):
            return False
        slots = self._slots

        def run() -> None:
            try:
                work()
            except Exception:  # logged; the caller already has its answer
                logger.exception("background cache refresh failed")
            finally:
                slots.release()
                from django.db import connections

                connections.close_all()

        self._pool.submit(run)
        return True


maintenance = Maintenance()
