"""Circuit breakers, on resilience4j's model.

A breaker watches the outcomes of the calls to one dependency over a sliding
window (the last N calls, or the calls of the last N seconds). Once the window
holds ``minimum_calls`` and the share of failed calls reaches
``failure_rate_threshold``, or the share of slow calls (slower than
``slow_call_duration``) reaches ``slow_call_rate_threshold``, it opens: calls
are refused at once with ``BreakerOpen`` for ``wait_in_open`` seconds (growing
by ``wait_multiplier`` each time it re-opens without having closed). Then it
half-opens: exactly ``half_open_calls`` calls go through as probes; when all
have ended it closes, or opens again if they failed as often as before. A
half-open state that lasts longer than ``half_open_max_wait`` opens again.

Three rules keep it honest under concurrency: no lock is held while the
protected call runs; a call's outcome is counted only in the state it started
in (a call that started before the breaker opened does not count after it);
and in the closed state a successful call costs no lock at all (it bumps a
counter that is folded into the window when the window is next read).

Scopes. ``process``: the state lives in this process, no I/O. ``cluster``: the
verdict (closed, open, half-open) is shared through the store: each process
reads it at most every ``BREAKER_CLUSTER_REFRESH`` seconds, writes it only on
transitions, and takes half-open probes as leases in the store, so that exactly
``half_open_calls`` probes run across all processes. Failure rates are
measured in each process. While the store cannot be reached, a cluster breaker
decides from this process alone.

Operator modes (``mode``): ``automatic``; ``disabled`` (every call passes,
nothing is measured); ``metrics_only`` (a dark launch: measures and reports
the transitions it would make, lets every call through); ``forced_open``
(every call is refused).

The rules live in ``BreakerMachine``, a plain object moved by the time given to
each method; ``CircuitBreaker`` adds the lock, the clock, the store and the
signals around it.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import itertools
import logging
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, ParamSpec, TypeVar, cast

from django.core.exceptions import ValidationError
from django.utils.module_loading import import_string

from . import signals
from .callables import is_async, refused_in_task, reject_celery_task
from .conf import settings, settings_reset
from .exceptions import REFUSALS, BreakerOpen, StabilityError
from .policies import PolicySpec, parse_float, parse_int, registry, spec_field
from .windows import FAILED, SLOW, CountWindow, TimeWindow, Window, rate

logger = logging.getLogger("django_stability.breaker")

P = ParamSpec("P")
R = TypeVar("R")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
AUTOMATIC, DISABLED, METRICS_ONLY, FORCED_OPEN = (
    "automatic",
    "disabled",
    "metrics_only",
    "forced_open",
)
PROCESS, CLUSTER = "process", "cluster"

#: How the breaker counts the end of a call.
SUCCESS, FAILURE, IGNORED = "success", "failure", "ignored"


def _threshold(raw: Any) -> float:
    value = parse_float(raw)
    if not 0 < value <= 100:
        raise ValueError(f"Expected a percentage above 0 and at most 100; got {raw!r}.")
    return value


def _positive_float(raw: Any) -> float:
    value = parse_float(raw)
    if value <= 0:
        raise ValueError(f"Expected a number of seconds above 0; got {raw!r}.")
    return value


def _dotted_names(raw: Any) -> tuple[str, ...]:
    from .policies import parse_str_tuple

    names = parse_str_tuple(raw)
    bad = [name for name in names if "." not in name or " " in name]
    if bad:
        raise ValueError(
            "Expected dotted paths of exception classes, one per line, e.g. "
            f"requests.ConnectionError; got {', '.join(bad)}."
        )
    return names


@registry.register_kind
@dataclass(frozen=True)
class BreakerSpec(PolicySpec):
    """A circuit breaker: when to stop calling a dependency, and when to try again."""

    kind = "breaker"
    verbose_name = "circuit breaker"
    admin_class = "django_stability.integration_admin.BreakerAdmin"

    mode: str = spec_field(
        AUTOMATIC,
        choices=(AUTOMATIC, DISABLED, METRICS_ONLY, FORCED_OPEN),
        help="automatic opens and closes by itself; disabled lets every call through and "
        "measures nothing; metrics_only measures and reports what it would do but lets every "
        "call through; forced_open refuses every call.",
    )
    scope: str = spec_field(
        PROCESS,
        choices=(PROCESS, CLUSTER),
        help="process: state in this process only, no I/O; cluster: the open/closed verdict "
        "and the half-open probes are shared by every process through the store.",
    )
    window_type: str = spec_field(
        "count",
        choices=("count", "time"),
        help="count: rates over the last window_size calls; time: over the calls of the "
        "last window_size seconds.",
    )
    window_size: int = spec_field(
        100,
        help="Calls (count window) or seconds (time window) the rates are measured over.",
        parse=lambda raw: parse_int(raw, minimum=1),
        format="a whole number of at least 1",
    )
    minimum_calls: int = spec_field(
        20,
        help="Calls the window must hold before the rates can open the breaker.",
        parse=lambda raw: parse_int(raw, minimum=1),
        format="a whole number of at least 1",
    )
    failure_rate_threshold: float = spec_field(
        50.0,
        help="Percentage of failed calls at which the breaker opens.",
        parse=_threshold,
        format="a percentage above 0 and at most 100, e.g. 50",
    )
    slow_call_rate_threshold: float = spec_field(
        100.0,
        help="Percentage of slow calls at which the breaker opens.",
        parse=_threshold,
        format="a percentage above 0 and at most 100, e.g. 80",
    )
    slow_call_duration: float = spec_field(
        5.0,
        help="Seconds after which a call counts as slow (whether it succeeds or not).",
        parse=_positive_float,
        format="seconds above 0, e.g. 2.5",
    )
    wait_in_open: float = spec_field(
        30.0,
        help="Seconds the breaker stays open before letting probes through.",
        parse=_positive_float,
        format="seconds above 0, e.g. 30",
    )
    wait_multiplier: float = spec_field(
        1.0,
        help="Each time the breaker opens again without having closed, the wait is "
        "multiplied by this (1 keeps it constant).",
        parse=lambda raw: parse_float(raw, minimum=1.0),
        format="a number of at least 1, e.g. 2",
    )
    max_wait_in_open: float = spec_field(
        600.0,
        help="The longest the growing wait may become, in seconds.",
        parse=_positive_float,
        format="seconds above 0",
    )
    half_open_calls: int = spec_field(
        5,
        help="Probe calls let through in the half-open state (across all processes for a "
        "cluster breaker).",
        parse=lambda raw: parse_int(raw, minimum=1),
        format="a whole number of at least 1",
    )
    half_open_max_wait: float = spec_field(
        60.0,
        help="Seconds the half-open state may last before the breaker opens again; 0 waits "
        "for every probe to end.",
        parse=lambda raw: parse_float(raw, minimum=0.0),
        format="seconds, 0 or more",
    )
    record_exceptions: tuple[str, ...] = spec_field(
        (),
        help="Exception classes counted as failures, one dotted path per line; empty counts "
        "every exception. Other exceptions then count as successes.",
        parse=_dotted_names,
        format="dotted paths such as requests.ConnectionError, one per line",
    )
    ignore_exceptions: tuple[str, ...] = spec_field(
        (),
        help="Exception classes that count neither as failures nor as successes.",
        parse=_dotted_names,
        format="dotted paths such as myapp.errors.NotFound, one per line",
    )
    reset_token: str = spec_field(
        "",
        help="Changed by the admin's Reset action: every process forgets this breaker's "
        "state when it changes. Leave it as it is.",
    )

    def check(self) -> None:
        if self.window_type == "count" and self.minimum_calls > self.window_size:
            raise ValidationError(
                {
                    "minimum_calls": f"A count window of {self.window_size} calls never holds "
                    f"{self.minimum_calls}; use at most {self.window_size}."
                }
            )
        if self.max_wait_in_open < self.wait_in_open:
            raise ValidationError({"max_wait_in_open": "Expected at least wait_in_open."})

    def wait_for(self, opens: int) -> float:
        """Seconds to stay open the ``opens``-th time in a row (1 for the first)."""
        grown = self.wait_in_open * self.wait_multiplier ** max(0, opens - 1)
        return min(grown, self.max_wait_in_open)


def new_window(spec: BreakerSpec) -> Window:
    return (
        CountWindow(spec.window_size)
        if spec.window_type == "count"
        else TimeWindow(spec.window_size)
    )


# The machine: the rules, as plain state moved by the time it is given ------------


@dataclass(frozen=True)
class Transition:
    """A change of state, as the machine made it."""

    previous: str
    state: str
    at: float
    reason: str
    failure_rate: float | None
    slow_call_rate: float | None
    calls: int
    wait: float | None
    epoch: int
    shadow: bool
    observed: bool = False


class Decision(NamedTuple):
    """The answer to "may this call go through?"."""

    allowed: bool
    #: The state the call starts in; its outcome counts only there. -1: not counted.
    epoch: int
    probe: bool
    retry_after: float | None
    transition: Transition | None
    #: The lease holder of a cluster probe.
    holder: str | None = None


@dataclass(frozen=True)
class BreakerMetrics:
    """What a breaker knows now (in this process)."""

    name: str
    state: str
    mode: str
    scope: str
    failure_rate: float
    slow_call_rate: float
    calls: int
    failed_calls: int
    slow_calls: int
    time_left_open: float | None
    opens: int


class BreakerMachine:
    """The state of one breaker and the rules that move it.

    No I/O, no clock and no lock of its own: every method takes the current
    time, and the caller serialises calls. Decisions in ``metrics_only`` mode
    are made exactly as in ``automatic`` mode, but never refuse.
    """

    def __init__(self, spec: BreakerSpec, now: float) -> None:
        self.spec = spec
        self.state = CLOSED
        self.epoch = 0
        self.window = new_window(spec)
        self.entered_at = now
        self.open_until = 0.0
        self.wait = 0.0
        self.opens = 0
        self.permits = 0
        self.probe_calls = 0
        self.probe_failed = 0
        self.probe_slow = 0
        self.opened_with = (0.0, 0.0, 0)

    @property
    def shadow(self) -> bool:
        return self.spec.mode == METRICS_ONLY

    def acquire(self, now: float) -> Decision:
        mode = self.spec.mode
        if mode == DISABLED:
            return Decision(True, -1, False, None, None)
        if mode == FORCED_OPEN:
            return Decision(False, -1, False, None, None)
        transition = self.tick(now)
        if self.state == CLOSED:
            return Decision(True, self.epoch, False, None, transition)
        if self.state == OPEN:
            return self.refuse(self.open_until - now, transition)
        if self.permits > 0:
            self.permits -= 1
            return Decision(True, self.epoch, True, None, transition)
        return self.refuse(None, transition)

    def refuse(self, retry_after: float | None, transition: Transition | None = None) -> Decision:
        """A refusal (let through uncounted in metrics_only mode)."""
        if self.shadow:
            return Decision(True, -1, False, None, transition)
        return Decision(False, -1, False, retry_after, transition)

    def tick(self, now: float) -> Transition | None:
        """The moves time makes by itself: open -> half-open, half-open too long -> open."""
        if self.state == OPEN and now >= self.open_until:
            return self.half_open(now)
        if (
            self.state == HALF_OPEN
            and self.spec.half_open_max_wait > 0
            and now >= self.entered_at + self.spec.half_open_max_wait
        ):
            return self.trip(now, "half-open for longer than half_open_max_wait")
        return None

    def record(self, epoch: int, probe: bool, outcome: int, now: float) -> Transition | None:
        """The outcome (FAILED/SLOW flags) of a call that started in state ``epoch``."""
        if epoch < 0 or epoch != self.epoch:
            return None  # started in an earlier state, or not counted at all
        if self.state == CLOSED:
            window = self.window
            window.add(outcome, now)
            if outcome and window.calls >= self.spec.minimum_calls:
                reason = self.over_threshold(window.calls, window.failed, window.slow)
                if reason:
                    return self.trip(now, reason)
            return None
        if self.state == HALF_OPEN and probe:
            self.probe_calls += 1
            self.probe_failed += outcome & FAILED
            self.probe_slow += (outcome & SLOW) >> 1
            if self.probe_calls >= self.spec.half_open_calls:
                reason = self.over_threshold(self.probe_calls, self.probe_failed, self.probe_slow)
                if reason:
                    return self.trip(now, f"probes: {reason}")
                return self.close(now, "the probes succeeded")
        return None

    def release(self, epoch: int, probe: bool) -> None:
        """A call whose outcome does not count gives its probe permit back."""
        if probe and epoch == self.epoch and self.state == HALF_OPEN:
            self.permits += 1

    def over_threshold(self, calls: int, failed: int, slow: int) -> str:
        failure_rate, slow_rate = rate(failed, calls), rate(slow, calls)
        if failure_rate >= self.spec.failure_rate_threshold:
            return f"failure rate {failure_rate:.0f}% over {calls} calls"
        if slow_rate >= self.spec.slow_call_rate_threshold:
            return f"slow-call rate {slow_rate:.0f}% over {calls} calls"
        return ""

    def _rates(self) -> tuple[float, float, int]:
        if self.state == OPEN:
            return self.opened_with
        if self.state == HALF_OPEN:
            calls, failed, slow = self.probe_calls, self.probe_failed, self.probe_slow
        else:
            calls, failed, slow = self.window.calls, self.window.failed, self.window.slow
        return rate(failed, calls), rate(slow, calls), calls

    def _move(self, state: str, now: float, reason: str, wait: float | None = None) -> Transition:
        failure_rate, slow_rate, calls = self._rates()
        previous = self.state
        self.state = state
        self.epoch += 1
        self.entered_at = now
        return Transition(
            previous,
            state,
            now,
            reason,
            failure_rate,
            slow_rate,
            calls,
            wait,
            self.epoch,
            self.shadow,
        )

    def trip(self, now: float, reason: str) -> Transition:
        """Open now (``reason`` says why)."""
        self.opens += 1
        self.wait = self.spec.wait_for(self.opens)
        transition = self._move(OPEN, now, reason, self.wait)
        # Shown while open: the rates that opened it.
        self.opened_with = (
            transition.failure_rate or 0.0,
            transition.slow_call_rate or 0.0,
            transition.calls,
        )
        self.open_until = now + self.wait
        self.window.clear()
        return transition

    def half_open(self, now: float) -> Transition:
        transition = self._move(HALF_OPEN, now, "the wait in the open state is over")
        self.permits = self.spec.half_open_calls
        self.probe_calls = self.probe_failed = self.probe_slow = 0
        return transition

    def close(self, now: float, reason: str) -> Transition:
        transition = self._move(CLOSED, now, reason)
        self.opens = 0
        self.window.clear()
        return transition

    def adopt(
        self, state: str, epoch: int, opens: int, time_left: float, now: float
    ) -> Transition | None:
        """Take the state another process decided (cluster scope)."""
        if state == self.state and epoch == self.epoch:
            return None
        if state == self.state == CLOSED:
            # The same closed state under the cluster's number: the window is kept.
            self.epoch = epoch
            return None
        failure_rate, slow_rate, calls = self._rates()
        previous = self.state
        self.state, self.epoch, self.opens, self.entered_at = state, epoch, opens, now
        self.wait = self.spec.wait_for(max(1, opens))
        if state == OPEN:
            self.open_until = now + max(0.0, min(time_left, self.wait))
            self.opened_with = (failure_rate, slow_rate, calls)
        if state == CLOSED:
            self.window.clear()
        if state == HALF_OPEN:
            self.permits = 0  # probes are leases in the store
            self.probe_calls = self.probe_failed = self.probe_slow = 0
        return Transition(
            previous,
            state,
            now,
            "decided by another process",
            failure_rate,
            slow_rate,
            calls,
            self.wait if state == OPEN else None,
            epoch,
            self.shadow,
            observed=True,
        )

    def metrics(self, name: str, now: float) -> BreakerMetrics:
        self.window.expire(now)
        failure_rate, slow_rate, calls = self._rates()
        mode = self.spec.mode
        state = {DISABLED: "disabled", FORCED_OPEN: "forced_open"}.get(mode, self.state)
        if self.state == HALF_OPEN:
            failed, slow = self.probe_failed, self.probe_slow
        elif self.state == OPEN:
            failed = round(failure_rate * calls / 100)
            slow = round(slow_rate * calls / 100)
        else:
            failed, slow = self.window.failed, self.window.slow
        time_left = max(0.0, self.open_until - now) if state == OPEN else None
        return BreakerMetrics(
            name,
            state,
            mode,
            self.spec.scope,
            failure_rate,
            slow_rate,
            calls,
            failed,
            slow,
            time_left,
            self.opens,
        )


# Sharing the verdict through the store (cluster scope) ------------------------------


@dataclass(frozen=True)
class SharedVerdict:
    """The verdict every process of a cluster breaker follows, as stored (plain text)."""

    state: str
    epoch: int
    opens: int
    wait: float
    since_wall: float

    def encode(self) -> str:
        return f"v1|{self.state}|{self.epoch}|{self.opens}|{self.wait!r}|{self.since_wall!r}"

    @classmethod
    def decode(cls, raw: str | None) -> SharedVerdict | None:
        if not raw:
            return None
        try:
            version, state, epoch, opens, wait, since = raw.split("|")
            if version != "v1" or state not in (CLOSED, OPEN, HALF_OPEN):
                return None
            return cls(state, int(epoch), int(opens), float(wait), float(since))
        except ValueError:
            return None


#: How long the shared verdict lives without a transition (it is rewritten on each).
VERDICT_TTL = 7 * 24 * 3600.0
#: Packing of a probe outcome into one counter, so one INCR reports it atomically.
_FAILED_UNIT = 1 << 20
_SLOW_UNIT = 1 << 40


class ClusterLink:
    """The store operations of a cluster breaker: each is one round trip.

    Every method answers None when the store could not be reached (its answer
    then came from this process's fallback and means nothing to the cluster).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = f"breaker:{name}"

    @staticmethod
    def _store() -> Any:
        from .store import get_store

        return get_store()

    @staticmethod
    def shared(store: Any) -> bool:
        """Whether the store's last answer (in this thread) came from the shared Redis.

        The link always asks: while Redis is unreachable the store's own breaker
        answers locally at no network cost, and after its cooldown it probes
        Redis by itself, so the link returns to the cluster when Redis does.
        """
        return not getattr(store, "answered_locally", False)

    def read(self) -> tuple[str | None, SharedVerdict | None] | None:
        store = self._store()
        raw = store.get(self.key)
        if not self.shared(store):
            return None
        return raw, SharedVerdict.decode(raw)

    def replace(self, expected: str | None, verdict: SharedVerdict) -> bool | None:
        store = self._store()
        done = bool(store.compare_and_set(self.key, expected, verdict.encode(), VERDICT_TTL))
        if not self.shared(store):
            return None
        return done

    def force(self, verdict: SharedVerdict) -> None:
        self._store().set(self.key, verdict.encode(), VERDICT_TTL)

    def mark(self, what: str, epoch: int, ttl: float) -> None:
        """A marker that lives ``ttl`` seconds on the store's clock."""
        self._store().set(f"{self.key}:{what}:{epoch}", "1", max(ttl, 0.001))

    def marked(self, what: str, epoch: int) -> bool | None:
        store = self._store()
        present = store.get(f"{self.key}:{what}:{epoch}") is not None
        if not self.shared(store):
            return None
        return present

    def take_probe(self, epoch: int, limit: int, holder: str, ttl: float) -> Any:
        store = self._store()
        lease = store.acquire_lease(f"{self.key}:probes:{epoch}", holder, limit, ttl)
        return None if lease.degraded else lease

    def release_probe(self, epoch: int, holder: str) -> None:
        self._store().release_lease(f"{self.key}:probes:{epoch}", holder)

    def report_probe(self, epoch: int, outcome: int, ttl: float) -> tuple[int, int, int] | None:
        store = self._store()
        amount = (
            1 + (_FAILED_UNIT if outcome & FAILED else 0) + (_SLOW_UNIT if outcome & SLOW else 0)
        )
        packed = store.incr(f"{self.key}:results:{epoch}", amount, ttl)
        if not self.shared(store):
            return None
        return packed % _FAILED_UNIT, (packed // _FAILED_UNIT) % _FAILED_UNIT, packed // _SLOW_UNIT


# The breaker: a lock, a clock, the store and the signals around the machine ---------


class Permit:
    """Leave to make one call; hand it back to ``finish()`` with the call's outcome."""

    __slots__ = ("epoch", "holder", "probe")

    def __init__(self, epoch: int, probe: bool = False, holder: str | None = None) -> None:
        self.epoch = epoch
        self.probe = probe
        self.holder = holder


Rule = type[BaseException] | Callable[[BaseException], bool]


def matches(rule: Rule, error: BaseException) -> bool:
    """Does ``error`` match ``rule`` (an exception class, or a predicate)?"""
    if isinstance(rule, type):
        return isinstance(error, rule)
    return bool(rule(error))


#: The permit of a call whose outcome is not counted (disabled, shadow refusals).
_UNCOUNTED = Permit(-1)


class CircuitBreaker:
    """The circuit breaker named ``name`` in this process (one object per name).

    Use it as a decorator (sync or async callables), with ``call()``/``acall()``,
    or as a context manager (``with breaker:``). Its fields come from the
    ``breaker`` policy of the same name (code, settings, admin); ``record`` and
    ``ignore`` add exception classes or predicates, and ``failure_result``
    counts a returned value as a failure (e.g. an HTTP 503 response).
    """

    #: Seconds between two looks at the policy registry from the hot path.
    policy_recheck = 0.5

    def __init__(
        self,
        name: str,
        *,
        record: tuple[Rule, ...] = (),
        ignore: tuple[Rule, ...] = (),
        failure_result: Callable[[Any], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.clock = clock
        self.record_rules = tuple(record)
        self.ignore_rules = tuple(ignore)
        self.failure_result = failure_result
        self.link = ClusterLink(name)
        self._entered: contextvars.ContextVar[tuple[tuple[Permit, float], ...]] = (
            contextvars.ContextVar(f"stability_breaker_{name}", default=())
        )
        self._setup(self.clock())

    def _setup(self, now: float) -> None:
        #: Guards the machine; never held while the protected call or any I/O runs.
        self._lock = threading.Lock()
        #: One thread at a time talks to the store for this breaker.
        self._io_lock = threading.Lock()
        # The policy is read on first use (not here: this runs when settings change).
        spec = BreakerSpec(name=self.name)
        self._spec = spec
        self._machine = BreakerMachine(spec, now)
        self._rules: tuple[tuple[Rule, ...], tuple[Rule, ...]] | None = None
        self._policy_version = -1
        self._policy_at = -math.inf
        self._reset_cluster(now)
        self._new_counter()
        self._arm(now)

    def _reset_cluster(self, now: float) -> None:
        self._shared_raw: str | None = None
        self._shared_at = now if self._spec.scope == CLUSTER else math.inf
        self._local_only = False
        self._probe_wait_until = 0.0

    # The fast path reads these without the lock -----------------------------------

    def _new_counter(self) -> None:
        # Successes of the current closed state. Each closed state has its own
        # counter, so a call that started in an earlier state bumps one nobody reads.
        self._counter: itertools.count[int] | None = (
            itertools.count() if self._machine.state == CLOSED else None
        )
        self._counter_reads = 0
        self._counter_flushed = 0

    def _arm(self, now: float) -> None:
        """Lock held: may the lock-free fast path serve, and until when?"""
        # Successes counted so far belong before the boundary about to move.
        self._flush(now)
        machine, spec = self._machine, self._spec
        fast = machine.state == CLOSED and spec.mode in (AUTOMATIC, METRICS_ONLY)
        self._slow_after = spec.slow_call_duration
        bucket_at = math.floor(now) + 1.0 if spec.window_type == "time" else math.inf
        self._bucket_at = bucket_at
        check_at = min(self._policy_at, self._shared_at, bucket_at)
        # One tuple, read in one step by the fast path: (counter, until, slow after).
        self._fast: tuple[itertools.count[int], float, float] | None = (
            (self._counter, check_at, spec.slow_call_duration)
            if fast and self._counter is not None and self.failure_result is None
            else None
        )

    def _flush(self, now: float) -> None:
        """Lock held: fold the successes counted without the lock into the window."""
        counter = self._counter
        if counter is None:
            return
        # next() is atomic; each read bumps the counter too, so reads are subtracted.
        total = next(counter) - self._counter_reads
        self._counter_reads += 1
        new = total - self._counter_flushed
        self._counter_flushed = total
        if new:
            # They ended before the bucket boundary the fast path may not cross.
            self._machine.window.add(0, min(now, self._bucket_at - 1e-6), new)

    def _moved(self, now: float, transition: Transition | None) -> list[Transition]:
        """Lock held: after the machine moved, the closed state's counter is a new one."""
        if transition is None:
            return []
        self._new_counter()
        return [transition]

    # Policy --------------------------------------------------------------------------

    def _load_spec(self) -> BreakerSpec:
        return registry.get(BreakerSpec, self.name) or BreakerSpec(name=self.name)

    def _refresh_policy(self, now: float) -> list[Transition]:
        """Lock held: a changed policy starts the breaker afresh."""
        self._policy_at = now + self.policy_recheck
        spec = self._load_spec()
        self._policy_version = registry.version
        if spec == self._spec:
            return []
        before = self._machine.metrics(self.name, now).state
        self._spec = spec
        self._rules = None
        self._machine = BreakerMachine(spec, now)
        self._reset_cluster(now)
        self._new_counter()
        after = self._machine.metrics(self.name, now).state
        if before == after:
            return []
        return [Transition(before, after, now, "the policy changed", None, None, 0, None, 0, False)]

    @property
    def spec(self) -> BreakerSpec:
        """The policy this breaker decides with now."""
        return self._spec

    def refresh_policy(self) -> None:
        """Look at the policy registry now (the hot path looks every ``policy_recheck`` s)."""
        now = self.clock()
        with self._lock:
            self._flush(now)
            transitions = self._refresh_policy(now)
            self._arm(now)
        self._announce(transitions)

    def _maintain(self, now: float) -> list[Transition]:
        """Lock held: the periodic work of the slow path. No I/O."""
        self._flush(now)
        if now >= self._policy_at or registry.version != self._policy_version:
            return self._refresh_policy(now)
        return []

    def _cluster_active(self) -> bool:
        return self._spec.scope == CLUSTER and self._spec.mode in (AUTOMATIC, METRICS_ONLY)

    # Deciding ------------------------------------------------------------------------

    def acquire(self) -> Permit:
        """Leave to make one call, or ``BreakerOpen``. Hand it back with ``finish()``."""
        with self._lock:
            # The time is read under the lock, so transitions are stamped in the order made.
            now = self.clock()
            transitions = self._maintain(now)
            cluster = self._cluster_active()
            if not cluster:
                decision = self._machine.acquire(now)
                transitions += self._moved(now, decision.transition)
                self._arm(now)
        if cluster:
            decision = self._acquire_cluster(now, transitions)
        if transitions:
            self._announce(transitions)
        if not decision.allowed:
            raise BreakerOpen(
                f"The circuit breaker {self.name!r} is open: calls to this dependency are "
                "refused for now.",
                policy=self.name,
                retry_after=decision.retry_after,
            )
        if decision.epoch < 0:
            return _UNCOUNTED
        return Permit(decision.epoch, decision.probe, decision.holder)

    def finish(self, permit: Permit, duration: float, outcome: str) -> None:
        """Hand a permit back with the call's ``outcome``: SUCCESS, FAILURE or IGNORED.

        A call that took ``slow_call_duration`` or longer also counts as slow.
        """
        if permit.epoch < 0:
            return
        now = self.clock()
        if outcome == IGNORED:
            if permit.holder is not None:
                # Give the probe's lease back: the round needs a counted outcome.
                self.link.release_probe(permit.epoch, permit.holder)
            else:
                with self._lock:
                    self._machine.release(permit.epoch, permit.probe)
            return
        flags = FAILED if outcome == FAILURE else 0
        if duration >= self._slow_after:
            flags |= SLOW
        if permit.holder is not None:
            self._finish_probe(permit, flags, now)
            return
        with self._lock:
            now = self.clock()
            self._flush(now)
            transitions = self._moved(
                now, self._machine.record(permit.epoch, permit.probe, flags, now)
            )
            self._arm(now)
            publish = (
                bool(transitions)
                and transitions[0].state == OPEN
                and self._cluster_active()
                and not self._local_only
            )
        if publish:
            transitions += self._publish(transitions[0], now)
        if transitions:
            self._announce(transitions)

    def classify(self, error: BaseException) -> str:
        """How an exception raised by the protected call counts: SUCCESS, FAILURE or IGNORED."""
        if not isinstance(error, Exception) or isinstance(error, REFUSALS):
            # Cancellation and interpreter exits say nothing about the dependency, nor
            # does a refusal by a protection (a full bulkhead, a rate limit: the call
            # never reached it).
            return IGNORED
        celery_exceptions = sys.modules.get("celery.exceptions")
        if celery_exceptions is not None and isinstance(error, celery_exceptions.TaskPredicate):
            # A Celery task's Retry, Ignore or Reject is control flow: a Retry
            # counts as the error it was raised for, if any.
            cause = getattr(error, "exc", None)
            return self.classify(cause) if isinstance(cause, BaseException) else IGNORED
        record, ignore = self._exception_rules()
        if any(matches(rule, error) for rule in ignore):
            return IGNORED
        if record and not any(matches(rule, error) for rule in record):
            return SUCCESS
        return FAILURE

    def classify_result(self, result: Any) -> str:
        """How a returned value counts: FAILURE when ``failure_result`` says so."""
        failure_result = self.failure_result
        if failure_result is not None and failure_result(result):
            return FAILURE
        return SUCCESS

    def _exception_rules(self) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
        rules = self._rules
        if rules is None:
            spec = self._spec
            rules = (
                self.record_rules + _import_classes(spec.record_exceptions, self.name),
                self.ignore_rules + _import_classes(spec.ignore_exceptions, self.name),
            )
            self._rules = rules
        return rules

    # Calling ---------------------------------------------------------------------------

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)`` under this breaker."""
        fast = self._fast
        if fast is not None:
            # The closed state, in steady state: no lock, no I/O, one atomic increment.
            # (The decorator's wrapper repeats these lines to save a call frame.)
            counter, until, slow_after = fast
            clock = self.clock
            start = clock()
            if start < until:
                try:
                    result = fn(*args, **kwargs)
                except BaseException as error:
                    self._fast_end(counter, start, self.classify(error))
                    raise
                if clock() - start < slow_after:
                    next(counter)
                else:
                    self._fast_end(counter, start, SUCCESS)
                return result
        return self._call_slow(fn, args, kwargs)

    def _call_slow(self, fn: Callable[..., R], args: Any, kwargs: Any) -> R:
        permit = self.acquire()
        start = self.clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            self.finish(permit, self.clock() - start, self.classify(error))
            raise
        self.finish(permit, self.clock() - start, self.classify_result(result))
        return result

    def _fast_end(self, counter: itertools.count[int], start: float, outcome: str) -> None:
        # The counter names the closed state the call started in.
        epoch = self._machine.epoch if counter is self._counter else -2
        self.finish(Permit(epoch), self.clock() - start, outcome)

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``await fn(*args, **kwargs)`` under this breaker."""
        permit = await self.aacquire()
        start = self.clock()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as error:
            await self.afinish(permit, self.clock() - start, self.classify(error))
            raise
        await self.afinish(permit, self.clock() - start, self.classify_result(result))
        return result

    def _may_do_io(self, now: float) -> bool:
        return self._cluster_active() and (self._machine.state != CLOSED or now >= self._shared_at)

    async def aacquire(self) -> Permit:
        """``acquire()`` for async code: store round trips, if any, run in a worker thread."""
        if self._may_do_io(self.clock()):
            return await asyncio.to_thread(self.acquire)
        return self.acquire()

    async def afinish(self, permit: Permit, duration: float, outcome: str) -> None:
        """``finish()`` for async code."""
        if self._cluster_active() and (permit.holder is not None or outcome == FAILURE):
            await asyncio.to_thread(self.finish, permit, duration, outcome)
        else:
            self.finish(permit, duration, outcome)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a callable (sync or async): every call goes through the breaker."""
        reject_celery_task(fn, f"@circuit_breaker({self.name!r})")
        remember_guarded(fn)
        if is_async(fn):
            acall = self.acall

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await acall(fn, *args, **kwargs)

            async_wrapper.breaker = self  # type: ignore[attr-defined]
            return cast(Callable[P, R], async_wrapper)

        breaker = self
        clock = self.clock
        classify = self.classify
        fast_end = self._fast_end
        call_slow = self._call_slow

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                # The fast path of call(), inlined: the closed state costs no lock and no I/O.
                fast = breaker._fast
                if fast is not None:
                    counter, until, slow_after = fast
                    start = clock()
                    if start < until:
                        try:
                            result = fn(*args, **kwargs)
                        except BaseException as error:
                            fast_end(counter, start, classify(error))
                            raise
                        if clock() - start < slow_after:
                            next(counter)
                        else:
                            fast_end(counter, start, SUCCESS)
                        return result
                return call_slow(fn, args, kwargs)
            except StabilityError as error:
                # The body of a Celery task: run it again later instead of failing.
                refused_in_task(wrapper, error)
                raise

        wrapper.breaker = self  # type: ignore[attr-defined]
        return wrapper

    def __enter__(self) -> CircuitBreaker:
        permit = self.acquire()
        self._entered.set((*self._entered.get(), (permit, self.clock())))
        return self

    def _exit(self, error: BaseException | None) -> tuple[Permit, float, str]:
        stack = self._entered.get()
        (permit, start), self_rest = stack[-1], stack[:-1]
        self._entered.set(self_rest)
        outcome = SUCCESS if error is None else self.classify(error)
        return permit, self.clock() - start, outcome

    def __exit__(self, exc_type: Any, error: BaseException | None, tb: Any) -> None:
        self.finish(*self._exit(error))

    async def __aenter__(self) -> CircuitBreaker:
        permit = await self.aacquire()
        self._entered.set((*self._entered.get(), (permit, self.clock())))
        return self

    async def __aexit__(self, exc_type: Any, error: BaseException | None, tb: Any) -> None:
        await self.afinish(*self._exit(error))

    # Cluster scope ----------------------------------------------------------------------
    #
    # The machine follows the shared verdict; the store is read at most every
    # BREAKER_CLUSTER_REFRESH seconds and written on transitions only. Store
    # round trips run with the io lock (one thread per breaker at a time) and
    # never with the state lock. While the store is unreachable (_local_only)
    # the machine decides alone, as in process scope.

    def _refresh_interval(self) -> float:
        return min(1.0, settings.BREAKER_CLUSTER_REFRESH)

    def _acquire_cluster(self, now: float, transitions: list[Transition]) -> Decision:
        with self._lock:
            io = now >= self._shared_at or (not self._local_only and self._time_moves_due(now))
        if io and self._io_lock.acquire(blocking=False):
            try:
                if now >= self._shared_at:
                    transitions += self._sync_shared(now)
                if not self._local_only:
                    transitions += self._advance_shared(now)
            finally:
                self._io_lock.release()
        with self._lock:
            machine = self._machine
            lease_needed = machine.state == HALF_OPEN and not self._local_only
            if not lease_needed:
                if self._local_only:
                    decision = machine.acquire(now)
                    transitions += self._moved(now, decision.transition)
                elif machine.state == CLOSED:
                    decision = Decision(True, machine.epoch, False, None, None)
                else:
                    decision = machine.refuse(max(0.0, machine.open_until - now))
                self._arm(now)
                return decision
            if now < self._probe_wait_until:
                return machine.refuse(self._probe_wait_until - now)
            epoch = machine.epoch
        return self._take_probe(epoch, now, transitions)

    def _time_moves_due(self, now: float) -> bool:
        machine, spec = self._machine, self._spec
        if machine.state == OPEN:
            return now >= machine.open_until
        return (
            machine.state == HALF_OPEN
            and spec.half_open_max_wait > 0
            and now >= machine.entered_at + spec.half_open_max_wait
        )

    def _go_local(self, now: float) -> None:
        """Lock held: the store is unreachable; decide alone until a read succeeds."""
        if not self._local_only:
            self._local_only = True
            if self._machine.state == HALF_OPEN:
                self._machine.permits = self._spec.half_open_calls
        self._shared_at = now + self._refresh_interval()
        self._arm(now)

    def _sync_shared(self, now: float) -> list[Transition]:
        """io lock held: read the shared verdict and follow it (one round trip)."""
        read = self.link.read()
        with self._lock:
            if read is None:
                self._go_local(now)
                return []
            self._local_only = False
            raw, verdict = read
            self._shared_raw = raw
            self._shared_at = now + self._refresh_interval()
            machine = self._machine
            if verdict is None:
                # Nothing shared yet: the cluster is closed.
                epoch = machine.epoch if machine.state == CLOSED else machine.epoch + 1
                verdict = SharedVerdict(CLOSED, epoch, 0, 0.0, 0.0)
            time_left = verdict.since_wall + verdict.wait - time.time()
            transition = machine.adopt(verdict.state, verdict.epoch, verdict.opens, time_left, now)
            moved = self._moved(now, transition)
            self._arm(now)
            return moved

    def _advance_shared(self, now: float) -> list[Transition]:
        """io lock held: the moves time makes (open -> half-open, half-open too long ->
        open), checked on the store's clock; each is a compare-and-set, so one process
        makes it and the others follow."""
        with self._lock:
            machine, spec = self._machine, self._spec
            state, epoch, opens = machine.state, machine.epoch, machine.opens
            due = self._time_moves_due(now)
        if not due:
            return []
        marker = "open" if state == OPEN else "half_open"
        still = self.link.marked(marker, epoch)
        if still is None:
            with self._lock:
                self._go_local(now)
            return []
        if still:
            with self._lock:
                # Not yet by the store's clock: look again shortly.
                if state == OPEN:
                    machine.open_until = now + 0.1
                else:
                    machine.entered_at = now - spec.half_open_max_wait + 0.1
            return []
        if state == OPEN:
            verdict = SharedVerdict(HALF_OPEN, epoch + 1, opens, 0.0, time.time())
            reason = "the wait in the open state is over"
        else:
            verdict = SharedVerdict(
                OPEN, epoch + 1, opens + 1, spec.wait_for(opens + 1), time.time()
            )
            reason = "half-open for longer than half_open_max_wait"
        won = self._replace(verdict)
        transitions = self._sync_shared(now)
        return [_as_writer(t, reason) for t in transitions] if won else transitions

    def _replace(self, verdict: SharedVerdict) -> bool:
        """io lock held: compare-and-set the shared verdict; mark the state's deadline."""
        won = self.link.replace(self._shared_raw, verdict)
        if won:
            spec = self._spec
            if verdict.state == OPEN:
                self.link.mark("open", verdict.epoch, verdict.wait)
            elif verdict.state == HALF_OPEN and spec.half_open_max_wait > 0:
                self.link.mark("half_open", verdict.epoch, spec.half_open_max_wait)
        return bool(won)

    def _probe_ttl(self) -> float:
        spec = self._spec
        return spec.half_open_max_wait or max(60.0, 4 * spec.slow_call_duration)

    def _take_probe(self, epoch: int, now: float, transitions: list[Transition]) -> Decision:
        """No lock held: a probe of a cluster breaker is a lease in the store."""
        holder = uuid.uuid4().hex
        lease = self.link.take_probe(epoch, self._spec.half_open_calls, holder, self._probe_ttl())
        with self._lock:
            machine = self._machine
            if lease is None:
                self._go_local(now)
                decision = machine.acquire(now)
                transitions += self._moved(now, decision.transition)
                self._arm(now)
                return decision
            if lease.acquired and machine.epoch == epoch:
                return Decision(True, epoch, True, None, None, holder)
            self._probe_wait_until = now + min(1.0, max(0.05, lease.retry_after))
            return machine.refuse(self._probe_wait_until - now)

    def _finish_probe(self, permit: Permit, flags: int, now: float) -> None:
        """A cluster probe ended: report it; the last of the round decides for everyone."""
        spec = self._spec
        counts = self.link.report_probe(permit.epoch, flags, self._probe_ttl())
        if counts is None:
            with self._lock:
                self._go_local(now)
                transitions = self._moved(now, self._machine.record(permit.epoch, True, flags, now))
                self._arm(now)
            self._announce(transitions)
            return
        calls, failed, slow = counts
        if calls != spec.half_open_calls:
            return  # another probe will be the last to report
        with self._lock:
            reason = self._machine.over_threshold(calls, failed, slow)
            opens = self._machine.opens
        if reason:
            verdict = SharedVerdict(
                OPEN, permit.epoch + 1, opens + 1, spec.wait_for(opens + 1), time.time()
            )
            reason = f"probes: {reason}"
        else:
            verdict = SharedVerdict(CLOSED, permit.epoch + 1, 0, 0.0, time.time())
            reason = "the probes succeeded"
        with self._io_lock:
            read = self.link.read()
            if read is None or read[1] is None:
                return
            current = read[1]
            if current.state != HALF_OPEN or current.epoch != permit.epoch:
                return  # the round was already ended (half_open_max_wait, an operator)
            self._shared_raw = read[0]
            won = self._replace(verdict)
            transitions = self._sync_shared(now)
        self._announce([_as_writer(t, reason) for t in transitions] if won else transitions)

    def _publish(self, transition: Transition, now: float) -> list[Transition]:
        """This process's window opened the breaker: tell the cluster (compare-and-set)."""
        with self._io_lock:
            verdict = SharedVerdict(
                OPEN, transition.epoch, self._machine.opens, transition.wait or 0.0, time.time()
            )
            won = self.link.replace(self._shared_raw, verdict)
            if won is None:
                with self._lock:
                    self._go_local(now)
                return []
            if won:
                self.link.mark("open", verdict.epoch, verdict.wait)
                with self._lock:
                    self._shared_raw = verdict.encode()
                    self._shared_at = now + self._refresh_interval()
                    self._arm(now)
                return []
            # Another process moved first: follow what it decided.
            return self._sync_shared(now)

    # Operating -------------------------------------------------------------------------

    def metrics(self) -> BreakerMetrics:
        """State, rates and counts of this breaker, as this process sees them."""
        now = self.clock()
        with self._lock:
            transitions = self._maintain(now)
            metrics = self._machine.metrics(self.name, now)
            self._arm(now)
        self._announce(transitions)
        return metrics

    @property
    def state(self) -> str:
        """ "closed", "open", "half_open", "disabled" or "forced_open"."""
        return self.metrics().state

    def shared_verdict(self) -> SharedVerdict | None:
        """The verdict in the store (cluster scope), read now; None when absent or unreachable."""
        read = self.link.read()
        return None if read is None else read[1]

    def trip(self, reason: str = "opened by hand") -> None:
        """Open now, as if the thresholds had been crossed (shared in cluster scope)."""
        now = self.clock()
        with self._lock:
            self._flush(now)
            transitions = self._moved(now, self._machine.trip(now, reason))
            self._arm(now)
            publish = self._cluster_active() and not self._local_only
        if publish:
            transitions += self._publish(transitions[0], now)
        self._announce(transitions)

    def reset(self) -> None:
        """Forget the state and close; in cluster scope, close the shared verdict too."""
        now = self.clock()
        if self._spec.scope == CLUSTER:
            read = self.link.read()
            shared_epoch = read[1].epoch if read is not None and read[1] is not None else 0
            epoch = max(self._machine.epoch, shared_epoch) + 1
            self.link.force(SharedVerdict(CLOSED, epoch, 0, 0.0, time.time()))
        with self._lock:
            before = self._machine.state
            self._machine = BreakerMachine(self._spec, now)
            self._reset_cluster(now)
            self._new_counter()
            self._arm(now)
        if before != CLOSED:
            self._announce(
                [Transition(before, CLOSED, now, "reset", None, None, 0, None, 0, False)]
            )

    def forget(self) -> None:
        """Drop all state, locks included (settings changed; a forked child)."""
        self._setup(self.clock())

    def _announce(self, transitions: list[Transition]) -> None:
        for transition in transitions:
            announce(self.name, self._spec.scope, transition)


def _as_writer(transition: Transition, reason: str) -> Transition:
    """A transition this process made through the store (it read it back)."""
    return dataclasses.replace(transition, observed=False, reason=reason)


_import_warned: set[str] = set()


def _import_classes(paths: tuple[str, ...], name: str) -> tuple[Rule, ...]:
    found: list[Rule] = []
    for path in paths:
        try:
            value = import_string(path)
        except ImportError:
            value = None
        if isinstance(value, type) and issubclass(value, BaseException):
            found.append(value)
        elif path not in _import_warned:
            _import_warned.add(path)
            logger.error(
                "Circuit breaker %r: %r is not an importable exception class; ignoring it.",
                name,
                path,
            )
    return tuple(found)


def announce(name: str, scope: str, transition: Transition) -> None:
    """Log a transition and send ``breaker_state_changed``."""
    verb = "would move" if transition.shadow else "moved"
    level = (
        logging.WARNING if transition.state == OPEN and not transition.observed else logging.INFO
    )
    wait = f"; refusing calls for {transition.wait:.3g} s" if transition.wait else ""
    logger.log(
        level,
        "Circuit breaker %r %s from %s to %s (%s%s)%s.",
        name,
        verb,
        transition.previous,
        transition.state,
        transition.reason,
        wait,
        " [learnt from the store]" if transition.observed else "",
    )
    signals.breaker_state_changed.send(
        sender=CircuitBreaker,
        name=name,
        state=transition.state,
        previous=transition.previous,
        scope=scope,
        reason=transition.reason,
        failure_rate=transition.failure_rate,
        slow_call_rate=transition.slow_call_rate,
        calls=transition.calls,
        wait=transition.wait,
        shadow=transition.shadow,
        observed=transition.observed,
        at=transition.at,
    )


# Every breaker of this process, by name -----------------------------------------------

_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def get_breaker(name: str) -> CircuitBreaker:
    """The breaker named ``name`` in this process, made on first use."""
    breaker = _breakers.get(name)
    if breaker is None:
        with _breakers_lock:
            breaker = _breakers.get(name)
            if breaker is None:
                breaker = _breakers[name] = CircuitBreaker(name)
    return breaker


def breakers() -> dict[str, CircuitBreaker]:
    """A copy of the breakers this process has made, by name."""
    return dict(_breakers)


def register_spec(name: str, fields: dict[str, Any]) -> None:
    """Record code defaults for the breaker ``name`` (validated; a bad value raises)."""
    if fields:
        spec = BreakerSpec.build(name, fields)
        # The same values again (a decorator applied per call) change nothing.
        if registry.code_defaults().get((BreakerSpec.kind, name)) != spec:
            registry.register(spec)
    elif registry.code_default(BreakerSpec, name) is None:
        registry.register(BreakerSpec(name=name))


def circuit_breaker(
    name: str,
    *,
    record: tuple[Rule, ...] | None = None,
    ignore: tuple[Rule, ...] | None = None,
    failure_result: Callable[[Any], bool] | None = None,
    **fields: Any,
) -> CircuitBreaker:
    """The breaker named ``name``, with code defaults for its policy.

    ``fields`` are those of ``BreakerSpec`` (``failure_rate_threshold=50``,
    ``wait_in_open=30``, ``scope="cluster"``...); settings and the admin may
    override each. Use the result as a decorator, a context manager, or through
    ``call()``/``acall()``::

        @circuit_breaker("payments", failure_rate_threshold=50, record=(requests.RequestException,))
        def charge(order): ...
    """
    register_spec(name, fields)
    breaker = get_breaker(name)
    if record is not None:
        breaker.record_rules = tuple(record)
    if ignore is not None:
        breaker.ignore_rules = tuple(ignore)
    if failure_result is not None:
        breaker.failure_result = failure_result
    breaker._rules = None
    breaker.refresh_policy()
    return breaker


# Code protected by a breaker or a guard, for the checks that read its source.
_guarded: list[Callable[..., Any]] = []


def remember_guarded(fn: Callable[..., Any]) -> None:
    """Note ``fn`` as code protected by a breaker or a guard (for the checks)."""
    if len(_guarded) < 10_000:
        _guarded.append(fn)


def guarded_functions() -> Iterator[Callable[..., Any]]:
    """The functions decorated in this process by a breaker or a guard."""
    return iter(tuple(_guarded))


def _forget_all(*args: Any, **kwargs: Any) -> None:
    for breaker in list(_breakers.values()):
        breaker.forget()


def _after_fork() -> None:
    # A lock held by another thread at the fork would stay held in the child.
    global _breakers_lock
    _breakers_lock = threading.Lock()
    _forget_all()


settings_reset.connect(_forget_all, dispatch_uid="django_stability.breaker.reset")
os.register_at_fork(after_in_child=_after_fork)
