"""Timing a call in tests: what it gave (or raised) and how long it took."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """``call()``'s result and the seconds it took."""
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def timed_outcome(call: Callable[[], Any]) -> tuple[Any, float]:
    """Like ``timed``, but an exception raised by ``call`` is returned as its result."""
    start = time.monotonic()
    try:
        return call(), time.monotonic() - start
    except BaseException as error:
        return error, time.monotonic() - start
