"""Bulkheads: at most N calls to one dependency at a time.

A slow dependency holds every thread that calls it; a bulkhead caps how many
may, so the rest of the site keeps its threads. A call over the cap waits up
to ``max_wait`` seconds for a slot (0: not at all) and is then refused with
``BulkheadFull``.

Scopes. ``process``: slots counted in this process, shared by its threads and
its asyncio tasks (a slot given back by a thread wakes a waiting task, and the
other way round). ``cluster``: slots are leases in the store with a TTL, so the
cap holds across every process, and a process that dies gives its slots back
when their leases run out; each acquire and each release is one round trip.

Modes: ``enforce``; ``shadow`` (never refuses; counts and reports the calls it
would have refused); ``off``.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

from . import signals
from .callables import reject_celery_task, wrap_calls
from .conf import settings_reset
from .exceptions import BulkheadFull, StoreUnavailable
from .policies import PolicySpec, parse_float, parse_int, registry, spec_field

P = ParamSpec("P")
R = TypeVar("R")

PROCESS, CLUSTER = "process", "cluster"


@registry.register_kind
@dataclass(frozen=True)
class BulkheadSpec(PolicySpec):
    """A bulkhead: how many calls to a dependency may be in progress at once."""

    kind = "bulkhead"
    verbose_name = "bulkhead"
    admin_class = "django_stability.integration_admin.BulkheadAdmin"

    max_concurrent: int = spec_field(
        10,
        help="Calls allowed in progress at once (in this process, or across all of them for "
        "a cluster bulkhead).",
        parse=lambda raw: parse_int(raw, minimum=1),
        format="a whole number of at least 1",
    )
    max_wait: float = spec_field(
        0.0,
        help="Seconds a call may wait for a slot before it is refused; 0 refuses at once.",
        parse=lambda raw: parse_float(raw, minimum=0.0),
        format="seconds, 0 or more, e.g. 0.1",
    )
    scope: str = spec_field(
        PROCESS,
        choices=(PROCESS, CLUSTER),
        help="process: slots counted in this process; cluster: slots are leases in the store, "
        "shared by every process.",
    )
    lease_ttl: float = spec_field(
        60.0,
        help="Cluster scope: seconds after which the slot of a call that never gave it back "
        "(a killed process) is free again. Keep it above the longest call.",
        parse=lambda raw: parse_float(raw, minimum=0.001),
        format="seconds above 0",
    )
    mode: str = spec_field(
        "enforce",
        choices=("enforce", "shadow", "off"),
        help="enforce refuses over the cap; shadow counts and reports but lets calls through; "
        "off does nothing.",
    )
    on_store_failure: str = spec_field(
        "open",
        choices=("open", "closed"),
        help="Cluster scope, when the store cannot be reached: open caps calls per process, "
        "closed refuses them.",
    )


class Slot:
    """One of the slots of a bulkhead, held by one call; give it back with ``release()``."""

    __slots__ = ("holder", "local", "released")

    def __init__(self, local: bool, holder: str | None = None) -> None:
        #: True when the slot counts in this process's slots.
        self.local = local
        #: The lease holder in the store (cluster scope).
        self.holder = holder
        self.released = False


_FREE = Slot(local=False)


class _Waiter:
    __slots__ = ("event", "future", "granted", "loop")

    def __init__(
        self,
        event: threading.Event | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[None] | None = None,
    ) -> None:
        self.event = event
        self.loop = loop
        self.future = future
        self.granted = False


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class LocalSlots:
    """Counted slots shared by threads and asyncio tasks, handed over first come, first served."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_use = 0
        self.waiters: deque[_Waiter] = deque()

    def take_now(self, limit: int) -> bool:
        """Lock held: a free slot, if there is one and nobody is queued for it."""
        if self.in_use < limit and not self.waiters:
            self.in_use += 1
            return True
        return False

    def take(self, limit: int, wait: float) -> bool:
        with self.lock:
            if self.take_now(limit):
                return True
            if wait <= 0:
                return False
            waiter = _Waiter(event=threading.Event())
            self.waiters.append(waiter)
        assert waiter.event is not None
        waiter.event.wait(wait)
        with self.lock:
            if waiter.granted:
                return True
            self.waiters.remove(waiter)
            return False

    async def atake(self, limit: int, wait: float) -> bool:
        loop = asyncio.get_running_loop()
        with self.lock:
            if self.take_now(limit):
                return True
            if wait <= 0:
                return False
            future: asyncio.Future[None] = loop.create_future()
            waiter = _Waiter(loop=loop, future=future)
            self.waiters.append(waiter)
        try:
            await asyncio.wait_for(future, wait)
        except (asyncio.TimeoutError, TimeoutError):
            pass
        except BaseException:
            # Cancelled while waiting: a slot handed over meanwhile goes to the next one.
            with self.lock:
                if waiter.granted:
                    self.give_back_locked(limit)
                else:
                    self.waiters.remove(waiter)
            raise
        with self.lock:
            if waiter.granted:
                return True
            self.waiters.remove(waiter)
            return False

    def give_back(self, limit: int) -> None:
        with self.lock:
            self.give_back_locked(limit)

    def give_back_locked(self, limit: int) -> None:
        while self.waiters and self.in_use <= limit:
            waiter = self.waiters.popleft()
            try:
                if waiter.event is not None:
                    waiter.event.set()
                else:
                    assert waiter.loop is not None and waiter.future is not None
                    waiter.loop.call_soon_threadsafe(_resolve, waiter.future)
            except RuntimeError:
                continue  # its event loop is closed: nobody waits there any more
            waiter.granted = True  # the slot passes to it as it is
            return
        self.in_use = max(0, self.in_use - 1)


@dataclass(frozen=True)
class BulkheadMetrics:
    """What a bulkhead knows now."""

    name: str
    scope: str
    mode: str
    limit: int
    in_use: int
    waiting: int
    refused: int
    #: Cluster scope: leases held across all processes (None in process scope or when unknown).
    cluster_in_use: int | None


class Bulkhead:
    """The bulkhead named ``name`` in this process (one object per name).

    Use it as a decorator (sync or async callables), with ``call()``/``acall()``,
    as a context manager, or with ``acquire()``/``release()`` when the slot must
    outlive the caller (``timeout()`` hands it to the thread doing the work).
    """

    def __init__(self, name: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        self.key = f"bulkhead:{name}"
        self._entered: contextvars.ContextVar[tuple[Slot, ...]] = contextvars.ContextVar(
            f"stability_bulkhead_{name}", default=()
        )
        self._setup()

    def _setup(self) -> None:
        self.slots = LocalSlots()
        self.refused = 0

    @property
    def spec(self) -> BulkheadSpec:
        """The policy this bulkhead decides with now."""
        return registry.get(BulkheadSpec, self.name) or BulkheadSpec(name=self.name)

    # Taking and giving back ------------------------------------------------------------

    def acquire(self, wait: float | None = None, *, ttl: float | None = None) -> Slot:
        """A slot, waiting up to ``wait`` (default: the policy's ``max_wait``), or ``BulkheadFull``.

        ``ttl`` lengthens the lease of a cluster slot for a call known to last long.
        """
        spec = self.spec
        if spec.mode == "off":
            return _FREE
        wait = spec.max_wait if wait is None else wait
        if spec.scope == CLUSTER:
            return self._acquire_lease(spec, wait, ttl)
        if self.slots.take(spec.max_concurrent, wait):
            return Slot(local=True)
        return self._over_cap(spec)

    async def aacquire(self, wait: float | None = None, *, ttl: float | None = None) -> Slot:
        """``acquire()`` for async code: waits without blocking the event loop."""
        spec = self.spec
        if spec.mode == "off":
            return _FREE
        wait = spec.max_wait if wait is None else wait
        if spec.scope == CLUSTER:
            return await asyncio.to_thread(self._acquire_lease, spec, wait, ttl)
        if await self.slots.atake(spec.max_concurrent, wait):
            return Slot(local=True)
        return self._over_cap(spec)

    def release(self, slot: Slot) -> None:
        """Give a slot back (a second release of the same slot does nothing)."""
        if slot.released or slot is _FREE:
            return
        slot.released = True
        if slot.holder is not None:
            from .store import get_store

            get_store().release_lease(self.key, slot.holder)
            self.slots.give_back(10**9)
        elif slot.local:
            self.slots.give_back(self.spec.max_concurrent)

    def _over_cap(self, spec: BulkheadSpec) -> Slot:
        self.refused += 1
        shadow = spec.mode == "shadow"
        signals.bulkhead_full.send(
            sender=Bulkhead,
            name=self.name,
            limit=spec.max_concurrent,
            scope=spec.scope,
            shadow=shadow,
        )
        if shadow:
            return _FREE  # let through, holding no slot
        raise BulkheadFull(
            f"The bulkhead {self.name!r} is full: {spec.max_concurrent} calls to this "
            "dependency are in progress.",
            policy=self.name,
        )

    def _acquire_lease(self, spec: BulkheadSpec, wait: float, ttl: float | None) -> Slot:
        from .store import get_store

        store = get_store()
        holder = uuid.uuid4().hex
        lease_ttl = max(spec.lease_ttl, ttl or 0.0)
        deadline = self.clock() + wait
        pause = 0.005
        while True:
            lease = store.acquire_lease(self.key, holder, spec.max_concurrent, lease_ttl)
            if lease.degraded and spec.on_store_failure == "closed":
                raise StoreUnavailable(policy=self.name)
            if lease.acquired:
                with self.slots.lock:
                    self.slots.in_use += 1  # for the metrics of this process
                return Slot(local=False, holder=holder)
            if self.clock() + pause > deadline:
                return self._over_cap(spec)
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    # Calling ---------------------------------------------------------------------------

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)`` holding a slot."""
        slot = self.acquire()
        try:
            return fn(*args, **kwargs)
        finally:
            self.release(slot)

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``await fn(*args, **kwargs)`` holding a slot."""
        slot = await self.aacquire()
        try:
            return await fn(*args, **kwargs)
        finally:
            await self.arelease(slot)

    async def arelease(self, slot: Slot) -> None:
        """``release()`` for async code: a cluster slot is given back from a worker thread."""
        if slot.holder is not None:
            await asyncio.to_thread(self.release, slot)
        else:
            self.release(slot)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a callable (sync or async): every call holds a slot while it runs."""
        reject_celery_task(fn, f"@bulkhead({self.name!r})")
        return cast(Callable[P, R], wrap_calls(fn, self.call, self.acall, "bulkhead", self))

    def __enter__(self) -> Bulkhead:
        self._entered.set((*self._entered.get(), self.acquire()))
        return self

    def __exit__(self, *exc: Any) -> None:
        stack = self._entered.get()
        self._entered.set(stack[:-1])
        self.release(stack[-1])

    async def __aenter__(self) -> Bulkhead:
        self._entered.set((*self._entered.get(), await self.aacquire()))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        stack = self._entered.get()
        self._entered.set(stack[:-1])
        await self.arelease(stack[-1])

    # Operating -------------------------------------------------------------------------

    def metrics(self) -> BulkheadMetrics:
        """Slots in use and waiting in this process; leases in the store for cluster scope."""
        spec = self.spec
        cluster_in_use = None
        if spec.scope == CLUSTER:
            from .store import get_store

            cluster_in_use = get_store().count_leases(self.key)
        with self.slots.lock:
            in_use, waiting = self.slots.in_use, len(self.slots.waiters)
        return BulkheadMetrics(
            self.name,
            spec.scope,
            spec.mode,
            spec.max_concurrent,
            in_use,
            waiting,
            self.refused,
            cluster_in_use,
        )

    def forget(self) -> None:
        """Drop all state, locks included (settings changed; a forked child)."""
        self._setup()


# Every bulkhead of this process, by name ---------------------------------------------

_bulkheads: dict[str, Bulkhead] = {}
_bulkheads_lock = threading.Lock()


def get_bulkhead(name: str) -> Bulkhead:
    """The bulkhead named ``name`` in this process, made on first use."""
    found = _bulkheads.get(name)
    if found is None:
        with _bulkheads_lock:
            found = _bulkheads.get(name)
            if found is None:
                found = _bulkheads[name] = Bulkhead(name)
    return found


def bulkheads() -> dict[str, Bulkhead]:
    """A copy of the bulkheads this process has made, by name."""
    return dict(_bulkheads)


def register_spec(name: str, fields: dict[str, Any]) -> None:
    """Record code defaults for the bulkhead ``name`` (validated; a bad value raises)."""
    if fields:
        spec = BulkheadSpec.build(name, fields)
        # The same values again (a decorator applied per call) change nothing.
        if registry.code_defaults().get((BulkheadSpec.kind, name)) != spec:
            registry.register(spec)
    elif registry.code_default(BulkheadSpec, name) is None:
        registry.register(BulkheadSpec(name=name))


def bulkhead(name: str, **fields: Any) -> Bulkhead:
    """The bulkhead named ``name``, with code defaults for its policy.

    ``fields`` are those of ``BulkheadSpec`` (``max_concurrent=5``,
    ``max_wait=0.1``, ``scope="cluster"``...); settings and the admin may
    override each. Use it as a decorator, a context manager, or through
    ``call()``/``acall()``::

        @bulkhead("reports", max_concurrent=4)
        def build_report(...): ...
    """
    register_spec(name, fields)
    return get_bulkhead(name)


def _forget_all(*args: Any, **kwargs: Any) -> None:
    for found in list(_bulkheads.values()):
        found.forget()


def _after_fork() -> None:
    # A lock held by another thread at the fork would stay held in the child.
    global _bulkheads_lock
    _bulkheads_lock = threading.Lock()
    _forget_all()


settings_reset.connect(_forget_all, dispatch_uid="django_stability.bulkhead.reset")
os.register_at_fork(after_in_child=_after_fork)
