"""``guard(name)``: every defence of an integration point, composed in one order.

From the outside in::

    fallback( retry( breaker( bulkhead( timeout( call ) ) ) ) )

1. **Fallback**, outermost: whatever went wrong below (the dependency failed,
   or a defence refused the call), the caller gets the fallback's answer if
   there is one: a callable given the call's arguments, or ``"last_good"``,
   the last value this call returned, kept in the cache.
2. **Retry**, for calls marked idempotent only, with capped exponential
   backoff and full jitter, honouring ``Retry-After``, within a retry budget
   (about 10% of calls). Each attempt goes through the layers below again, so
   a retry after the breaker opened is refused at once, and refusals (open
   breaker, full bulkhead) are never retried.
3. **Circuit breaker**, per attempt: refuses at once while the dependency is
   failing; records each attempt's outcome (a timeout counts as a failure; a
   full bulkhead counts as nothing, the call never reached the dependency).
4. **Bulkhead**: at most N attempts in progress. Inside the breaker, so an
   open breaker costs no slot.
5. **Timeout**, innermost, per attempt: the deadline passed down to the HTTP
   client, PostgreSQL and Redis (``timeout_mode="deadline"``), or the attempt
   run in a worker thread that the caller leaves at the deadline
   (``timeout_mode="thread"``), whose bulkhead slot is held until the work
   really ends. ``total_timeout`` bounds all attempts and waits together.

Use it as a decorator, through ``call()``/``acall()``, or as a context manager
(``with guard("payments"):``), which applies the breaker, the bulkhead and the
deadline to the block but cannot retry it or replace its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import inspect
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

from django.core.exceptions import ValidationError

from .breaker import (
    FAILURE,
    IGNORED,
    SUCCESS,
    CircuitBreaker,
    Permit,
    Rule,
    get_breaker,
    matches,
    remember_guarded,
)
from .breaker import register_spec as register_breaker_spec
from .bulkhead import Bulkhead, Slot, get_bulkhead
from .bulkhead import register_spec as register_bulkhead_spec

# (By name: the package's ``bulkhead`` and ``guard`` are the functions, not these modules.)
from .callables import reject_celery_task, wrap_calls
from .conf import settings_reset
from .exceptions import BreakerOpen, BulkheadFull, DeadlineExceeded, StabilityError
from .policies import PolicySpec, parse_float, parse_int, registry, spec_field
from .retry import backoff_delay, forget_budgets, get_budget, retry_after_of
from .timeouts import await_within, bounded, deadline, remaining, run_in_thread

logger = logging.getLogger("django_stability.guard")

P = ParamSpec("P")
R = TypeVar("R")

#: ``fallback=LAST_GOOD``: answer with the last value the call returned (kept in the cache).
LAST_GOOD = "last_good"


def _seconds_or_none(raw: Any) -> float:
    value = parse_float(raw, minimum=0.0)
    return value


@registry.register_kind
@dataclass(frozen=True)
class GuardSpec(PolicySpec):
    """A guard: how one integration point is called (see the module docstring for the order)."""

    kind = "guard"
    verbose_name = "guard"

    mode: str = spec_field(
        "enforce",
        choices=("enforce", "off"),
        help="enforce applies every layer; off calls the dependency directly (an escape hatch).",
    )
    timeout: float = spec_field(
        5.0,
        help="Seconds each attempt may take; 0 sets no per-attempt timeout.",
        parse=_seconds_or_none,
        format="seconds, 0 or more, e.g. 2.5",
    )
    timeout_mode: str = spec_field(
        "deadline",
        choices=("deadline", "thread"),
        help="deadline passes the timeout down to the HTTP client, PostgreSQL and Redis; "
        "thread also runs the attempt in a worker thread and releases the caller at the "
        "deadline (the abandoned work keeps its bulkhead slot until it ends).",
    )
    total_timeout: float = spec_field(
        0.0,
        help="Seconds all attempts and the waits between them may take together; 0: no bound "
        "beyond the per-attempt timeout.",
        parse=_seconds_or_none,
        format="seconds, 0 or more",
    )
    idempotent: bool = spec_field(
        False,
        help="Whether the call may be made twice with the same effect; only such calls are "
        "retried.",
    )
    retries: int = spec_field(
        2,
        help="Retries after the first attempt, for idempotent calls.",
        parse=lambda raw: parse_int(raw, minimum=0),
        format="a whole number, 0 or more",
    )
    backoff: float = spec_field(
        0.1,
        help="Seconds of the first backoff; each retry doubles it (with full jitter).",
        parse=_seconds_or_none,
        format="seconds, 0 or more, e.g. 0.1",
    )
    backoff_max: float = spec_field(
        2.0,
        help="The longest backoff, in seconds.",
        parse=_seconds_or_none,
        format="seconds, 0 or more",
    )
    max_retry_after: float = spec_field(
        5.0,
        help="A Retry-After longer than this many seconds is not waited for: the call fails "
        "(or falls back) instead.",
        parse=_seconds_or_none,
        format="seconds, 0 or more",
    )
    retry_budget: float = spec_field(
        0.1,
        help="Retries may be at most this share of the calls of the last 10 seconds (per "
        "process), e.g. 0.1 for 10%.",
        parse=lambda raw: parse_float(raw, minimum=0.0),
        format="a share between 0 and 1, e.g. 0.1",
    )
    retry_budget_minimum: int = spec_field(
        3,
        help="Retries allowed per 10 seconds whatever the number of calls (so that a quiet "
        "dependency can be retried at all).",
        parse=lambda raw: parse_int(raw, minimum=0),
        format="a whole number, 0 or more",
    )
    use_breaker: bool = spec_field(
        True, help="Apply the circuit breaker of the same name (its own policy)."
    )
    use_bulkhead: bool = spec_field(
        True, help="Apply the bulkhead of the same name (its own policy)."
    )
    last_good_ttl: float = spec_field(
        24 * 3600.0,
        help="With fallback='last_good': seconds the last good value is kept in the cache.",
        parse=lambda raw: parse_float(raw, minimum=1.0),
        format="seconds, at least 1",
    )

    def check(self) -> None:
        if self.retry_budget > 1:
            raise ValidationError({"retry_budget": "Expected a share between 0 and 1."})
        if self.backoff_max < self.backoff:
            raise ValidationError({"backoff_max": "Expected at least backoff."})


#: Refusals made by a defence: never retried.
REFUSALS: tuple[type[BaseException], ...] = (BreakerOpen, BulkheadFull)


class Guard:
    """One integration point, guarded. Made by ``guard()``; see the module docstring.

    The object carries what belongs to a call site (the fallback, the cache
    key, whether this call is idempotent); the breaker, the bulkhead and the
    retry budget are shared by every guard of the same name in the process.
    """

    def __init__(
        self,
        name: str,
        *,
        fallback: Callable[..., Any] | str | None = None,
        cache_key: Callable[..., str] | None = None,
        idempotent: bool | None = None,
        failure_result: Callable[[Any], bool] | None = None,
        retry_on: tuple[Rule, ...] | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        random: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fallback is not None and fallback != LAST_GOOD and not callable(fallback):
            raise ValueError(
                f"guard({name!r}) fallback must be a callable or {LAST_GOOD!r}, not {fallback!r}."
            )
        self.name = name
        self.fallback = fallback
        self.cache_key = cache_key
        self.idempotent = idempotent
        self.failure_result = failure_result
        self.retry_on = retry_on
        self.sleep = sleep
        self.random = random
        self.clock = clock
        self._entered: contextvars.ContextVar[tuple[tuple[Any, ...], ...]] = contextvars.ContextVar(
            f"stability_guard_{name}", default=()
        )

    @property
    def spec(self) -> GuardSpec:
        """The policy this guard applies now."""
        return registry.get(GuardSpec, self.name) or GuardSpec(name=self.name)

    @property
    def breaker(self) -> CircuitBreaker:
        return get_breaker(self.name)

    @property
    def bulkhead(self) -> Bulkhead:
        return get_bulkhead(self.name)

    # Sync --------------------------------------------------------------------------------

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)`` through every layer of the guard."""
        spec = self.spec
        if spec.mode == "off":
            return fn(*args, **kwargs)
        ends_at = self._ends_at(spec)
        budget = get_budget(self.name)
        budget.record_call()
        attempt = 0
        while True:
            try:
                with self._total(ends_at):
                    result = self._attempt(spec, fn, args, kwargs, ends_at)
            except Exception as error:
                wait = self._retry_wait(spec, attempt, error, ends_at)
                if wait is None:
                    return cast(R, self._fall_back(error, args, kwargs))
                self.sleep(wait)
                attempt += 1
                continue
            if self._failed_result(result):
                wait = self._retry_wait(spec, attempt, result, ends_at)
                if wait is not None:
                    self.sleep(wait)
                    attempt += 1
                    continue
                return cast(R, self._fall_back_result(result, args, kwargs))
            self._remember(spec, result, args, kwargs)
            return result

    def _attempt(
        self, spec: GuardSpec, fn: Callable[..., R], args: Any, kwargs: Any, ends_at: float | None
    ) -> R:
        seconds = self._attempt_seconds(spec, ends_at)
        breaker = self.breaker if spec.use_breaker else None
        permit = breaker.acquire() if breaker is not None else None
        start = self.clock()
        try:
            result = self._bulkheaded(spec, fn, args, kwargs, seconds)
        except BaseException as error:
            if breaker is not None and permit is not None:
                breaker.finish(permit, self.clock() - start, breaker.classify(error))
            raise
        if breaker is not None and permit is not None:
            breaker.finish(permit, self.clock() - start, self._result_outcome(breaker, result))
        return result

    def _bulkheaded(
        self, spec: GuardSpec, fn: Callable[..., R], args: Any, kwargs: Any, seconds: float | None
    ) -> R:
        slots = self.bulkhead if spec.use_bulkhead else None
        slot = slots.acquire(ttl=(seconds or 0) + 1) if slots is not None else None
        release: Callable[[], None] = (
            functools.partial(slots.release, slot)
            if slots is not None and slot is not None
            else _nothing
        )
        if seconds is not None and spec.timeout_mode == "thread":
            # The worker gives the slot back when the work really ends.
            return run_in_thread(fn, args, kwargs, seconds, name=self.name, on_end=release)
        try:
            if seconds is None:
                return fn(*args, **kwargs)
            with deadline(seconds):
                return fn(*args, **kwargs)
        finally:
            release()

    # Async -------------------------------------------------------------------------------

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``await fn(*args, **kwargs)`` through every layer; timeouts cancel for real."""
        spec = self.spec
        if spec.mode == "off":
            return await fn(*args, **kwargs)
        ends_at = self._ends_at(spec)
        budget = get_budget(self.name)
        budget.record_call()
        attempt = 0
        while True:
            try:
                with self._total(ends_at):
                    result = await self._aattempt(spec, fn, args, kwargs, ends_at)
            except Exception as error:
                wait = self._retry_wait(spec, attempt, error, ends_at)
                if wait is None:
                    return cast(R, await self._afall_back(error, args, kwargs))
                await asyncio.sleep(wait)
                attempt += 1
                continue
            if self._failed_result(result):
                wait = self._retry_wait(spec, attempt, result, ends_at)
                if wait is not None:
                    await asyncio.sleep(wait)
                    attempt += 1
                    continue
                return cast(R, await self._afall_back_result(result, args, kwargs))
            if self.fallback == LAST_GOOD:
                await asyncio.to_thread(self._remember, spec, result, args, kwargs)
            return result

    async def _aattempt(
        self,
        spec: GuardSpec,
        fn: Callable[..., Awaitable[R]],
        args: Any,
        kwargs: Any,
        ends_at: float | None,
    ) -> R:
        seconds = self._attempt_seconds(spec, ends_at)
        breaker = self.breaker if spec.use_breaker else None
        permit = await breaker.aacquire() if breaker is not None else None
        start = self.clock()
        try:
            slots = self.bulkhead if spec.use_bulkhead else None
            slot = await slots.aacquire(ttl=(seconds or 0) + 1) if slots is not None else None
            try:
                if seconds is None:
                    result = await fn(*args, **kwargs)
                else:
                    result = await await_within(fn(*args, **kwargs), seconds, name=self.name)
            finally:
                if slots is not None and slot is not None:
                    await slots.arelease(slot)
        except BaseException as error:
            if breaker is not None and permit is not None:
                await breaker.afinish(permit, self.clock() - start, breaker.classify(error))
            raise
        if breaker is not None and permit is not None:
            outcome = self._result_outcome(breaker, result)
            await breaker.afinish(permit, self.clock() - start, outcome)
        return result

    # Shared rules ----------------------------------------------------------------------

    def _ends_at(self, spec: GuardSpec) -> float | None:
        ends_at = self.clock() + spec.total_timeout if spec.total_timeout > 0 else None
        left = remaining()
        if left is not None:
            # An enclosing deadline (a view's, another guard's) bounds this one too.
            outer = self.clock() + left
            ends_at = outer if ends_at is None else min(ends_at, outer)
        return ends_at

    def _total(self, ends_at: float | None) -> contextlib.AbstractContextManager[Any]:
        if ends_at is None:
            return contextlib.nullcontext()
        return deadline(max(0.0, ends_at - self.clock()))

    def _attempt_seconds(self, spec: GuardSpec, ends_at: float | None) -> float | None:
        seconds = spec.timeout if spec.timeout > 0 else None
        if ends_at is not None:
            left = ends_at - self.clock()
            if left <= 0:
                raise DeadlineExceeded(
                    f"The guard {self.name!r} ran out of time before another attempt.",
                    policy=self.name,
                )
            seconds = left if seconds is None else min(seconds, left)
        return bounded(seconds)

    def _result_outcome(self, breaker: CircuitBreaker, result: Any) -> str:
        if self._failed_result(result):
            return FAILURE
        return breaker.classify_result(result)

    def _failed_result(self, result: Any) -> bool:
        failure_result = self.failure_result
        return failure_result is not None and bool(failure_result(result))

    def _is_failure(self, error: BaseException) -> bool:
        """Does ``error`` say the dependency failed (rather than the call being wrong)?"""
        if isinstance(error, StabilityError):
            return True  # a refusal or a timeout: the dependency is not answering well
        if self.spec.use_breaker:
            return self.breaker.classify(error) == FAILURE
        return isinstance(error, Exception)

    def _retry_wait(
        self, spec: GuardSpec, attempt: int, outcome: Any, ends_at: float | None
    ) -> float | None:
        """Seconds to wait before retrying, or None when this must not be retried."""
        idempotent = spec.idempotent if self.idempotent is None else self.idempotent
        if not idempotent or attempt >= spec.retries:
            return None
        if isinstance(outcome, BaseException):
            if isinstance(outcome, REFUSALS) or not isinstance(outcome, Exception):
                return None
            if self.retry_on is not None:
                if not any(matches(rule, outcome) for rule in self.retry_on):
                    return None
            elif not self._is_failure(outcome):
                return None
        wait = backoff_delay(attempt, spec.backoff, spec.backoff_max, self.random)
        asked = retry_after_of(outcome)
        if asked is not None:
            if asked > spec.max_retry_after:
                return None
            wait = max(wait, asked)
        if ends_at is not None and self.clock() + wait >= ends_at:
            return None
        if not get_budget(self.name).try_spend(spec.retry_budget, spec.retry_budget_minimum):
            logger.debug("Guard %r: retry budget spent; not retrying.", self.name)
            return None
        return wait

    # Fallback ----------------------------------------------------------------------------

    def _fall_back(self, error: Exception, args: Any, kwargs: Any) -> Any:
        if self.fallback is None or not self._is_failure(error):
            raise error
        if self.fallback == LAST_GOOD:
            found, value = self._last_good(args, kwargs)
            if not found:
                raise error
            return value
        assert callable(self.fallback)
        return self.fallback(*args, **kwargs)

    def _fall_back_result(self, result: Any, args: Any, kwargs: Any) -> Any:
        if self.fallback is None:
            return result  # the caller sees the failed result (e.g. the 503 response)
        if self.fallback == LAST_GOOD:
            found, value = self._last_good(args, kwargs)
            return value if found else result
        assert callable(self.fallback)
        return self.fallback(*args, **kwargs)

    async def _afall_back(self, error: Exception, args: Any, kwargs: Any) -> Any:
        if self.fallback is None or not self._is_failure(error):
            raise error
        if self.fallback == LAST_GOOD:
            found, value = await asyncio.to_thread(self._last_good, args, kwargs)
            if not found:
                raise error
            return value
        assert callable(self.fallback)
        value = self.fallback(*args, **kwargs)
        return await value if inspect.isawaitable(value) else value

    async def _afall_back_result(self, result: Any, args: Any, kwargs: Any) -> Any:
        if self.fallback is None:
            return result
        if self.fallback == LAST_GOOD:
            found, value = await asyncio.to_thread(self._last_good, args, kwargs)
            return value if found else result
        assert callable(self.fallback)
        value = self.fallback(*args, **kwargs)
        return await value if inspect.isawaitable(value) else value

    def last_good_key(self, args: Any, kwargs: Any) -> str:
        """The cache key of the last good value of a call with these arguments."""
        if self.cache_key is not None:
            part = str(self.cache_key(*args, **kwargs))
        else:
            part = repr((tuple(args), sorted(kwargs.items())))
        digest = hashlib.sha256(part.encode()).hexdigest()[:32]
        return f"stability:guard:{self.name}:{digest}"

    def _remember(self, spec: GuardSpec, result: Any, args: Any, kwargs: Any) -> None:
        if self.fallback != LAST_GOOD:
            return
        try:
            payload = json.dumps(result)
        except (TypeError, ValueError):
            _warn_once(
                f"json:{self.name}",
                "Guard %r: the result is not plain JSON data; its last good value is not kept.",
                self.name,
            )
            return
        try:
            _fallback_cache().set(self.last_good_key(args, kwargs), payload, spec.last_good_ttl)
        except Exception as error:  # the cache is an integration point too
            logger.warning("Guard %r could not keep its last good value: %s", self.name, error)

    def _last_good(self, args: Any, kwargs: Any) -> tuple[bool, Any]:
        try:
            payload = _fallback_cache().get(self.last_good_key(args, kwargs))
        except Exception as error:
            logger.warning("Guard %r could not read its last good value: %s", self.name, error)
            return False, None
        if not isinstance(payload, str):
            return False, None
        return True, json.loads(payload)

    # Forms -------------------------------------------------------------------------------

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a callable (sync or async)."""
        reject_celery_task(fn, f"@guard({self.name!r})")
        remember_guarded(fn)
        return cast(Callable[P, R], wrap_calls(fn, self.call, self.acall, "guard", self))

    def __enter__(self) -> Guard:
        spec = self.spec
        if spec.mode == "off":
            self._entered.set((*self._entered.get(), ()))
            return self
        seconds = self._attempt_seconds(spec, None)
        breaker = self.breaker if spec.use_breaker else None
        permit = breaker.acquire() if breaker is not None else None
        try:
            slots = self.bulkhead if spec.use_bulkhead else None
            slot = slots.acquire() if slots is not None else None
        except BaseException:
            if breaker is not None and permit is not None:
                breaker.finish(permit, 0.0, IGNORED)
            raise
        timer = deadline(seconds) if seconds is not None else contextlib.nullcontext()
        timer.__enter__()
        entry = (breaker, permit, slots, slot, timer, self.clock())
        self._entered.set((*self._entered.get(), entry))
        return self

    def __exit__(self, exc_type: Any, error: BaseException | None, tb: Any) -> None:
        stack = self._entered.get()
        entry = stack[-1]
        self._entered.set(stack[:-1])
        if not entry:
            return
        breaker, permit, slots, slot, timer, start = entry
        timer.__exit__(exc_type, error, tb)
        if slots is not None and slot is not None:
            slots.release(slot)
        if breaker is not None and permit is not None:
            outcome = SUCCESS if error is None else breaker.classify(error)
            breaker.finish(permit, self.clock() - start, outcome)

    async def __aenter__(self) -> Guard:
        spec = self.spec
        if spec.mode == "off":
            self._entered.set((*self._entered.get(), ()))
            return self
        seconds = self._attempt_seconds(spec, None)
        breaker = self.breaker if spec.use_breaker else None
        permit: Permit | None = await breaker.aacquire() if breaker is not None else None
        try:
            slots = self.bulkhead if spec.use_bulkhead else None
            slot: Slot | None = await slots.aacquire() if slots is not None else None
        except BaseException:
            if breaker is not None and permit is not None:
                await breaker.afinish(permit, 0.0, IGNORED)
            raise
        timer = deadline(seconds) if seconds is not None else contextlib.nullcontext()
        timer.__enter__()
        entry = (breaker, permit, slots, slot, timer, self.clock())
        self._entered.set((*self._entered.get(), entry))
        return self

    async def __aexit__(self, exc_type: Any, error: BaseException | None, tb: Any) -> None:
        stack = self._entered.get()
        entry = stack[-1]
        self._entered.set(stack[:-1])
        if not entry:
            return
        breaker, permit, slots, slot, timer, start = entry
        timer.__exit__(exc_type, error, tb)
        if slots is not None and slot is not None:
            await slots.arelease(slot)
        if breaker is not None and permit is not None:
            outcome = SUCCESS if error is None else breaker.classify(error)
            await breaker.afinish(permit, self.clock() - start, outcome)


def _nothing() -> None:
    return None


_warned: set[str] = set()


def _warn_once(token: str, message: str, *args: Any) -> None:
    if token not in _warned:
        _warned.add(token)
        logger.warning(message, *args)


def _fallback_cache() -> Any:
    from django.core.cache import caches

    from .conf import settings

    return caches[settings.GUARD_FALLBACK_CACHE]


_registered: set[tuple[str, str, str]] = set()


def _register(kind: str, name: str, fields: dict[str, Any] | None) -> None:
    """Record code defaults once per distinct value (guard() may be called per request)."""
    token = (kind, name, repr(sorted((fields or {}).items())))
    if token in _registered:
        return
    if kind == "guard":
        if fields:
            registry.register(GuardSpec.build(name, fields))
        elif registry.code_default(GuardSpec, name) is None:
            registry.register(GuardSpec(name=name))
    elif kind == "breaker":
        register_breaker_spec(name, dict(fields or {}))
    else:
        register_bulkhead_spec(name, dict(fields or {}))
    _registered.add(token)


def guard(
    name: str,
    *,
    fallback: Callable[..., Any] | str | None = None,
    cache_key: Callable[..., str] | None = None,
    idempotent: bool | None = None,
    failure_result: Callable[[Any], bool] | None = None,
    retry_on: tuple[Rule, ...] | None = None,
    breaker: dict[str, Any] | None = None,
    bulkhead: dict[str, Any] | None = None,
    **fields: Any,
) -> Guard:
    """A guard for the integration point ``name``.

    ``fields`` are those of ``GuardSpec`` (``timeout=2``, ``retries=3``,
    ``total_timeout=5``...); ``breaker`` and ``bulkhead`` are the fields of the
    breaker and bulkhead policies of the same name. Settings and the admin may
    override each field. ``fallback`` is a callable (given the call's
    arguments) or ``"last_good"``; ``idempotent`` says this call may be retried;
    ``failure_result`` counts a returned value as a failure (retried, recorded
    by the breaker, replaced by the fallback); ``retry_on`` narrows the
    exceptions retried (default: those the breaker counts as failures)::

        profiles = guard("user-service", timeout=2, retries=2, idempotent=True,
                         fallback="last_good", breaker={"failure_rate_threshold": 50})

        @profiles
        def get_user_profile(user_id): ...
    """
    _register("guard", name, fields)
    _register("breaker", name, breaker)
    _register("bulkhead", name, bulkhead)
    return Guard(
        name,
        fallback=fallback,
        cache_key=cache_key,
        idempotent=idempotent,
        failure_result=failure_result,
        retry_on=retry_on,
    )


def _forget(*args: Any, **kwargs: Any) -> None:
    _registered.clear()
    forget_budgets()


settings_reset.connect(_forget, dispatch_uid="django_stability.guard.reset")
