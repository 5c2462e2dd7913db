"""Cluster-wide concurrency limits: at most N at once, across every process and server.

"At most 2 exports running", "at most 5 requests in flight per API key": each
running request (or block of code) holds a lease in the shared store, one of
``limit`` slots under its key. A lease has a TTL on the Redis server's clock,
so a process that dies (SIGKILL, OOM, a lost server) frees its slots within
the TTL without anyone cleaning up; while a holder runs longer than a third of
the TTL, a background thread of its process renews the lease.

Policies with a route (URL names, path prefixes, patterns) are applied by
``StabilityMiddleware`` after admission; ``concurrency_limit`` (a view
decorator) and ``concurrency_slot`` (a context manager, for tasks and any
code) apply a policy by name. With ``waiting_room`` set, the limit counts
visitors instead, and visitors over it wait in line (``waiting_room.py``).

Each decision is one store round trip. When the store cannot be reached, the
local store answers (the limit then holds per process) and the policy's
``on_store_failure`` says whether to trust that (open) or refuse (closed).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.http import HttpRequest, HttpResponseBase

from . import responses, waiting_room
from .exceptions import Overloaded, StabilityError, StoreUnavailable
from .policies import PolicySpec, parse_float, parse_int, registry, spec_field
from .routing import RouteFields, RouteIndex
from .shedding import MODES, on_close, report_shed
from .store import get_store

logger = logging.getLogger("django_stability.concurrency")

F = TypeVar("F", bound=Callable[..., Any])

KEY_FORMAT = "empty (one pool), ip, user, or header:<name> such as header:X-Api-Key"


def parse_key(raw: Any) -> str:
    """What shares one limit: '' (everyone), 'ip', 'user' or 'header:<name>'."""
    text = "" if raw is None else str(raw).strip()
    if text in ("", "ip", "user"):
        return text
    name = text.removeprefix("header:").strip()
    if text.startswith("header:") and name:
        return f"header:{name}"
    raise ValueError(f"Expected {KEY_FORMAT}; got {raw!r}.")


def _seconds(minimum: float) -> Callable[[Any], float]:
    return lambda raw: parse_float(raw, minimum=minimum)


@registry.register_kind
@dataclass(frozen=True)
class ConcurrencySpec(RouteFields, PolicySpec):
    """At most ``limit`` at once across the cluster, per key; or a waiting room of that size."""

    kind = "concurrency"
    verbose_name = "concurrency limit"
    admin_class = "django_stability.shedding_admin.ConcurrencyPolicyAdmin"

    limit: int = spec_field(
        10,
        help="How many may run at once across every process (visitors, with a waiting room).",
        parse=lambda raw: parse_int(raw, minimum=1),
        format="a whole number of at least 1",
    )
    key: str = spec_field(
        "",
        help="What shares one limit: empty for one pool; ip; header:<name> (e.g. an API key); "
        "user only in decorators (the middleware runs before authentication).",
        parse=parse_key,
        format=KEY_FORMAT,
    )
    lease_ttl: float = spec_field(
        30.0,
        help="Seconds a slot outlives a holder that died; running holders renew it.",
        parse=_seconds(0.05),
        format="a number of seconds, e.g. 30",
    )
    retry_after: float = spec_field(
        2.0,
        help="Seconds a refused client is told to wait (Retry-After).",
        parse=_seconds(0.0),
        format="a number of seconds, e.g. 2",
    )
    mode: str = spec_field(
        "enforce",
        choices=MODES,
        help="enforce refuses; shadow counts and reports but admits; off does nothing.",
    )
    on_store_failure: str = spec_field(
        "open",
        choices=("open", "closed"),
        help="When the shared store cannot be reached: open admits under a per-process limit, "
        "closed refuses.",
    )
    waiting_room: bool = spec_field(
        False,
        help="Count visitors instead of requests: visitors over the limit wait in line, "
        "admitted in arrival order (browsers see a page that refreshes itself).",
    )
    visitor_timeout: float = spec_field(
        300.0,
        help="Waiting room: seconds an admitted visitor keeps the place after their last request.",
        parse=_seconds(0.05),
        format="a number of seconds, e.g. 300",
    )
    queue_timeout: float = spec_field(
        30.0,
        help="Waiting room: seconds a waiting visitor keeps their place in line without "
        "coming back.",
        parse=_seconds(0.05),
        format="a number of seconds, e.g. 30",
    )
    refresh: float = spec_field(
        5.0,
        help="Waiting room: seconds between two refreshes of the waiting page (Retry-After).",
        parse=_seconds(1.0),
        format="a number of seconds of at least 1, e.g. 5",
    )

    def check(self) -> None:
        if self.waiting_room and self.key:
            raise ValidationError({"key": "A waiting room has one line: leave the key empty."})
        if self.waiting_room and self.refresh >= self.queue_timeout:
            raise ValidationError(
                {
                    "refresh": "The waiting page must refresh more often than queue_timeout, "
                    "or waiting visitors lose their place between two refreshes."
                }
            )


# Holders and their leases ------------------------------------------------------------

_process_id = ""
_counter = itertools.count(1)


def _new_process_id() -> None:
    global _process_id
    _process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


_new_process_id()


def new_holder() -> str:
    """A holder id unique across processes and servers."""
    return f"{_process_id}:{next(_counter)}"


@dataclass(frozen=True)
class Slot:
    """A lease this process holds: the store key, the holder, its TTL."""

    key: str
    holder: str
    ttl: float


class LeaseKeeper:
    """Renews the leases this process holds, in a daemon thread of its own.

    A lease held longer than a third of its TTL is renewed, so a long export
    keeps its slot while it runs, and loses it within the TTL once its process
    is gone. ``renew_due`` is the whole job, callable without the thread.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._held: dict[Slot, float] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wakes_at = 0.0

    def hold(self, slot: Slot) -> None:
        with self._cond:
            now = self.clock()
            self._held[slot] = now
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="django-stability-leases", daemon=True
                )
                self._thread.start()
            # Wake the thread only if this lease is due before it wakes anyway:
            # waking it on every request would cost a thread switch each.
            if now + slot.ttl / 3 < self._wakes_at:
                self._cond.notify()

    def drop(self, slot: Slot) -> None:
        with self._cond:
            self._held.pop(slot, None)

    @property
    def held(self) -> int:
        return len(self._held)

    def renew_due(self) -> None:
        """Renew every lease held longer than a third of its TTL."""
        now = self.clock()
        with self._cond:
            due = [slot for slot, at in self._held.items() if now - at >= slot.ttl / 3]
        store = get_store()
        for slot in due:
            renewed = store.renew_lease(slot.key, slot.holder, slot.ttl)
            with self._cond:
                if slot not in self._held:
                    continue  # released meanwhile
                if renewed:
                    self._held[slot] = self.clock()
                else:
                    # The process stalled past the TTL and someone may have the
                    # slot now; the holder keeps running, without a lease.
                    del self._held[slot]
                    logger.warning(
                        "Lost the lease %s of %s: it expired before it could be renewed.",
                        slot.key,
                        slot.holder,
                    )

    def _wait(self) -> None:
        """Sleep until the next lease is due (or a new one is due sooner)."""
        with self._cond:
            # Computed under the lock hold() takes, so a lease added after this
            # is compared with the deadline set here.
            now = self.clock()
            waits = [at + slot.ttl / 3 - now for slot, at in self._held.items()]
            wait = max(0.01, min(waits, default=5.0))
            self._wakes_at = now + wait
            self._cond.wait(timeout=wait)

    def _run(self) -> None:
        while True:
            try:
                self.renew_due()
            except Exception:  # never let the keeper die on a surprise
                logger.exception("Renewing leases failed")
                time.sleep(1.0)
            self._wait()

    def after_fork(self) -> None:
        """A forked child holds none of its parent's leases and has no keeper thread."""
        self._held = {}
        self._cond = threading.Condition()
        self._thread = None
        self._wakes_at = 0.0


#: The lease keeper of this process.
keeper = LeaseKeeper()


def _after_fork() -> None:
    _new_process_id()
    keeper.after_fork()


os.register_at_fork(after_in_child=_after_fork)


def key_value(spec: ConcurrencySpec, request: HttpRequest | None) -> str:
    """The part of the lease key that says whose limit this is (hashed: no API key in Redis)."""
    if not spec.key:
        return "*"
    raw = ""
    if request is not None:
        if spec.key == "ip":
            raw = str(request.META.get("REMOTE_ADDR", ""))
        elif spec.key == "user":
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                raw = f"user:{user.pk}"
            else:
                raw = f"ip:{request.META.get('REMOTE_ADDR', '')}"
        else:
            raw = request.headers.get(spec.key.removeprefix("header:"), "")
    return hashlib.sha256(raw.encode()).hexdigest()[:16] if raw else "-"


def lease_key(spec: ConcurrencySpec, value: str = "*") -> str:
    return f"concurrency:{spec.name}:{value}"


@dataclass(frozen=True)
class Attempt:
    """The outcome of asking for a slot: held (``slot``), or the error to refuse with."""

    slot: Slot | None
    error: StabilityError | None
    holders: int
    degraded: bool


def try_acquire(spec: ConcurrencySpec, value: str) -> Attempt:
    """Ask the store for a slot of ``spec`` under ``value`` (one round trip)."""
    slot = Slot(lease_key(spec, value), new_holder(), spec.lease_ttl)
    result = get_store().acquire_lease(slot.key, slot.holder, spec.limit, spec.lease_ttl)
    error: StabilityError | None = None
    if result.degraded and spec.on_store_failure == "closed":
        error = StoreUnavailable(policy=spec.name, retry_after=spec.retry_after)
    elif not result.acquired:
        error = Overloaded(
            f"At most {spec.limit} of these may run at once; all are busy.",
            policy=spec.name,
            retry_after=spec.retry_after,
        )
    if result.acquired:
        if error is not None:
            get_store().release_lease(slot.key, slot.holder)
        else:
            keeper.hold(slot)
    return Attempt(
        slot if result.acquired and error is None else None, error, result.holders, result.degraded
    )


def release(slot: Slot) -> None:
    """Give a slot back (one round trip)."""
    keeper.drop(slot)
    get_store().release_lease(slot.key, slot.holder)


def policy(name: str) -> ConcurrencySpec:
    spec = registry.get(ConcurrencySpec, name)
    if spec is None:
        raise ImproperlyConfigured(
            f"No concurrency limit named {name!r}: define it in code (concurrency_limit(..., "
            "limit=N)), in STABILITY['POLICIES']['concurrency'], or in the admin."
        )
    return spec


def report_refusal(
    request: HttpRequest, spec: ConcurrencySpec, attempt: Attempt, shadow: bool
) -> None:
    """A request refused (or, in shadow mode, that would be) by a concurrency limit."""
    report_shed(
        request,
        reason="store_unavailable" if attempt.degraded else "concurrency",
        priority=getattr(request, "stability_priority", None),
        policy=spec.name,
        retry_after=spec.retry_after,
        shadow=shadow,
        holders=attempt.holders,
        limit=spec.limit,
    )


def take_slot(name: str, key: str = "", *, request: HttpRequest | None = None) -> Slot | None:
    """Take one slot of the limit ``name``; raise ``Overloaded`` when none is free.

    ``key`` (any string, e.g. a customer id) gives each key its own limit;
    with ``request``, the policy's own key (ip, user, header) is used instead.
    Returns the slot to ``release()``, or None when nothing is held (mode off,
    or shadow mode over the limit).
    """
    spec = policy(name)
    if spec.mode == "off":
        return None
    value = key_value(spec, request) if request is not None else (key or "*")
    attempt = try_acquire(spec, value)
    if attempt.error is None:
        return attempt.slot
    shadow = spec.mode == "shadow"
    if request is not None:
        report_refusal(request, spec, attempt, shadow)
    if not shadow:
        raise attempt.error
    return None


@contextmanager
def concurrency_slot(
    name: str, key: str = "", *, request: HttpRequest | None = None
) -> Iterator[Slot | None]:
    """Hold one slot of the limit ``name`` for the block (see ``take_slot``)."""
    slot = take_slot(name, key, request=request)
    try:
        yield slot
    finally:
        if slot is not None:
            release(slot)


def _request_of(args: tuple[Any, ...]) -> HttpRequest | None:
    for arg in args[:2]:  # a function view (request, ...) or a method (self, request, ...)
        if isinstance(arg, HttpRequest):
            return arg
    return None


def _release_after(slot: Slot | None, response: Any) -> Any:
    """Release now, or when a streaming response has been sent."""
    if slot is not None:
        if isinstance(response, HttpResponseBase) and response.streaming:
            on_close(response, lambda: release(slot))
        else:
            release(slot)
    return response


def concurrency_limit(
    name: str,
    *,
    limit: int | None = None,
    key: str | None = None,
    lease_ttl: float | None = None,
    retry_after: float | None = None,
) -> Callable[[F], F]:
    """Decorate a view (sync or async) so that at most ``limit`` run at once across the cluster.

    Given ``limit`` (and the other fields), the decorator registers the
    policy's code default; the admin and settings may override it. Over the
    limit the view is not called: ``Overloaded`` becomes a 503 with
    Retry-After. A streaming response holds its slot until its last chunk.
    """
    if limit is not None:
        fields: dict[str, Any] = {"limit": limit}
        for field_name, value in (
            ("key", key),
            ("lease_ttl", lease_ttl),
            ("retry_after", retry_after),
        ):
            if value is not None:
                fields[field_name] = value
        registry.register(ConcurrencySpec.build(name, fields))

    def decorate(view: F) -> F:
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                slot = take_slot(name, request=_request_of(args))
                try:
                    response = await view(*args, **kwargs)
                except BaseException:
                    if slot is not None:
                        release(slot)
                    raise
                return _release_after(slot, response)

            return cast(F, async_wrapper)

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            slot = take_slot(name, request=_request_of(args))
            try:
                response = view(*args, **kwargs)
            except BaseException:
                if slot is not None:
                    release(slot)
                raise
            return _release_after(slot, response)

        return cast(F, wrapper)

    return decorate


# The middleware gate -----------------------------------------------------------------------


def _build_index() -> RouteIndex[ConcurrencySpec]:
    # A key of "user" cannot be decided before authentication (checks.E021).
    return RouteIndex(
        (spec, spec)
        for spec in registry.all(ConcurrencySpec)
        if spec.routed and spec.mode != "off" and spec.key != "user"
    )


def concurrency_index() -> RouteIndex[ConcurrencySpec]:
    return registry.derived("concurrency:routes", _build_index)


_SLOTS = "_stability_slots"
_TICKETS = "_stability_tickets"


class ConcurrencyGate:
    """Routed concurrency limits and waiting rooms, after admission (one round trip each)."""

    def may_block(self, request: HttpRequest) -> bool:
        """True when a routed limit covers the request: entering and leaving call the store."""
        index = concurrency_index()
        return bool(index) and bool(index.match(request))

    def enter(self, request: HttpRequest) -> HttpResponseBase | None:
        index = concurrency_index()
        if not index:
            return None
        specs = index.match(request)
        if not specs:
            return None
        held: list[Slot] = []
        tickets: list[tuple[ConcurrencySpec, str]] = []
        for spec in specs:
            shadow = spec.mode == "shadow"
            if spec.waiting_room:
                visit = waiting_room.visit(request, spec)
                tickets.append((spec, visit.ticket))
                if visit.admitted or shadow:
                    if not visit.admitted:
                        waiting_room.report(request, spec, visit, shadow=True)
                    continue
                refusal = waiting_room.refusal(request, spec, visit)
                self._give_back(held)
                waiting_room.report(request, spec, visit, shadow=False)
                for room, ticket in tickets:
                    waiting_room.issue(refusal, request, room, ticket)
                return refusal
            attempt = try_acquire(spec, key_value(spec, request))
            if attempt.slot is not None:
                held.append(attempt.slot)
            if attempt.error is None:
                continue
            report_refusal(request, spec, attempt, shadow)
            if shadow:
                continue
            self._give_back(held)
            response = responses.refusal(request, attempt.error)
            for room, ticket in tickets:
                waiting_room.issue(response, request, room, ticket)
            return response
        setattr(request, _SLOTS, held)
        setattr(request, _TICKETS, tickets)
        return None

    @staticmethod
    def _give_back(held: list[Slot]) -> None:
        for slot in held:
            release(slot)

    def leave(self, request: HttpRequest, response: HttpResponseBase | None) -> None:
        held: list[Slot] = getattr(request, _SLOTS, None) or []
        tickets: list[tuple[ConcurrencySpec, str]] = getattr(request, _TICKETS, None) or []
        setattr(request, _SLOTS, None)
        setattr(request, _TICKETS, None)
        if response is not None:
            for spec, ticket in tickets:
                waiting_room.issue(response, request, spec, ticket)
        if not held:
            return
        if response is not None and response.streaming:
            on_close(response, lambda: self._give_back(held))
        else:
            self._give_back(held)
