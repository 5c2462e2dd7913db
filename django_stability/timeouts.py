"""Timeouts: a deadline for guarded code, passed down to what can really time out.

Python cannot stop a running thread. So a timeout here is one of two honest things:

* **A deadline.** ``with timeout(2):`` (and every guard) sets a deadline in a
  context variable. Code under it that supports real timeouts reads it: the
  outbound HTTP session (connect and read timeouts, name resolution),
  PostgreSQL (``statement_timeout``, set per query while a deadline is on) and
  Redis through ``DeadlineConnection`` (socket timeouts). The block itself is
  not interrupted: code that ignores the deadline runs to its end.
* **A worker thread.** ``timeout(2)(fn)`` / ``timeout(2).call(fn)`` runs a
  synchronous ``fn`` in a daemon thread and releases the caller at the deadline
  with ``DeadlineExceeded``. The abandoned work runs on until it ends by itself;
  it keeps its slot in a bulkhead meanwhile, so a hung dependency can tie up at
  most that bulkhead's ``max_concurrent`` threads (then calls are refused at
  once with ``BulkheadFull``), and never more than ``GUARD_TIMEOUT_THREADS``
  threads in the whole process. The work runs in another thread, so it has its
  own database connection (closed when it ends) and is outside the caller's
  transaction.

Coroutines are cancelled for real: ``timeout(2)`` on an ``async def`` awaits it
with ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

import redis
from django.db.backends.signals import connection_created

from .bulkhead import Bulkhead, get_bulkhead
from .bulkhead import register_spec as register_bulkhead
from .callables import is_async
from .conf import settings
from .exceptions import BulkheadFull, DeadlineExceeded

logger = logging.getLogger("django_stability.timeouts")

P = ParamSpec("P")
R = TypeVar("R")

#: The deadline of the code running now, on the ``time.monotonic()`` clock.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "stability_deadline", default=None
)


def current_deadline() -> float | None:
    """The deadline in force (``time.monotonic()`` seconds), or None."""
    return _deadline.get()


def remaining() -> float | None:
    """Seconds left before the deadline in force (may be negative), or None when there is none."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def bounded(seconds: float | None) -> float | None:
    """``seconds`` capped by the time left before the deadline (None: no bound at all)."""
    left = remaining()
    if left is None:
        return seconds
    left = max(left, 0.0)
    return left if seconds is None else min(seconds, left)


#: The tokens of the deadlines entered in this context, innermost last.
_entered: contextvars.ContextVar[tuple[contextvars.Token[float | None], ...]] = (
    contextvars.ContextVar("stability_deadline_tokens", default=())
)


class deadline:
    """Set a deadline ``seconds`` from now for the code inside (never later than one in force).

    A context manager (sync and async); it does not interrupt the block, it
    tells the code inside how long it has. One object may be entered by many
    threads and tasks at once, and re-entered.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> deadline:
        at = time.monotonic() + self.seconds
        current = _deadline.get()
        token = _deadline.set(at if current is None else min(at, current))
        _entered.set((*_entered.get(), token))
        return self

    def __exit__(self, *exc: Any) -> None:
        tokens = _entered.get()
        _entered.set(tokens[:-1])
        _deadline.reset(tokens[-1])

    async def __aenter__(self) -> deadline:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.__exit__(*exc)


# Running synchronous work in a thread the caller can leave behind ---------------------

_threads_lock = threading.Lock()
_threads_running = 0


class _Outcome:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


def _work(
    context: contextvars.Context,
    at: float,
    fn: Callable[..., Any],
    args: Any,
    kwargs: Any,
    outcome: _Outcome,
    on_end: Callable[[], None],
) -> None:
    global _threads_running
    try:
        outcome.value = context.run(_under_deadline, at, fn, args, kwargs)
    except BaseException as error:
        outcome.error = error
    finally:
        outcome.done.set()
        try:
            # The thread is done with the database: close its own connections.
            from django.db import connections

            connections.close_all()
        except Exception:  # pragma: no cover - never let cleanup hide the work's result
            logger.debug("Closing the worker thread's database connections failed", exc_info=True)
        on_end()
        with _threads_lock:
            _threads_running -= 1


def _under_deadline(at: float, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    current = _deadline.get()
    token = _deadline.set(at if current is None else min(at, current))
    try:
        return fn(*args, **kwargs)
    finally:
        _deadline.reset(token)


def run_in_thread(
    fn: Callable[..., R],
    args: Any,
    kwargs: Any,
    seconds: float,
    *,
    name: str,
    on_end: Callable[[], None] = lambda: None,
) -> R:
    """Run ``fn`` in a daemon thread; wait ``seconds`` at most, then raise ``DeadlineExceeded``.

    ``on_end`` runs in the worker when ``fn`` really ends (after the caller left,
    if it timed out): that is where a bulkhead slot is given back. Refuses with
    ``BulkheadFull`` when ``GUARD_TIMEOUT_THREADS`` workers are already running.
    """
    global _threads_running
    with _threads_lock:
        if _threads_running >= settings.GUARD_TIMEOUT_THREADS:
            on_end()
            raise BulkheadFull(
                f"{_threads_running} timed calls are still running in this process "
                "(GUARD_TIMEOUT_THREADS); refusing to start another.",
                policy=name,
            )
        _threads_running += 1
    at = time.monotonic() + seconds
    outcome = _Outcome()
    worker = threading.Thread(
        target=_work,
        args=(contextvars.copy_context(), at, fn, args, kwargs, outcome, on_end),
        name=f"stability-timeout:{name}",
        daemon=True,
    )
    try:
        worker.start()
    except BaseException:
        with _threads_lock:
            _threads_running -= 1
        on_end()
        raise
    if not outcome.done.wait(max(0.0, at - time.monotonic())):
        raise DeadlineExceeded(
            f"{name} did not finish within {seconds:g} s; the caller was released and the "
            "work goes on in a background thread until it ends.",
            policy=name,
        )
    if outcome.error is not None:
        raise outcome.error
    return cast(R, outcome.value)


def _after_fork() -> None:
    # Threads do not survive a fork: the child starts with none running.
    global _threads_lock, _threads_running
    _threads_lock = threading.Lock()
    _threads_running = 0


os.register_at_fork(after_in_child=_after_fork)


def running_threads() -> int:
    """Worker threads of ``timeout()`` running now in this process (abandoned ones included)."""
    return _threads_running


class timeout:
    """Bound the time a call may take. See the module docstring for what that means.

    * ``with timeout(2):`` sets a deadline for the code inside (sync or async).
    * ``@timeout(2)`` / ``timeout(2).call(fn, ...)`` on a synchronous callable
      runs it in a worker thread and releases the caller at the deadline; the
      work left behind holds a slot of the bulkhead named ``bulkhead`` (by
      default ``timeout:<module>.<function>``, 10 slots).
    * On a coroutine function, awaits it with real cancellation.
    """

    def __init__(self, seconds: float, *, bulkhead: str | Bulkhead | None = None) -> None:
        if not seconds > 0:
            raise ValueError(f"timeout() needs a number of seconds above 0, not {seconds!r}.")
        self.seconds = float(seconds)
        self.bulkhead = bulkhead
        self._deadline = deadline(self.seconds)

    def _bulkhead_for(self, fn: Callable[..., Any]) -> Bulkhead:
        if isinstance(self.bulkhead, Bulkhead):
            return self.bulkhead
        name = self.bulkhead or f"timeout:{fn.__module__}.{getattr(fn, '__qualname__', fn)}"
        register_bulkhead(name, {})
        return get_bulkhead(name)

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)`` in a worker thread; ``DeadlineExceeded`` at the deadline."""
        slots = self._bulkhead_for(fn)
        slot = slots.acquire()
        name = getattr(fn, "__qualname__", repr(fn))
        seconds = bounded(self.seconds) or 0.0
        if seconds <= 0:
            slots.release(slot)
            raise DeadlineExceeded(f"No time left to call {name}.", policy=slots.name)
        return run_in_thread(
            fn, args, kwargs, seconds, name=name, on_end=functools.partial(slots.release, slot)
        )

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``await fn(*args, **kwargs)``, cancelled at the deadline with ``DeadlineExceeded``."""
        return await await_within(fn(*args, **kwargs), self.seconds, name=_name_of(fn))

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        if is_async(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await self.acall(fn, *args, **kwargs)

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return self.call(fn, *args, **kwargs)

        return wrapper

    def __enter__(self) -> timeout:
        self._deadline.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._deadline.__exit__(*exc)

    async def __aenter__(self) -> timeout:
        self._deadline.__enter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._deadline.__exit__(*exc)


def _name_of(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", repr(fn)))


async def await_within(awaitable: Awaitable[R], seconds: float, *, name: str) -> R:
    """Await with a deadline (set for the code inside too); ``DeadlineExceeded`` when it passes."""
    seconds = bounded(seconds) or 0.0
    with deadline(seconds):
        try:
            return await asyncio.wait_for(awaitable, seconds)
        except (asyncio.TimeoutError, TimeoutError) as error:
            if isinstance(error, DeadlineExceeded):
                raise
            raise DeadlineExceeded(
                f"{name} did not finish within {seconds:g} s and was cancelled.", policy=name
            ) from None


# PostgreSQL: the deadline as statement_timeout ----------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_pg_duration(value: str) -> int:
    """A PostgreSQL duration setting (``0``, ``500ms``, ``5s``, ``1min``) in milliseconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", value)
    if match is None:
        raise ValueError(f"not a PostgreSQL duration: {value!r}")
    number, unit = match.groups()
    return round(float(number) * _UNITS_MS.get(unit or "ms", 1))


def _database_deadline(
    execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Django execute wrapper: the deadline in force becomes ``statement_timeout``."""
    left = remaining()
    connection = context["connection"]
    state: dict[str, int | None] = connection.__dict__.setdefault("_stability_timeouts", {})
    if left is None:
        if state.get("set") is not None:
            _run(connection, "SET statement_timeout TO DEFAULT")
            state["set"] = None
        return execute(sql, params, many, context)
    try:
        return _execute_within(execute, sql, params, many, context, state, left)
    except BaseException:
        # A rolled-back transaction takes our SET with it: do not trust what we set.
        state["set"] = _UNKNOWN
        raise


#: What we set is not known any more (the transaction may have undone it).
_UNKNOWN = -1


def _execute_within(
    execute: Callable[..., Any],
    sql: Any,
    params: Any,
    many: bool,
    context: dict[str, Any],
    state: dict[str, int | None],
    left: float,
) -> Any:
    if left <= 0:
        raise DeadlineExceeded("No time left before the deadline to run this query.")
    connection = context["connection"]
    if "default" not in state:
        state["default"] = parse_pg_duration(str(_run(connection, "SHOW statement_timeout")))
    wanted = max(1, int(left * 1000))
    default = state["default"] or 0
    if default and default <= wanted:
        # The connection's own statement_timeout is the tighter bound already.
        if state.get("set") is not None:
            _run(connection, "SET statement_timeout TO DEFAULT")
            state["set"] = None
        return execute(sql, params, many, context)
    if state.get("set") != wanted:
        _run(connection, f"SET statement_timeout = {int(wanted)}")
        state["set"] = wanted
    return execute(sql, params, many, context)


def _run(connection: Any, sql: str) -> Any:
    """Run ``sql`` on a cursor of its own (the query's may be a server-side cursor), without
    Django's wrappers; the first column of the first row, if any."""
    with connection.connection.cursor() as cursor:
        cursor.execute(sql)
        row = cursor.fetchone() if cursor.description else None
    return None if row is None else row[0]


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor != "postgresql" or not settings.GUARD_DATABASE_DEADLINES:
        return
    connection.__dict__["_stability_timeouts"] = {}
    if _database_deadline not in connection.execute_wrappers:
        connection.execute_wrappers.append(_database_deadline)


connection_created.connect(_on_connection_created, dispatch_uid="django_stability.deadlines")


# Redis: the deadline as socket timeouts ------------------------------------------------

_READ_TAKES_TIMEOUT = "timeout" in inspect.signature(redis.Connection.read_response).parameters


class DeadlineConnection(redis.Connection):
    """A redis-py connection whose waits are bounded by the deadline in force.

    Use it as the ``connection_class`` of a connection pool, e.g. for django-redis::

        "OPTIONS": {"CONNECTION_POOL_KWARGS": {"connection_class": DeadlineConnection}}

    Connecting and reading a reply then wait no longer than the deadline (and
    never longer than the connection's own timeouts).
    """

    def connect(self) -> None:
        left = remaining()
        if left is None or self._sock:
            super().connect()  # type: ignore[no-untyped-call]
            return
        if left <= 0:
            raise redis.TimeoutError("No time left before the deadline to connect to Redis.")
        own = self.socket_connect_timeout
        self.socket_connect_timeout = left if own is None else min(own, left)
        try:
            super().connect()  # type: ignore[no-untyped-call]
        finally:
            self.socket_connect_timeout = own

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        left = remaining()
        if left is None:
            return super().read_response(*args, **kwargs)
        if left <= 0:
            self.disconnect()  # type: ignore[no-untyped-call]  # a late reply would confuse it
            raise redis.TimeoutError("No time left before the deadline to read from Redis.")
        own = kwargs.get("timeout", self.socket_timeout)
        bound = left if not isinstance(own, (int, float)) else min(own, left)
        if _READ_TAKES_TIMEOUT:
            kwargs["timeout"] = bound
            return super().read_response(*args, **kwargs)
        sock = self._sock
        if sock is not None:
            sock.settimeout(bound)
        try:
            return super().read_response(*args, **kwargs)
        finally:
            if self._sock is not None:
                self._sock.settimeout(self.socket_timeout)
