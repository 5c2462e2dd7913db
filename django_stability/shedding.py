"""Admission control: which requests a process takes on when demand exceeds its capacity.

A worker that accepts more requests than its threads can serve does not get
faster: it queues them, every request waits, clients time out and retry, and
the critical paths (checkout, health checks) die with the rest. Admission runs
first in ``StabilityMiddleware``, before any session or authentication work,
and does no network I/O:

1. **Priority classes.** Admission policies, matched on URL name, path,
   method and User-Agent, give each request a class: ``critical``, ``high``,
   ``default`` or ``sheddable``. Requests no policy matches get
   ``SHEDDING_DEFAULT_PRIORITY``.
2. **Queue time.** A request that already waited upstream longer than its
   target (from ``X-Request-Start``, set by nginx, Apache or Heroku's router)
   is dropped: its client has likely given up, and serving it would only make
   the requests behind it late too.
3. **In-flight limit.** Each class may fill a share of the process's
   in-flight limit (``SHEDDING_CLASS_SHARES``): ``sheddable`` requests are
   refused first, while the rest of the limit stays reserved for the higher
   classes. A class that was shed is admitted again only once in-flight work
   has dropped below its share by a margin (``SHEDDING_HYSTERESIS``).
   The limit is ``SHEDDING_MAX_IN_FLIGHT``, or, with ``SHEDDING_ADAPTIVE``,
   learned from latency (see ``adaptive.py``), capped by it.

A refused request gets a 503 with ``Retry-After`` (``responses.refusal``);
each decision is sent as the ``request_shed`` signal and logged, at most one
line per ``SHEDDING_LOG_INTERVAL`` per process, with the counts in between.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponseBase

from . import responses, signals
from .adaptive import Gradient2Limit
from .conf import settings, settings_reset
from .exceptions import Overloaded
from .policies import PolicySpec, parse_float, parse_str_tuple, registry, spec_field
from .routing import RouteFields, RouteIndex

logger = logging.getLogger("django_stability.shedding")

#: The priority classes, highest first.
PRIORITIES = ("critical", "high", "default", "sheddable")
RANK = {name: rank for rank, name in enumerate(PRIORITIES)}

#: A wait longer than this is taken for a clock or header error and ignored:
#: trusting it would shed every request while a proxy's clock is off.
IMPLAUSIBLE_WAIT = 3600.0

MODES = ("enforce", "shadow", "off")


def parse_user_agents(raw: Any) -> tuple[str, ...]:
    """Regular expressions searched (case-insensitively) in the User-Agent, one per line."""
    patterns = parse_str_tuple(raw)
    for pattern in patterns:
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(
                f"Expected regular expressions searched in the User-Agent, one per line; "
                f"{pattern!r} is not one ({exc})."
            ) from None
    return patterns


@registry.register_kind
@dataclass(frozen=True)
class AdmissionSpec(RouteFields, PolicySpec):
    """Which priority class the requests it matches belong to, and their queue-time target."""

    kind = "admission"
    verbose_name = "admission policy"
    admin_class = "django_stability.shedding_admin.AdmissionPolicyAdmin"

    priority: str = spec_field(
        "default",
        choices=PRIORITIES,
        help="critical requests are shed last (checkout, health checks); sheddable first "
        "(search, exports, bots).",
    )
    user_agents: tuple[str, ...] = spec_field(
        (),
        help="Regular expressions searched in the User-Agent, case-insensitively, one per line. "
        "With no URL name, prefix or pattern, the policy covers these clients on every path.",
        parse=parse_user_agents,
        format="one regular expression per line, e.g. bot|crawler|spider",
    )
    queue_time_target: float | None = spec_field(
        None,
        help="Seconds a request may have waited upstream (X-Request-Start) before it is "
        "dropped; empty uses SHEDDING_QUEUE_TIME_TARGET.",
        parse=lambda raw: parse_float(raw, minimum=0.001),
        format="a number of seconds, e.g. 2.5",
    )
    mode: str = spec_field(
        "enforce",
        choices=MODES,
        help="enforce sheds; shadow reports what it would shed and admits; off ignores "
        "this policy.",
    )

    @property
    def matches_anything(self) -> bool:
        """True when the policy covers some requests by itself (a route or a User-Agent)."""
        return self.routed or bool(self.user_agents)


# Pure decisions -----------------------------------------------------------------


def class_limits(limit: int, shares: Mapping[str, float]) -> dict[str, int]:
    """How many requests in flight each class may find and still be admitted (at least 1)."""
    return {name: max(1, int(limit * shares.get(name, 1.0) + 1e-9)) for name in PRIORITIES}


def admit_class(in_flight: int, ceiling: int, band: int, shedding: bool) -> tuple[bool, bool]:
    """The in-flight verdict for one class, with hysteresis.

    Admitted while ``in_flight`` is under ``ceiling``; once the class was shed,
    only while it is ``band`` more below it. Returns (admitted, shedding after).
    """
    if in_flight >= ceiling:
        return False, True
    if shedding and in_flight > ceiling - 1 - band:
        return False, True
    return True, False


def parse_request_start(value: str) -> float | None:
    """The time a proxy received the request, in seconds since the epoch, or None.

    Accepts ``t=`` followed by seconds (nginx ``t=${msec}``), milliseconds,
    or microseconds (Apache ``%t``), and bare milliseconds (Heroku's router);
    the unit is told by the magnitude.
    """
    text = value.strip()
    if text.startswith("t="):
        text = text[2:]
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    if number > 1e17:
        number /= 1e9
    elif number > 1e14:
        number /= 1e6
    elif number > 1e11:
        number /= 1e3
    return number


def queue_wait(value: str, now: float) -> float | None:
    """Seconds waited since the proxy stamped the request; None if unreadable or implausible."""
    start = parse_request_start(value)
    if start is None:
        return None
    wait = now - start
    if wait > IMPLAUSIBLE_WAIT:
        return None
    return max(0.0, wait)


class ShedLog:
    """At most one log line per ``interval`` seconds, counting what it did not log.

    A storm of refusals must not become a storm of log lines: the first
    refusal is logged at once, the next ones are counted and summarised on the
    first refusal after the interval.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._counts: Counter[str] = Counter()
        self._next = 0.0
        self._since: float | None = None
        self._lock = threading.Lock()

    def record(self, reason: str, detail: str, interval: float) -> str | None:
        """Count one refusal; the line to log now, or None."""
        with self._lock:
            now = self.clock()
            self._counts[reason] += 1
            if self._since is None:
                self._since = now
            if now < self._next:
                return None
            total = sum(self._counts.values())
            reasons = ", ".join(f"{name}: {count}" for name, count in sorted(self._counts.items()))
            span = now - self._since
            self._counts.clear()
            self._since = None
            self._next = now + interval
        if total == 1:
            return f"Shed a request ({reason}): {detail}"
        return f"Shed {total} requests in the last {span:.0f} s ({reasons}); latest: {detail}"


_shed_log = ShedLog()


def report_shed(
    request: HttpRequest,
    *,
    reason: str,
    priority: str | None,
    policy: str | None,
    retry_after: float | None,
    shadow: bool = False,
    **extra: Any,
) -> None:
    """Send ``request_shed`` and log the refusal, rate-limited (every shedding part calls this)."""
    signals.request_shed.send(
        sender=HttpRequest,
        request=request,
        reason=reason,
        priority=priority,
        policy=policy,
        retry_after=retry_after,
        shadow=shadow,
        **extra,
    )
    facts = " ".join(f"{key}={value}" for key, value in extra.items())
    detail = (
        f"{request.method} {request.path} priority={priority} policy={policy} {facts}"
        f"{' (shadow: admitted)' if shadow else ''}"
    )
    line = _shed_log.record(reason, detail.strip(), settings.SHEDDING_LOG_INTERVAL)
    if line is not None:
        logger.warning(line)


# The state of this process ---------------------------------------------------------


@dataclass(frozen=True)
class Admitted:
    """What the controller remembers of an admitted request until it leaves."""

    token: int
    priority: str
    started: float
    in_flight: int


@dataclass(frozen=True)
class Verdict:
    """The controller's answer and the facts behind it.

    ``refused`` is the in-flight verdict; in shadow mode a refused request is
    admitted all the same, so ``admitted`` is set then too.
    """

    admitted: Admitted | None
    refused: bool
    in_flight: int
    limit: int | None
    ceiling: int | None


class AdmissionController:
    """The requests this process has in flight, by class; the in-flight verdicts. Thread-safe.

    One per process (``controller``), shared by the sync (WSGI threads) and
    async (event loop) entry points of the middleware, so both count alike.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens = itertools.count(1)
        self._started: dict[int, Admitted] = {}
        self.by_class: Counter[str] = Counter()
        self.shedding: dict[str, bool] = dict.fromkeys(PRIORITIES, False)
        self.shed_total: Counter[str] = Counter()
        self.last_shed = -math.inf
        self.adaptive: Gradient2Limit | None = None
        self._adaptive_key: tuple[Any, ...] | None = None
        self._next_prune = 0.0

    @property
    def in_flight(self) -> int:
        return len(self._started)

    def limit(self) -> int | None:
        """The in-flight limit in force: the setting, or the adaptive one capped by it."""
        static = settings.SHEDDING_MAX_IN_FLIGHT
        if static is not None and static < 1:
            static = None
        if not settings.SHEDDING_ADAPTIVE:
            return static
        adaptive = self._adaptive_limit()
        return adaptive.current if static is None else min(static, adaptive.current)

    def _adaptive_limit(self) -> Gradient2Limit:
        key = (
            settings.SHEDDING_ADAPTIVE_INITIAL_LIMIT,
            settings.SHEDDING_ADAPTIVE_MIN_LIMIT,
            settings.SHEDDING_ADAPTIVE_MAX_LIMIT,
            settings.SHEDDING_ADAPTIVE_TOLERANCE,
            settings.SHEDDING_ADAPTIVE_SMOOTHING,
        )
        if self.adaptive is None or key != self._adaptive_key:
            initial, low, high, tolerance, smoothing = key
            self.adaptive = Gradient2Limit(
                initial=initial,
                min_limit=low,
                max_limit=high,
                tolerance=tolerance,
                smoothing=smoothing,
            )
            self._adaptive_key = key
        return self.adaptive

    def try_enter(self, priority: str, *, enforce: bool = True) -> Verdict:
        """Admit a request of ``priority`` if its class has room; count it when admitted.

        With ``enforce=False`` (shadow) the request is admitted and counted
        whatever the verdict.
        """
        limit = self.limit()
        now = self.clock()
        with self._lock:
            if now >= self._next_prune:
                self._prune(now)
            in_flight = len(self._started)
            refused = False
            ceiling: int | None = None
            if limit is not None:
                ceiling = class_limits(limit, settings.SHEDDING_CLASS_SHARES)[priority]
                band = round(limit * settings.SHEDDING_HYSTERESIS)
                ok, shedding = admit_class(in_flight, ceiling, band, self.shedding[priority])
                refused = not ok
                if enforce:
                    self.shedding[priority] = shedding
            if refused and enforce:
                self.shed_total[priority] += 1
                self.last_shed = now
                return Verdict(None, True, in_flight, limit, ceiling)
            admitted = Admitted(next(self._tokens), priority, now, in_flight)
            self._started[admitted.token] = admitted
            self.by_class[priority] += 1
            return Verdict(admitted, refused, in_flight, limit, ceiling)

    def record_shed(self, priority: str) -> None:
        """Count a refusal decided outside the in-flight limit (queue time)."""
        with self._lock:
            self.shed_total[priority] += 1
            self.last_shed = self.clock()

    def leave(self, admitted: Admitted) -> None:
        """The admitted request is over; feed its latency to the adaptive limit."""
        now = self.clock()
        with self._lock:
            if self._started.pop(admitted.token, None) is None:
                return  # pruned as stale, or left twice
            self.by_class[admitted.priority] -= 1
            if self.adaptive is not None and settings.SHEDDING_ADAPTIVE:
                self.adaptive.sample(now - admitted.started, admitted.in_flight + 1)

    def shedding_recently(self, hold: float) -> bool:
        """True while this process shed a request in the last ``hold`` seconds."""
        return self.clock() - self.last_shed < hold

    def _prune(self, now: float) -> None:
        # A response whose close() the server never called would hold its
        # slot for ever; forget requests far older than any real one.
        self._next_prune = now + 10.0
        stale_after = settings.SHEDDING_STALE_AFTER
        stale = [a for a in self._started.values() if now - a.started > stale_after]
        for admitted in stale:
            del self._started[admitted.token]
            self.by_class[admitted.priority] -= 1
        if stale:
            logger.warning(
                "Forgot %d request(s) in flight for over %.0f s; a server that does not "
                "close responses leaks in-flight slots.",
                len(stale),
                stale_after,
            )

    def snapshot(self) -> dict[str, Any]:
        """The live state, as plain data (for the admin and status views)."""
        limit = self.limit()
        with self._lock:
            return {
                "in_flight": len(self._started),
                "by_class": {name: self.by_class[name] for name in PRIORITIES},
                "limit": limit,
                "ceilings": class_limits(limit, settings.SHEDDING_CLASS_SHARES) if limit else None,
                "shedding": dict(self.shedding),
                "shed_total": {name: self.shed_total[name] for name in PRIORITIES},
                "seconds_since_shed": None
                if self.last_shed == -math.inf
                else round(self.clock() - self.last_shed, 1),
            }

    def reset(self, **kwargs: Any) -> None:
        """Forget everything (settings changed; tests)."""
        with self._lock:
            self._forget()

    def after_fork(self) -> None:
        """A forked child serves none of its parent's requests.

        A new lock, not the parent's: another thread may have held it at the
        fork, and the child would wait for it for ever.
        """
        self._lock = threading.Lock()
        self._forget()

    def _forget(self) -> None:
        self._started.clear()
        self.by_class.clear()
        self.shedding = dict.fromkeys(PRIORITIES, False)
        self.shed_total.clear()
        self.last_shed = -math.inf
        self.adaptive = None
        self._adaptive_key = None


#: The admission state of this process.
controller = AdmissionController()


# Matching requests to admission policies ----------------------------------------------


@dataclass(frozen=True)
class AdmissionIndex:
    """The enabled admission policies, indexed for matching."""

    routes: RouteIndex[AdmissionSpec]
    agents: Mapping[str, re.Pattern[str]]
    everywhere: tuple[AdmissionSpec, ...]


def _build_index() -> AdmissionIndex:
    specs = [s for s in registry.all(AdmissionSpec) if s.mode != "off" and s.matches_anything]
    agents = {
        s.name: re.compile("|".join(f"(?:{p})" for p in s.user_agents), re.IGNORECASE)
        for s in specs
        if s.user_agents
    }
    return AdmissionIndex(
        routes=RouteIndex((s, s) for s in specs if s.routed),
        agents=agents,
        everywhere=tuple(s for s in specs if not s.routed),
    )


def admission_index() -> AdmissionIndex:
    return registry.derived("shedding:admission", _build_index)


def classify(request: HttpRequest) -> AdmissionSpec | None:
    """The admission policy deciding this request: the highest class among those matching."""
    index = admission_index()
    candidates = index.routes.match(request) if index.routes else []
    if index.everywhere:
        method = request.method
        candidates = [*candidates, *(s for s in index.everywhere if s.allows_method(method))]
    best: AdmissionSpec | None = None
    agent: str | None = None
    for spec in candidates:
        pattern = index.agents.get(spec.name)
        if pattern is not None:
            if agent is None:
                agent = request.headers.get("User-Agent", "")
            if not pattern.search(agent):
                continue
        if best is None or RANK[spec.priority] < RANK[best.priority]:
            best = spec
    return best


# The gate -------------------------------------------------------------------------------

_TICKET = "_stability_admitted"


def on_close(response: HttpResponseBase, callback: Callable[[], None]) -> None:
    """Call ``callback`` once, when the server closes ``response`` (streaming responses)."""
    original = response.close
    done = threading.Lock()

    def close() -> None:
        try:
            original()
        finally:
            if done.acquire(blocking=False):
                callback()

    response.close = close  # type: ignore[method-assign]


def retry_after() -> float:
    """``SHEDDING_RETRY_AFTER`` spread up to half again, so refused clients come back apart."""
    base = settings.SHEDDING_RETRY_AFTER
    return base * random.uniform(1.0, 1.5)


class AdmissionGate:
    """The first gate of ``StabilityMiddleware``: priority, queue time, in-flight limit. No I/O."""

    def enter(self, request: HttpRequest) -> HttpResponseBase | None:
        mode = settings.SHEDDING_MODE
        if mode == "off":
            return None
        spec = classify(request)
        priority = spec.priority if spec is not None else settings.SHEDDING_DEFAULT_PRIORITY
        enforce = mode == "enforce" and (spec is None or spec.mode == "enforce")
        request.stability_priority = priority  # type: ignore[attr-defined]
        policy = spec.name if spec is not None else None

        header = settings.SHEDDING_QUEUE_TIME_HEADER
        target = spec.queue_time_target if spec is not None else None
        if target is None:
            target = settings.SHEDDING_QUEUE_TIME_TARGET
        if header and target:
            stamp = request.headers.get(header)
            wait = queue_wait(stamp, time.time()) if stamp else None
            if wait is not None and wait > target:
                return self._shed(
                    request,
                    "queue_time",
                    priority,
                    policy,
                    enforce,
                    f"The request waited {wait:.1f} s before reaching the application.",
                    waited=round(wait, 3),
                    target=target,
                )

        verdict = controller.try_enter(priority, enforce=enforce)
        if verdict.refused:
            refusal = self._shed(
                request,
                "capacity",
                priority,
                policy,
                enforce,
                "The service is over capacity and is serving more important requests first.",
                in_flight=verdict.in_flight,
                limit=verdict.limit,
                ceiling=verdict.ceiling,
            )
            if refusal is not None:
                return refusal
        setattr(request, _TICKET, verdict.admitted)
        return None

    def _shed(
        self,
        request: HttpRequest,
        reason: str,
        priority: str,
        policy: str | None,
        enforce: bool,
        message: str,
        **facts: Any,
    ) -> HttpResponseBase | None:
        wait = retry_after()
        report_shed(
            request,
            reason=reason,
            priority=priority,
            policy=policy,
            retry_after=wait,
            shadow=not enforce,
            **facts,
        )
        if not enforce:
            return None
        if reason != "capacity":
            controller.record_shed(priority)
        return responses.refusal(request, Overloaded(message, policy=policy, retry_after=wait))

    def leave(self, request: HttpRequest, response: HttpResponseBase | None) -> None:
        admitted: Admitted | None = getattr(request, _TICKET, None)
        if admitted is None:
            return
        setattr(request, _TICKET, None)
        if response is not None and response.streaming:
            # The request is in flight until the last chunk has been sent.
            on_close(response, lambda: controller.leave(admitted))
        else:
            controller.leave(admitted)


def status() -> dict[str, Any]:
    """The admission state of this process, as plain data."""
    return controller.snapshot()


def _reset_controller(**kwargs: Any) -> None:
    controller.reset()


settings_reset.connect(_reset_controller, dispatch_uid="django_stability.shedding.reset")


def _after_fork() -> None:
    global _shed_log
    controller.after_fork()
    _shed_log = ShedLog()  # its lock too may have been held at the fork


os.register_at_fork(after_in_child=_after_fork)
