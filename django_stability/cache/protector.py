"""Stampede protection over one home: what the backends' get_or_set, get and set call.

A ``Protector`` turns a call into a ``Plan`` (its keys, its policy, its jittered
TTL) and runs the decisions of ``flow.protect`` with the right driver. The
backends (the django-redis subclass and the mixin) hold one each; the homes
behind it (and so the breaker and the per-process fallback) are shared by every
thread of the process.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT

from .envelope import jittered, xfetch_factor
from .failsafe import FailsafeHome
from .flow import (
    COMPUTE,
    GET,
    MISS,
    Call,
    Plan,
    as_async,
    as_sync,
    protect,
    refresh_in_background,
    run_async,
    run_sync,
)
from .home import Keys, Reading
from .maintenance import maintenance
from .policy import CacheSpec, policy_for_key, resolve

logger = logging.getLogger("django_stability.cache")


@dataclass(frozen=True)
class TaskRef:
    """How a Celery worker finds a compute again: a @cached function and its JSON arguments."""

    function: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class _Pending:
    token: str
    since: float


# A get-mode caller that was told to compute holds the lock until its set();
# this remembers its token per (home, key) in the caller's context.
_pending: contextvars.ContextVar[dict[tuple[int, str], _Pending] | None] = contextvars.ContextVar(
    "stability_cache_pending", default=None
)


class Protector:
    """get_or_set, get and set with stampede protection, over one ``FailsafeHome``."""

    def __init__(
        self,
        home: FailsafeHome,
        make_key: Callable[[str, int | None], str],
        default_timeout: float | None,
        alias: str | None = None,
    ) -> None:
        self.home = home
        self.make_key = make_key
        self.default_timeout = default_timeout
        self.alias = alias

    def keys(self, key: str, version: int | None) -> Keys:
        return Keys(key, version, str(self.make_key(key, version)))

    def ttl(self, timeout: Any, policy: CacheSpec) -> float | None:
        """The jittered fresh period for a call with ``timeout`` under ``policy``."""
        if policy.ttl is not None:
            base: float | None = policy.ttl
        elif timeout is DEFAULT_TIMEOUT:
            base = self.default_timeout
        else:
            base = timeout
        if base is None:
            return None
        if base <= 0:
            return 0.0
        return jittered(float(base), policy.jitter)

    def plan(
        self, key: str, version: int | None, timeout: Any, policy: CacheSpec, mode: str
    ) -> Plan:
        return Plan(
            keys=self.keys(key, version),
            policy=policy,
            ttl=self.ttl(timeout, policy),
            token=uuid.uuid4().hex,
            mode=mode,
            xfetch=xfetch_factor(policy.beta) if mode == COMPUTE else 0.0,
            can_refresh=mode == COMPUTE,
        )

    # get_or_set ----------------------------------------------------------------------

    def get_or_set(
        self,
        key: str,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        policy: str | None = None,
        task: TaskRef | None = None,
    ) -> Any:
        spec = resolve(key, policy)
        plan = self.plan(key, version, timeout, spec, COMPUTE)
        compute = default if callable(default) else (lambda: default)
        maintenance.started()
        call = Call(
            plan,
            self.home.session(),
            as_sync(compute),
            background=self._background(compute, task),
        )
        return run_sync(protect(plan), call)

    async def aget_or_set(
        self,
        key: str,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        policy: str | None = None,
        task: TaskRef | None = None,
    ) -> Any:
        spec = resolve(key, policy)
        plan = self.plan(key, version, timeout, spec, COMPUTE)
        compute = default if callable(default) else (lambda: default)
        maintenance.started()
        call = Call(
            plan,
            self.home.session(),
            None,
            as_async(compute),
            background=self._background(compute, task),
        )
        return await run_async(protect(plan), call)

    def _background(
        self, compute: Callable[[], Any], task: TaskRef | None
    ) -> Callable[[Plan, Reading], bool]:
        def hand_over(plan: Plan, reading: Reading) -> bool:
            if (
                plan.policy.refresh == "celery"
                and task is not None
                and self.alias is not None
                and self._send_task(self.alias, plan, reading, task)
            ):
                return True
            session = self.home.session()
            call = Call(plan, session, as_sync(compute))
            return maintenance.submit(lambda: run_sync(refresh_in_background(plan, reading), call))

        return hand_over

    def _send_task(self, alias: str, plan: Plan, reading: Reading, task: TaskRef) -> bool:
        from .tasks import refresh

        try:
            # No publish retries: the broker is an integration point too, and this
            # runs in the request; when it fails, the refresh runs in a thread.
            refresh.apply_async(
                args=(
                    alias,
                    plan.keys.key,
                    plan.keys.version,
                    plan.policy.name,
                    plan.token,
                    reading.now,
                    plan.ttl,
                    task.function,
                    list(task.args),
                    task.kwargs,
                ),
                retry=False,
            )
        except Exception:  # the broker is an integration point too
            logger.exception("could not send the cache refresh task; refreshing in a thread")
            return False
        return True

    def refresh_from_task(
        self,
        key: str,
        version: int | None,
        policy: str,
        token: str,
        started: float,
        ttl: float | None,
        compute: Callable[[], Any],
    ) -> bool:
        """Run a refresh a Celery task was given; False when its lock was lost meanwhile."""
        spec = resolve(key, policy)
        plan = Plan(self.keys(key, version), spec, ttl, token, COMPUTE)
        session = self.home.session()
        if not session.renew(plan.keys, token=token, lease=plan.lease):
            return False
        reading = Reading("stale", now=started, locked=True)
        run_sync(refresh_in_background(plan, reading), Call(plan, session, as_sync(compute)))
        return True

    # get and set on the keys a policy names ---------------------------------------------

    def policy_for(self, key: str) -> CacheSpec | None:
        """The policy whose key prefix starts ``key``, if any: plain get/set are protected then."""
        return policy_for_key(key)

    def get(self, key: str, version: int | None, spec: CacheSpec) -> Any:
        """get() of a key a policy names: ``MISS`` tells this caller to compute and set().

        Past the soft expiry one caller gets ``MISS`` (and holds the lock until
        its set()); the others get the stale value. With no value, one caller
        gets ``MISS`` and the others wait for its set(), up to the policy's wait.
        """
        plan = self.plan(key, version, DEFAULT_TIMEOUT, spec, GET)
        maintenance.started()
        call = Call(plan, self.home.session(), None)
        result = run_sync(protect(plan), call)
        if result is MISS and call.holding:
            self._remember(plan)
        return result

    def _remember(self, plan: Plan) -> None:
        now = time.monotonic()
        pending = dict(_pending.get() or {})
        # Forget callers that never called set(): their locks expired long ago.
        for slot in [k for k, p in pending.items() if now - p.since > plan.lease]:
            del pending[slot]
        pending[(id(self.home), plan.keys.full)] = _Pending(plan.token, now)
        _pending.set(pending)

    def set(
        self,
        key: str,
        value: Any,
        timeout: Any,
        version: int | None,
        spec: CacheSpec,
        only_if_absent: bool = False,
    ) -> bool:
        """set()/add() of a key a policy names: stored with its soft expiry, jitter and grace."""
        keys = self.keys(key, version)
        pending = _pending.get() or {}
        slot = (id(self.home), keys.full)
        held = pending.get(slot)
        if held is not None:
            rest = dict(pending)
            del rest[slot]
            _pending.set(rest)
        ttl = self.ttl(timeout, spec)
        hard = ttl if ttl is None or ttl <= 0 else ttl + spec.servable_for
        session = self.home.session()
        return session.land(
            keys,
            token=held.token if held else None,
            value=value,
            soft=ttl,
            hard=hard,
            compute_time=time.monotonic() - held.since if held else 0.0,
            started=None,
            only_if_absent=only_if_absent,
        )
