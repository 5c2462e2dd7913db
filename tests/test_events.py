"""Every event: a signal, a count, one structured log line (rate-limited), a per-minute series."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from django.http import HttpRequest

from django_stability import bulkhead, circuit_breaker, history, signals
from django_stability.eventlog import EventLog, logfmt
from django_stability.events import cache_states
from django_stability.exceptions import BulkheadFull
from django_stability.policies import registry
from django_stability.ratelimit import RateLimitSpec, check
from django_stability.reporter import reporter
from django_stability.store import get_store
from django_stability.tally import tally
from tests.operations import fresh_counts

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_counts")]

__all__ = ["fresh_counts"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: Any, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "stability_event", None) == event]


def test_logfmt_quotes_what_needs_quotes_and_drops_none() -> None:
    line = logfmt({"event": "x", "a": "plain", "b": "two words", "c": None, "d": True, "e": 0.25})
    assert line == 'event=x a=plain b="two words" d=true e=0.25'
    assert logfmt({"q": 'say "hi"', "empty": ""}) == 'q="say \\"hi\\"" empty=""'


def test_the_event_log_writes_one_line_per_subject_and_interval(caplog: Any) -> None:
    clock = Clock()
    log = EventLog(logging.getLogger("django_stability.events"), clock=clock)
    caplog.set_level(logging.INFO, logger="django_stability.events")
    for _ in range(5):
        log.emit("rate_limited", {"policy": "login"}, subject=("login",), interval=10)
    log.emit("rate_limited", {"policy": "search"}, subject=("search",), interval=10)
    written = lines(caplog, "rate_limited")
    assert [r.stability_fields["policy"] for r in written] == ["login", "search"]
    assert "suppressed" not in written[0].stability_fields
    clock.now += 11
    log.emit("rate_limited", {"policy": "login"}, subject=("login",), interval=10)
    latest = lines(caplog, "rate_limited")[-1]
    assert latest.stability_fields["suppressed"] == 4  # the four held back before it
    assert latest.getMessage() == "event=rate_limited policy=login suppressed=4"


def test_flush_writes_the_count_of_a_subject_that_went_quiet(caplog: Any) -> None:
    clock = Clock()
    log = EventLog(logging.getLogger("django_stability.events"), clock=clock)
    caplog.set_level(logging.INFO, logger="django_stability.events")
    for _ in range(3):
        log.emit("bulkhead_full", {"bulkhead": "reports"}, subject=("reports",), interval=10)
    assert log.flush() == 0  # not before the interval is over
    clock.now += 10
    assert log.flush() == 1
    summary = lines(caplog, "bulkhead_full")[-1]
    assert summary.stability_fields == {
        "event": "bulkhead_full",
        "bulkhead": "reports",
        "suppressed": 2,
        "summary": True,
    }
    assert log.flush() == 0


def test_the_event_log_forgets_the_oldest_subjects_past_its_bound() -> None:
    log = EventLog(clock=Clock(), max_subjects=3)
    for i in range(10):
        log.emit("x", {}, subject=(i,), interval=10)
    assert len(log._subjects) == 3


def test_a_rate_limit_refusal_is_counted_and_logged(caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="django_stability.events")
    registry.register(RateLimitSpec(name="login", rate="1/h"))
    check("login", "k")
    check("login", "k")
    check("login", "k")  # from the penalty box: still a decision, still a refusal
    assert tally.value(("ratelimit_decisions", "login")) == 3
    assert tally.value(("ratelimit_refusals", "login", "false")) == 2
    [line] = lines(caplog, "rate_limited")  # the second refusal is held back
    assert line.levelno == logging.INFO
    assert line.stability_fields["policy"] == "login"


def test_breaker_transitions_are_counted_once_and_an_opening_warns(caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="django_stability.events")
    breaker = circuit_breaker("payments", window_size=2, minimum_calls=2)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(lambda: (_ for _ in ()).throw(ConnectionError()))
    breaker.reset()
    assert tally.value(("breaker_transitions", "payments", "open", "false")) == 1
    assert tally.value(("breaker_transitions", "payments", "closed", "false")) == 1
    opened, closed = lines(caplog, "breaker_state_changed")
    assert opened.levelno == logging.WARNING and opened.stability_fields["state"] == "open"
    assert opened.stability_fields["failure_rate"] == 100.0
    assert closed.levelno == logging.INFO and closed.stability_fields["reason"] == "reset"


def test_a_full_bulkhead_is_counted_and_logged(caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="django_stability.events")
    slots = bulkhead("reports", max_concurrent=1, max_wait=0)
    held = slots.acquire()
    try:
        with pytest.raises(BulkheadFull):
            slots.acquire()
    finally:
        slots.release(held)
    assert tally.value(("bulkhead_refusals", "reports", "false")) == 1
    [line] = lines(caplog, "bulkhead_full")
    assert line.levelno == logging.WARNING and line.stability_fields["limit"] == 1


def test_shed_requests_and_state_changes_are_counted_and_logged(caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="django_stability.events")
    request = HttpRequest()
    request.method, request.path = "GET", "/search/"
    signals.request_shed.send(
        sender=HttpRequest,
        request=request,
        reason="capacity",
        priority="sheddable",
        policy="search",
        retry_after=2.0,
        shadow=False,
        in_flight=8,
    )
    signals.store_state_changed.send(
        sender=None, state="open", previous="closed", error=ConnectionError("refused")
    )
    signals.cache_state_changed.send(
        sender=None, cache="redis://c", state="open", previous="closed"
    )
    signals.job_refused.send(sender=None, name="export", reason="queue_full")
    assert tally.value(("requests_shed", "capacity", "sheddable", "false")) == 1
    assert tally.value(("store_transitions", "open")) == 1
    assert tally.value(("cache_transitions", "redis://c", "open")) == 1
    assert tally.value(("jobs_refused", "export", "queue_full")) == 1
    assert cache_states() == {"redis://c": "open"}
    [shed] = lines(caplog, "request_shed")
    assert shed.stability_fields["path"] == "/search/" and shed.stability_fields["in_flight"] == 8
    [store] = lines(caplog, "store_state_changed")
    assert store.stability_fields["error"] == "ConnectionError: refused"
    assert len(lines(caplog, "job_refused")) == 1


def test_a_receiver_never_breaks_the_part_that_sent_the_signal(caplog: Any) -> None:
    # A job that is not a Job row: the receiver copes, the sender sees no error.
    signals.job_finished.send(sender=None, job=object(), state="failed")
    assert tally.value(("jobs_finished", "", "failed")) == 1


def test_operator_actions_are_always_logged(caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="django_stability.events")
    for _ in range(3):
        signals.operator_acted.send(
            sender=None, user="ops", target="breaker", name="payments", action="reset", detail=""
        )
    assert len(lines(caplog, "operator_acted")) == 3
    assert tally.value(("operator_actions", "breaker", "reset")) == 3


def test_every_request_is_counted(client: Any) -> None:
    before = tally.value(("requests",))
    client.get("/hello/")
    client.get("/hello/")
    assert tally.value(("requests",)) == before + 2


# The per-minute history ---------------------------------------------------------------------


def test_counts_map_to_the_series_of_the_charts() -> None:
    gained = history.series_deltas(
        {
            ("requests",): 10,
            ("ratelimit_refusals", "login", "false"): 3,
            ("ratelimit_refusals", "login", "true"): 5,  # shadow: not a refusal
            ("requests_shed", "capacity", "default", "false"): 2,
            ("breaker_transitions", "payments", "open", "false"): 1,
            ("breaker_transitions", "payments", "closed", "false"): 1,
            ("jobs_finished", "export", "failed"): 1,
        },
        {"hits": 7, "stale": 0, "waits": 4},
    )
    assert gained == {
        "requests": 10,
        "rate_limited": 3,
        "shed": 2,
        "breaker_opened": 1,
        "jobs_failed": 1,
        "cache_hits": 7,
    }


def test_the_history_sums_every_process_and_expires(settings: Any, shared_redis: Any) -> None:
    settings.STABILITY = {**settings.STABILITY, "DASHBOARD_HISTORY_MINUTES": 5}
    now = time.time()
    history.record({"requests": 4, "shed": 1}, now=now)
    history.record({"requests": 6}, now=now)  # another process, the same minute
    history.record({"requests": 2}, now=now - 120)
    window = history.reader.window(5)
    assert len(window["minutes"]) == 5
    assert window["series"]["requests"][-1] == 10
    assert window["series"]["requests"][-3] == 2
    assert window["series"]["shed"][-1] == 1
    key = get_store().primary.key(history.key("requests", history.minute_of(now)))
    # Kept a few minutes past the window, never more.
    assert 0 < shared_redis.pttl(key) <= (5 + history.SPARE_MINUTES) * 60_000


def test_closed_minutes_are_read_once(settings: Any) -> None:
    reads: list[str] = []
    store = get_store()
    original = store.get

    def counting_get(key: str) -> str | None:
        reads.append(key)
        return original(key)

    store.get = counting_get  # type: ignore[method-assign]
    clock = Clock()
    clock.now = time.time()
    reader = history.HistoryReader(clock=clock)
    reader.window(10, series=("requests",))
    assert len(reads) == 10
    reads.clear()
    reader.window(10, series=("requests",))
    # Only the minutes that may still change are read again (the current one, the last).
    assert 1 <= len(reads) <= 2


def test_the_reporter_flushes_this_processs_counts_into_the_history(client: Any) -> None:
    client.get("/hello/")
    client.get("/hello/")
    reporter.flush_history()
    reporter.flush_history()  # nothing new: nothing added twice
    window = history.reader.window(2)
    assert window["series"]["requests"][-1] >= 2
    assert window["series"]["requests"][-1] == tally.value(("requests",))
