"""An adaptive concurrency limit, learned from latency (in the style of Netflix's Gradient2).

A fixed in-flight limit has to be guessed; when a dependency slows, the right
limit falls with it. The gradient compares the latency of recent requests with
a long-run average: while recent requests are no slower than ``tolerance``
times the long run, the limit grows by a small headroom (the square root of
the limit); when they are slower, it shrinks in proportion, by at most half
per window. Changes are smoothed, and the limit stays between ``min_limit``
and ``max_limit``.

This is a pure calculation over the samples it is given: the admission
controller feeds it the latency of each finished request and reads ``limit``.
It is not thread-safe on its own; the controller calls it under its lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class ExpAverage:
    """An exponential moving average over about ``window`` values, plain mean while warming up."""

    window: int
    warmup: int = 10
    value: float = 0.0
    count: int = 0

    def add(self, sample: float) -> float:
        if self.count < self.warmup:
            self.count += 1
            self.value += (sample - self.value) / self.count
        else:
            factor = 2.0 / (self.window + 1)
            self.value = self.value * (1 - factor) + sample * factor
        return self.value


@dataclass
class Gradient2Limit:
    """The concurrency limit of one process, adapted from the latency of finished requests."""

    initial: float = 20
    min_limit: float = 4
    max_limit: float = 200
    tolerance: float = 1.5
    smoothing: float = 0.2
    #: Latency samples averaged into one update (a window).
    window: int = 10
    #: Windows in the long-run average.
    long_window: int = 600
    limit: float = field(init=False)
    long_rtt: ExpAverage = field(init=False)
    _samples: list[float] = field(init=False, default_factory=list)
    _peak_in_flight: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not 0 < self.min_limit <= self.max_limit:
            raise ValueError("need 0 < min_limit <= max_limit")
        self.limit = float(min(self.max_limit, max(self.min_limit, self.initial)))
        self.long_rtt = ExpAverage(self.long_window)

    @property
    def current(self) -> int:
        """The limit to enforce now, a whole number of requests."""
        return max(1, int(self.limit))

    def sample(self, rtt: float, in_flight: int) -> None:
        """Record one finished request: its latency and the requests in flight when it started."""
        if rtt <= 0 or not math.isfinite(rtt):
            return
        self._samples.append(rtt)
        self._peak_in_flight = max(self._peak_in_flight, in_flight)
        if len(self._samples) >= self.window:
            short = sum(self._samples) / len(self._samples)
            peak = self._peak_in_flight
            self._samples.clear()
            self._peak_in_flight = 0
            self.update(short, peak)

    def update(self, short_rtt: float, in_flight: int) -> float:
        """One step of the gradient from a window's mean latency; returns the new limit."""
        long_rtt = self.long_rtt.add(short_rtt)
        # After a long spell of high latency the long average lags behind a
        # recovery; pull it down faster so the limit can grow back.
        if long_rtt / short_rtt > 2:
            self.long_rtt.value *= 0.95
        # A process using less than half its limit learns nothing about it.
        if in_flight < self.limit / 2:
            return self.limit
        gradient = max(0.5, min(1.0, self.tolerance * long_rtt / short_rtt))
        target = self.limit * gradient + math.sqrt(self.limit)
        smoothed = self.limit * (1 - self.smoothing) + target * self.smoothing
        self.limit = max(self.min_limit, min(self.max_limit, smoothed))
        return self.limit
