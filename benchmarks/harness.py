"""Timing helpers shared by the benchmarks: medians over many runs, in one process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(call: Callable[[], object], *, rounds: int = 2000, warmup: int = 200) -> float:
    """Median wall time of one ``call()`` over ``rounds`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def per_call_seconds(call: Callable[[], object], *, number: int = 200_000) -> float:
    """Mean time of a very cheap ``call()``, timed in one block (for sub-microsecond costs)."""
    for _ in range(min(number, 10_000)):
        call()
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


def line(name: str, value: str) -> None:
    print(f"  {name:<58} {value}", flush=True)
