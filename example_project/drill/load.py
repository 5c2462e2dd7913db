"""Bounded load on a loopback server: clients that wait for answers, floods that do not.

Every request has a client timeout; every generator stops at its deadline and
runs at most a fixed number of threads, so a drill can neither run forever nor
exhaust the machine. Clients can speak from their own loopback address
(127.0.0.0/8 is all loopback on Linux), so that the shop sees ten users as ten
addresses without trusting any forwarding header.
"""

from __future__ import annotations

import http.client
import itertools
import math
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

#: The CSRF secret every drill client presents (cookie and form field alike).
CSRF = "drill0csrf0token0drill0csrf0toke"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Outcome:
    """One request: its label, status (0: no answer in time or no connection), seconds taken."""

    label: str
    status: int
    seconds: float
    started: float
    state: str = ""


def get(path: str) -> Request:
    return Request("GET", path)


def checkout(slug: str, email: str = "drill@example.com") -> Request:
    """A checkout POST as a browser sends it (CSRF cookie and token)."""
    body = urlencode({"email": email, "quantity": 1, "csrfmiddlewaretoken": CSRF}).encode()
    return Request(
        "POST",
        f"/checkout/{slug}/",
        body,
        (
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", f"csrftoken={CSRF}"),
        ),
    )


def fetch(port: int, request: Request, *, source: str, timeout: float, label: str) -> Outcome:
    """Send one request from ``source`` and read the whole answer, within ``timeout`` seconds."""
    started = time.monotonic()
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0)
    )
    try:
        headers = {"Connection": "close", "Host": "127.0.0.1", **dict(request.headers)}
        connection.request(request.method, request.path, body=request.body or None, headers=headers)
        response = connection.getresponse()
        response.read()
        state = response.getheader("X-Order-State") or ""
        status = response.status
    except (OSError, http.client.HTTPException):
        # A timeout, a refused or reset connection: no answer.
        status, state = 0, ""
    finally:
        connection.close()
    elapsed = time.monotonic() - started
    if elapsed > timeout:
        status = 0  # an answer later than the client's patience is no answer
    return Outcome(label, status, elapsed, started, state)


@dataclass
class Recorder:
    """Outcomes of every generator of a run, thread-safe."""

    outcomes: list[Outcome] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def drop(self, label: str) -> None:
        with self.lock:
            self.dropped[label] = self.dropped.get(label, 0) + 1

    def of(self, label: str) -> list[Outcome]:
        with self.lock:
            return [o for o in self.outcomes if o.label == label]


def closed_loop(
    recorder: Recorder,
    label: str,
    port: int,
    requests: Sequence[Request],
    *,
    sources: Sequence[str],
    timeout: float,
    think: float,
    until: float,
) -> list[threading.Thread]:
    """One thread per source: send, wait for the answer (or the timeout), think, again.

    Each client starts at a random point of its first think time and thinks
    between half and one and a half times ``think``: people do not click in step.
    """

    def client(index: int, source: str) -> None:
        cycle = itertools.cycle(requests[index % len(requests) :] or requests)
        pace = random.Random(index)
        time.sleep(pace.uniform(0, think))
        while time.monotonic() < until:
            recorder.add(fetch(port, next(cycle), source=source, timeout=timeout, label=label))
            if think:
                time.sleep(pace.uniform(0.5, 1.5) * think)

    threads = [
        threading.Thread(target=client, args=(i, source), daemon=True, name=f"drill-{label}-{i}")
        for i, source in enumerate(sources)
    ]
    for thread in threads:
        thread.start()
    return threads


def open_loop(
    recorder: Recorder,
    label: str,
    port: int,
    requests: Sequence[Request],
    *,
    rate: float,
    sources: Sequence[str],
    pool: int,
    timeout: float,
    until: float,
) -> list[threading.Thread]:
    """Arrivals at ``rate`` a second whatever the answers, from at most ``pool`` threads.

    An arrival that finds every thread waiting is dropped (counted): the flood
    is bounded, the server sees at most ``pool`` of its requests at once.
    """
    free = threading.Semaphore(pool)
    arrivals: list[int] = []
    ready = threading.Condition()

    def worker() -> None:
        while True:
            with ready:
                while not arrivals:
                    if time.monotonic() >= until:
                        return
                    ready.wait(0.05)
                n = arrivals.pop()
            try:
                request = requests[n % len(requests)]
                source = sources[n % len(sources)]
                recorder.add(fetch(port, request, source=source, timeout=timeout, label=label))
            finally:
                free.release()

    def dispatcher() -> None:
        start = time.monotonic()
        for n in itertools.count():
            at = start + n / rate
            if at >= until:
                break
            time.sleep(max(0.0, at - time.monotonic()))
            if not free.acquire(blocking=False):
                recorder.drop(label)
                continue
            with ready:
                arrivals.append(n)
                ready.notify()

    threads = [
        threading.Thread(target=worker, daemon=True, name=f"drill-{label}-w{i}")
        for i in range(pool)
    ]
    threads.append(threading.Thread(target=dispatcher, daemon=True, name=f"drill-{label}-d"))
    for thread in threads:
        thread.start()
    return threads


def join(threads: Sequence[threading.Thread], until: float) -> None:
    """Wait for the generators, never past ``until`` (their requests time out by themselves)."""
    for thread in threads:
        thread.join(timeout=max(0.0, until - time.monotonic()))


def sources(first: str, count: int) -> list[str]:
    """``count`` loopback addresses from ``first`` (e.g. 127.0.1.1, 127.0.1.2, ...)."""
    base = int.from_bytes(socket.inet_aton(first), "big")
    return [socket.inet_ntoa((base + i).to_bytes(4, "big")) for i in range(count)]


def share(outcomes: Sequence[Outcome], ok: Callable[[Outcome], bool]) -> float:
    """The share of ``outcomes`` that are ``ok`` (0 when there are none)."""
    return sum(1 for o in outcomes if ok(o)) / len(outcomes) if outcomes else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]
