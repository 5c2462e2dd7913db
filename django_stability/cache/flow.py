"""The protocol of one protected call, as a generator of effects, and its two drivers.

``protect()`` decides; it does no I/O. It yields an effect (read, compute,
land, release, wait ...) and receives the effect's answer, so the same
decisions serve the sync and the async entry points (``run_sync`` and
``run_async`` perform the effects), and the tests can drive them with made-up
readings. In words:

* a fresh value is returned as it is, unless XFetch picks this caller to
  refresh it early and it wins the lock (then it recomputes, or hands the
  recompute to the background, and serves the fresh value if that fails);
* a stale value: the caller that wins the lock recomputes (or hands it to the
  background and returns the stale value at once); everyone else gets the
  stale value at once, while it is within the grace period, or within the
  stale-if-error window while a failed recompute backs off;
* no value: the caller that wins the lock computes; the others wait, woken as
  soon as the value lands and looking again every third of a lease (so a dead
  holder is replaced within about a lease), for at most ``wait`` seconds; then
  they compute without the lock, or raise, as the policy says;
* a failed compute releases the lock, backs off when there is a stale value,
  serves it within the stale-if-error window, and otherwise raises.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any

from ..exceptions import CacheWaitTimeout
from .counters import counters
from .failsafe import Session
from .home import FRESH, STALE, Backoff, Keys, Reading, Watcher
from .maintenance import maintenance
from .policy import CacheSpec

logger = logging.getLogger("django_stability.cache")

#: What get-mode answers to the caller that should compute and set() the value.
MISS: Any = object()

COMPUTE, GET = "compute", "get"
#: A backoff never pauses longer than this.
BACKOFF_CAP = 60.0


# Effects ----------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    """Read the value and try the lock if it needs recomputing. Answer: a ``Reading``."""

    xfetch: float = 0.0


@dataclass(frozen=True)
class Compute:
    """Run the compute (renewing the lease while it runs if ``locked``).

    Answer: ``Computed`` or ``Failed``.
    """

    locked: bool


@dataclass(frozen=True)
class Land:
    """Store the computed value (fenced by ``started``); releases a held lock. Answer: bool."""

    value: Any
    compute_time: float
    started: float
    locked: bool


@dataclass(frozen=True)
class Release:
    """Free the lock after a failed compute; back off if ``backoff``. Answer: None."""

    backoff: bool


@dataclass(frozen=True)
class Refresh:
    """Hand the recompute to the background (the lock goes with it). Answer: bool (taken)."""

    reading: Reading


@dataclass(frozen=True)
class Watch:
    """Start watching for the value to land. Answer: None."""


@dataclass(frozen=True)
class Wait:
    """Wait until woken or ``timeout`` seconds. Answer: None."""

    timeout: float


@dataclass(frozen=True)
class Count:
    """Count an event for the policy. Answer: None."""

    event: str


@dataclass(frozen=True)
class Computed:
    value: Any
    seconds: float


@dataclass(frozen=True)
class Failed:
    error: Exception


Effect = Read | Compute | Land | Release | Refresh | Watch | Wait | Count
Flow = Generator[Effect, Any, Any]


@dataclass(frozen=True)
class Plan:
    """What one call is about: its keys, its policy, and how it was called."""

    keys: Keys
    policy: CacheSpec
    #: Seconds the value stays fresh (jittered); None: never stale; 0: not stored.
    ttl: float | None
    token: str
    mode: str = COMPUTE
    xfetch: float = 0.0
    #: Whether the compute can run in the background (a get-mode call has none).
    can_refresh: bool = True
    clock: Callable[[], float] = time.monotonic

    @property
    def hard(self) -> float | None:
        """Seconds the value is kept: fresh period plus the longest it may be served stale."""
        if self.ttl is None or self.ttl <= 0:
            return self.ttl
        return self.ttl + self.policy.servable_for

    @property
    def lease(self) -> float:
        # A get-mode caller computes outside our control (no heartbeat): its lock
        # lasts as long as the others would wait for it.
        if self.mode == GET:
            return max(self.policy.lease, self.policy.wait)
        return self.policy.lease

    @property
    def backoff(self) -> Backoff:
        policy = self.policy
        return Backoff(
            policy.error_backoff,
            min(BACKOFF_CAP, max(policy.error_backoff, policy.stale_if_error)),
            policy.servable_for + BACKOFF_CAP,
        )


def serve_stale(policy: CacheSpec, reading: Reading) -> bool:
    """May a caller that did not win the lock be given this stale value?"""
    age = reading.age
    return age <= policy.grace or (reading.backoff and age <= policy.stale_if_error)


# The decisions -----------------------------------------------------------------


def protect(plan: Plan) -> Flow:
    """The whole protected call; returns the value (or ``MISS`` in get-mode)."""
    reading: Reading = yield Read(plan.xfetch)
    if reading.state == FRESH:
        if not reading.locked:
            yield Count("hits")
            return reading.value
        return (yield from _refresh(plan, reading))
    if reading.state == STALE:
        if reading.locked:
            return (yield from _refresh(plan, reading))
        if serve_stale(plan.policy, reading):
            yield Count("stale")
            return reading.value
    elif reading.locked:
        return (yield from _compute(plan, reading, fallback=None))
    return (yield from _wait(plan))


def _refresh(plan: Plan, reading: Reading) -> Flow:
    """This caller holds the lock and has a value to serve meanwhile."""
    if plan.mode == COMPUTE and plan.policy.refresh != "inline" and plan.can_refresh:
        taken = yield Refresh(reading)
        if taken:
            yield Count("stale" if reading.state == STALE else "hits")
            return reading.value
    return (yield from _compute(plan, reading, fallback=reading))


def _compute(plan: Plan, reading: Reading, fallback: Reading | None, locked: bool = True) -> Flow:
    if plan.mode == GET:
        return MISS  # the caller computes; its set() lands the value and frees the lock
    outcome = yield Compute(locked)
    if isinstance(outcome, Failed):
        if locked:
            yield Release(backoff=fallback is not None)
        yield Count("errors")
        if fallback is not None and (
            fallback.state == FRESH or fallback.age <= plan.policy.stale_if_error
        ):
            yield Count("stale" if fallback.state == STALE else "hits")
            return fallback.value
        raise outcome.error
    yield Land(outcome.value, outcome.seconds, reading.now, locked)
    yield Count("recomputes")
    return outcome.value


def _wait(plan: Plan) -> Flow:
    policy = plan.policy
    deadline = plan.clock() + policy.wait
    yield Watch()
    yield Count("waits")
    while True:
        # Read again after watching: a value that landed before the watch began is seen here.
        reading: Reading = yield Read()
        if reading.locked:  # the holder died or failed: this caller takes over
            fallback = reading if reading.state == STALE else None
            return (yield from _compute(plan, reading, fallback))
        if reading.state == FRESH:
            return reading.value
        if reading.state == STALE and serve_stale(policy, reading):
            return reading.value
        left = deadline - plan.clock()
        if left <= 0:
            break
        yield Wait(min(left, policy.lease / 3.0))
    if plan.mode == GET:
        return MISS
    if policy.on_wait_timeout == "raise":
        raise CacheWaitTimeout(
            f"Waited {policy.wait:g} s for another caller to compute {plan.keys.key!r}.",
            policy=policy.name,
            retry_after=policy.wait,
        )
    return (yield from _compute(plan, reading, fallback=None, locked=False))


def refresh_in_background(plan: Plan, reading: Reading) -> Flow:
    """The recompute handed to the background: never raises, logs and backs off on failure."""
    outcome = yield Compute(True)
    if isinstance(outcome, Failed):
        yield Release(backoff=True)
        yield Count("errors")
        logger.warning(
            "Background refresh of cache key %r (policy %r) failed: %r",
            plan.keys.key,
            plan.policy.name,
            outcome.error,
        )
        return None
    yield Land(outcome.value, outcome.seconds, reading.now, True)
    yield Count("recomputes")
    return None


# The drivers ---------------------------------------------------------------------


class Call:
    """One protected call: its plan, the homes it uses, and how its value is computed.

    ``compute`` is the sync callable; ``acompute`` the async one (for
    ``aget_or_set``), either may be None in get-mode. ``background`` takes the
    plan and the reading and returns whether it took the recompute.
    """

    def __init__(
        self,
        plan: Plan,
        session: Session,
        compute: Callable[[], Any] | None,
        acompute: Callable[[], Awaitable[Any]] | None = None,
        background: Callable[[Plan, Reading], bool] | None = None,
    ) -> None:
        self.plan = plan
        self.session = session
        self.compute = compute
        self.acompute = acompute
        self.background = background
        self.watcher: Watcher | None = None
        self.holding = False

    # Effects that are the same in both drivers.

    def _read(self, effect: Read) -> Reading:
        plan = self.plan
        reading = self.session.read(
            plan.keys,
            token=plan.token,
            lease=plan.lease,
            lock=True,
            xfetch=effect.xfetch,
            stale_if_error=plan.policy.stale_if_error,
        )
        if reading.locked:
            self.holding = True
        return reading

    def _land(self, effect: Land) -> bool:
        plan = self.plan
        stored = self.session.land(
            plan.keys,
            token=plan.token if effect.locked else None,
            value=effect.value,
            soft=plan.ttl,
            hard=plan.hard,
            compute_time=effect.compute_time,
            started=effect.started,
        )
        if effect.locked:
            self.holding = False
        return stored

    def _release(self, effect: Release) -> None:
        plan = self.plan
        self.session.release(
            plan.keys, token=plan.token, backoff=plan.backoff if effect.backoff else None
        )
        self.holding = False

    def _refresh(self, effect: Refresh) -> bool:
        if self.background is None:
            return False
        taken = self.background(self.plan, effect.reading)
        if taken:
            self.holding = False  # the lock went with the work
        return taken

    def _heartbeat(self, locked: bool) -> Any:
        if not locked:
            return None
        plan, session = self.plan, self.session
        return maintenance.hold(
            lambda: session.renew(plan.keys, token=plan.token, lease=plan.lease), plan.lease
        )

    def _count(self, effect: Count) -> None:
        counters.add(self.plan.policy.name, effect.event)

    def finish(self, aborted: bool) -> None:
        """After the call: stop watching; free a lock still held if the call was cut short."""
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        if self.session.degraded:
            counters.add(self.plan.policy.name, "degraded")
        if aborted and self.holding and self.plan.mode == COMPUTE:
            self.holding = False
            try:
                self.session.release(self.plan.keys, token=self.plan.token, backoff=None)
            except Exception:  # the caller's own exception matters more
                logger.exception("releasing a cache lock after an aborted call failed")

    # Sync.

    def perform(self, effect: Effect) -> Any:
        if isinstance(effect, Read):
            return self._read(effect)
        if isinstance(effect, Count):
            return self._count(effect)
        if isinstance(effect, Compute):
            return self._compute_sync(effect)
        if isinstance(effect, Land):
            return self._land(effect)
        if isinstance(effect, Release):
            return self._release(effect)
        if isinstance(effect, Watch):
            self.watcher = self.session.watch(self.plan.keys)
            return None
        if isinstance(effect, Wait):
            assert self.watcher is not None
            self.watcher.wait(effect.timeout)
            return None
        if isinstance(effect, Refresh):
            return self._refresh(effect)
        raise TypeError(f"unknown effect {effect!r}")

    def _compute_sync(self, effect: Compute) -> Computed | Failed:
        assert self.compute is not None
        held = self._heartbeat(effect.locked)
        start = time.perf_counter()
        try:
            value = self.compute()
        except Exception as exc:
            return Failed(exc)
        finally:
            if held is not None:
                maintenance.drop(held)
        return Computed(value, time.perf_counter() - start)

    # Async.

    async def aperform(self, effect: Effect) -> Any:
        if isinstance(effect, Count):
            return self._count(effect)
        if isinstance(effect, Read):
            return await asyncio.to_thread(self._read, effect)
        if isinstance(effect, Compute):
            return await self._compute_async(effect)
        if isinstance(effect, Land):
            return await asyncio.to_thread(self._land, effect)
        if isinstance(effect, Release):
            return await asyncio.to_thread(self._release, effect)
        if isinstance(effect, Watch):
            self.watcher = await asyncio.to_thread(self.session.watch, self.plan.keys)
            return None
        if isinstance(effect, Wait):
            assert self.watcher is not None
            await self.watcher.async_wait(effect.timeout)
            return None
        if isinstance(effect, Refresh):
            return self._refresh(effect)
        raise TypeError(f"unknown effect {effect!r}")

    async def _compute_async(self, effect: Compute) -> Computed | Failed:
        assert self.acompute is not None
        held = self._heartbeat(effect.locked)
        start = time.perf_counter()
        try:
            value = await self.acompute()
        except Exception as exc:
            return Failed(exc)
        finally:
            if held is not None:
                maintenance.drop(held)
        return Computed(value, time.perf_counter() - start)


def run_sync(flow: Flow, call: Call) -> Any:
    """Perform the effects of ``flow`` in this thread; its result, or its exception."""
    answer: Any = None
    aborted = True
    try:
        while True:
            try:
                effect = flow.send(answer)
            except StopIteration as done:
                aborted = False
                return done.value
            answer = call.perform(effect)
    finally:
        call.finish(aborted)


async def run_async(flow: Flow, call: Call) -> Any:
    """``run_sync`` for the event loop: I/O in threads, waits and async computes awaited."""
    answer: Any = None
    aborted = True
    try:
        while True:
            try:
                effect = flow.send(answer)
            except StopIteration as done:
                aborted = False
                return done.value
            answer = await call.aperform(effect)
    finally:
        call.finish(aborted)


def as_async(compute: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """An async compute from a callable: awaited if it is async, else run in a thread."""
    from asgiref.sync import sync_to_async

    if inspect.iscoroutinefunction(compute):
        return compute

    async def run() -> Any:
        result = await sync_to_async(compute)()
        if inspect.isawaitable(result):
            result = await result
        return result

    return run


def as_sync(compute: Callable[[], Any]) -> Callable[[], Any]:
    """A sync compute from a callable that may be async (for background refreshes)."""
    from asgiref.sync import async_to_sync

    if inspect.iscoroutinefunction(compute):
        return async_to_sync(compute)
    return compute
