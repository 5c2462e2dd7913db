"""What each web process is doing, written where the drill can read it.

A request thread stuck on a hung dependency cannot answer a stats request: its
process is busy. So each process keeps its in-flight requests in memory and a
thread of its own writes them, ten times a second, to
``SHOP_STATS_DIR/<pid>.json``: how many are in flight, how many have been for
more than a second ("stuck"), and the most stuck at once so far. Installed
only when ``SHOP_STATS_DIR`` is set (the drill sets it).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

#: A request in flight longer than this counts as stuck.
STUCK_AFTER = 1.0
WRITE_EVERY = 0.1


class InFlight:
    """The requests of this process in flight, by start time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: dict[int, float] = {}
        self.ids = itertools.count()
        self.most_stuck = 0
        self.most_in_flight = 0
        self.served = 0
        self.writer: threading.Thread | None = None

    def enter(self) -> int:
        token = next(self.ids)
        with self.lock:
            self.started[token] = time.monotonic()
            self.most_in_flight = max(self.most_in_flight, len(self.started))
        return token

    def leave(self, token: int) -> None:
        with self.lock:
            self.started.pop(token, None)
            self.served += 1

    def snapshot(self) -> dict[str, float | int]:
        now = time.monotonic()
        with self.lock:
            ages = [now - start for start in self.started.values()]
            stuck = sum(1 for age in ages if age > STUCK_AFTER)
            self.most_stuck = max(self.most_stuck, stuck)
            return {
                "pid": os.getpid(),
                "in_flight": len(ages),
                "stuck": stuck,
                "oldest": max(ages, default=0.0),
                "most_stuck": self.most_stuck,
                "most_in_flight": self.most_in_flight,
                "served": self.served,
            }

    def start_writer(self, directory: Path) -> None:
        with self.lock:
            if self.writer is not None and self.writer.is_alive():
                return
            self.writer = threading.Thread(
                target=self._write, args=(directory,), name="shop-inflight", daemon=True
            )
            self.writer.start()

    def _write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{os.getpid()}.json"
        scratch = directory / f".{os.getpid()}.tmp"
        while True:
            scratch.write_text(json.dumps(self.snapshot()))
            scratch.replace(target)  # readers never see half a file
            time.sleep(WRITE_EVERY)


in_flight = InFlight()


class InFlightMiddleware:
    """Counts every request of this process from the moment a thread takes it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.directory = Path(settings.SHOP_STATS_DIR)

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        # Started lazily: gunicorn forks its workers after the application is loaded.
        in_flight.start_writer(self.directory)
        token = in_flight.enter()
        try:
            return self.get_response(request)
        finally:
            in_flight.leave(token)
