"""Helpers shared by the tests of the Stability page, the status, the events and the metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from django_stability import events, history, metrics
from django_stability.reporter import DIRECTORY_KEY, report_key, reporter
from django_stability.store import get_store


@pytest.fixture
def fresh_counts() -> Iterator[None]:
    """No count, log subject or history of an earlier test in this process."""
    events.reset()
    metrics.reset()
    reporter.reset()
    history.reader.forget()
    yield
    reporter.stop()


def publish_as(process: str, report: dict[str, Any], lifetime: float = 30.0) -> None:
    """Put ``report`` in the store as another process would (its report and directory entry)."""
    store = get_store()
    report = {**report, "id": process, "at": time.time()}
    store.set(report_key(process), json.dumps(report), lifetime)
    raw = store.get(DIRECTORY_KEY)
    entries = json.loads(raw) if raw else {}
    entries[process] = time.time() + lifetime
    store.set(DIRECTORY_KEY, json.dumps(entries), lifetime * 2)


def other_process(**sections: Any) -> dict[str, Any]:
    """A plausible report of another process, with ``sections`` replacing the defaults."""
    report: dict[str, Any] = {
        "host": "web-2",
        "pid": 4242,
        "started": time.time() - 60,
        "store": {"kind": "redis", "state": "closed"},
        "breakers": {},
        "bulkheads": {},
        "admission": {
            "in_flight": 0,
            "by_class": {"critical": 0, "high": 0, "default": 0, "sheddable": 0},
            "limit": None,
            "shedding": {"critical": False, "high": False, "default": False, "sheddable": False},
            "shed_total": {"critical": 0, "high": 0, "default": 0, "sheddable": 0},
            "browned_out": False,
        },
        "cache": {"counters": {}, "servers": {}},
        "counts": [],
    }
    report.update(sections)
    return report
