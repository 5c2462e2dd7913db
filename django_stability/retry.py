"""Retries that do not make an outage worse: capped backoff with full jitter, and a budget.

Three rules keep retries from multiplying the load on a dependency that is
already failing:

* the wait before retry ``n`` (0-based) is drawn uniformly from
  ``[0, min(backoff_max, backoff * 2**n)]`` ("full jitter"), so clients that
  failed together do not come back together; a ``Retry-After`` the dependency
  sent is honoured as a lower bound (and a retry is not made at all when it
  asks for more than the caller is willing to wait);
* a retry budget: over a sliding window of 10 seconds, retries may be at most
  ``ratio`` of the calls (plus ``minimum`` per window, so a quiet dependency
  can still be retried). When a dependency fails every call, it receives at
  most ``1 + ratio`` times the calls it would receive without retries, instead
  of ``1 + retries`` times;
* the guard retries only calls marked idempotent, and never a refusal of its
  own (an open breaker, a full bulkhead).

The budget is per process and per guard name.
"""

from __future__ import annotations

import email.utils
import math
import os
import random as _random
import threading
import time
from collections.abc import Callable
from datetime import timezone
from typing import Any

from .windows import FAILED, TimeWindow

#: The span of the budget's sliding window, in seconds.
BUDGET_WINDOW = 10


def backoff_delay(
    attempt: int,
    base: float,
    cap: float,
    random: Callable[[], float] = _random.random,
) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): full jitter over a capped exponential."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 62))
    return random() * ceiling


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """An HTTP ``Retry-After`` (seconds or an HTTP date) in seconds from now, or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def retry_after_of(outcome: Any) -> float | None:
    """How long ``outcome`` (an exception or a response) asks the caller to wait, if it says.

    Understands exceptions with a ``retry_after`` attribute (this package's),
    exceptions carrying a ``response`` (requests' ``HTTPError``, httpx's
    ``HTTPStatusError``), and responses with a ``Retry-After`` header.
    """
    value = getattr(outcome, "retry_after", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    response = getattr(outcome, "response", None) if isinstance(outcome, BaseException) else outcome
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        header = headers.get("Retry-After")
    except Exception:
        return None
    return parse_retry_after(header if isinstance(header, str) else None)


class RetryBudget:
    """Retries allowed: at most ``ratio`` of the calls of the last 10 s, plus ``minimum``.

    ``ratio`` and ``minimum`` are given at each decision, so a policy change
    applies at once. Thread-safe; no I/O.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        # "calls" counts first attempts and retries; retries are flagged FAILED.
        self._window = TimeWindow(BUDGET_WINDOW)
        self.refused = 0

    def record_call(self) -> None:
        """A call made its first attempt."""
        with self._lock:
            self._window.add(0, self.clock())

    def try_spend(self, ratio: float, minimum: int) -> bool:
        """Take one retry from the budget, if there is one left."""
        with self._lock:
            now = self.clock()
            window = self._window
            window.expire(now)
            retries = window.failed
            calls = window.calls - retries
            if retries + 1 > ratio * calls + minimum:
                self.refused += 1
                return False
            window.add(FAILED, now)
            return True

    def usage(self) -> tuple[int, int]:
        """(first attempts, retries) in the current window."""
        with self._lock:
            self._window.expire(self.clock())
            return self._window.calls - self._window.failed, self._window.failed


_budgets: dict[str, RetryBudget] = {}
_budgets_lock = threading.Lock()


def get_budget(name: str) -> RetryBudget:
    """The retry budget of the guard ``name`` in this process."""
    budget = _budgets.get(name)
    if budget is None:
        with _budgets_lock:
            budget = _budgets.setdefault(name, RetryBudget())
    return budget


def forget_budgets() -> None:
    """Start every budget afresh (settings changed; a forked child)."""
    with _budgets_lock:
        for name in list(_budgets):
            _budgets[name] = RetryBudget()


def _after_fork() -> None:
    global _budgets_lock
    _budgets_lock = threading.Lock()
    _budgets.clear()


os.register_at_fork(after_in_child=_after_fork)
