"""Every event of the app, heard once: counted, logged as a structured line, reported.

The parts send their signals (``django_stability.signals``) and know nothing
of what listens. The receivers here, connected when the app is ready, turn
each event into:

* a count in this process's ``tally`` (for the Stability page, the per-minute
  charts and the Prometheus metrics, which the reporter thread sends on);
* one structured line on the ``django_stability.events`` logger, rate-limited
  per event and subject by ``eventlog``.

A receiver never raises into the part that sent the signal, and does no I/O.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from django.core.signals import request_started

from . import signals
from .eventlog import events_log
from .tally import tally

logger = logging.getLogger("django_stability.events")


def flag(value: Any) -> str:
    """A boolean as a label value ("true"/"false")."""
    return "true" if value else "false"


def _safe(receiver: Callable[..., None]) -> Callable[..., None]:
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            receiver(*args, **kwargs)
        except Exception:  # an observer must never break what it observes
            logger.exception("Recording the event %s failed", receiver.__name__)

    run.__name__ = receiver.__name__
    run.__doc__ = receiver.__doc__
    return run


# The state of each cache server's breaker, as this process saw it change.
_cache_states: dict[str, str] = {}
_cache_lock = threading.Lock()


def cache_states() -> dict[str, str]:
    """The breaker state of each protected cache server this process heard of."""
    with _cache_lock:
        return dict(_cache_states)


# When this process last shed a request for its own backlog (queue time), by class.
_queue_time_sheds: dict[str, float] = {}


def queue_time_shed_within(seconds: float) -> set[str]:
    """The classes this process shed for waiting upstream too long in the last ``seconds``."""
    now = time.monotonic()
    return {name for name, at in list(_queue_time_sheds.items()) if now - at < seconds}


def _after_fork() -> None:
    # A child's cache breakers start closed; the lock may have been held at the fork.
    global _cache_lock
    _cache_lock = threading.Lock()
    _cache_states.clear()
    _queue_time_sheds.clear()


os.register_at_fork(after_in_child=_after_fork)


# Receivers ---------------------------------------------------------------------------


@_safe
def on_request_started(sender: Any = None, **kwargs: Any) -> None:
    """Count the request, and make sure this process reports to the store."""
    tally.add(("requests",))
    from .reporter import reporter

    reporter.ensure_started()


@_safe
def on_rate_limited(
    sender: Any = None,
    *,
    policy: str = "",
    shadow: bool = False,
    retry_after: float = 0.0,
    degraded: bool = False,
    boxed: bool = False,
    **kwargs: Any,
) -> None:
    """``rate_limited``."""
    tally.add(("ratelimit_refusals", policy, flag(shadow)))
    fields = {"policy": policy, "shadow": shadow, "retry_after": retry_after}
    fields.update(degraded=degraded, boxed=boxed)
    events_log.emit("rate_limited", fields, subject=(policy, shadow))


@_safe
def on_request_shed(
    sender: Any = None,
    *,
    request: Any = None,
    reason: str = "",
    priority: str | None = None,
    policy: str | None = None,
    retry_after: float | None = None,
    shadow: bool = False,
    **facts: Any,
) -> None:
    """``request_shed``."""
    tally.add(("requests_shed", reason, priority or "", flag(shadow)))
    if reason == "queue_time" and not shadow and priority:
        _queue_time_sheds[priority] = time.monotonic()
    fields: dict[str, Any] = {
        "reason": reason,
        "priority": priority,
        "policy": policy,
        "shadow": shadow,
        "retry_after": retry_after,
        "method": getattr(request, "method", None),
        "path": getattr(request, "path", None),
    }
    fields.update((key, value) for key, value in facts.items() if key != "signal")
    events_log.emit(
        "request_shed",
        fields,
        level=logging.INFO if shadow else logging.WARNING,
        subject=(reason, priority, shadow),
    )


@_safe
def on_breaker_state_changed(
    sender: Any = None,
    *,
    name: str = "",
    state: str = "",
    previous: str = "",
    shadow: bool = False,
    observed: bool = False,
    **facts: Any,
) -> None:
    """``breaker_state_changed``: counted once, by the process that made the transition."""
    if not observed:
        tally.add(("breaker_transitions", name, state, flag(shadow)))
    level = logging.INFO
    if observed:
        level = logging.DEBUG
    elif state == "open" and not shadow:
        level = logging.WARNING
    fields = {"breaker": name, "state": state, "previous": previous, "shadow": shadow}
    fields["observed"] = observed
    for key in ("scope", "reason", "failure_rate", "slow_call_rate", "calls", "wait"):
        fields[key] = facts.get(key)
    events_log.emit("breaker_state_changed", fields, level=level, subject=(name, state, observed))


@_safe
def on_bulkhead_full(
    sender: Any = None,
    *,
    name: str = "",
    limit: int | None = None,
    scope: str | None = None,
    shadow: bool = False,
    **kwargs: Any,
) -> None:
    """``bulkhead_full``."""
    tally.add(("bulkhead_refusals", name, flag(shadow)))
    events_log.emit(
        "bulkhead_full",
        {"bulkhead": name, "limit": limit, "scope": scope, "shadow": shadow},
        level=logging.INFO if shadow else logging.WARNING,
        subject=(name, shadow),
    )


def _error(error: Any) -> str | None:
    return None if error is None else f"{type(error).__name__}: {error}"[:300]


@_safe
def on_store_state_changed(
    sender: Any = None, *, state: str = "", previous: str = "", error: Any = None, **kwargs: Any
) -> None:
    """``store_state_changed``."""
    tally.add(("store_transitions", state))
    events_log.emit(
        "store_state_changed",
        {"state": state, "previous": previous, "error": _error(error)},
        level=logging.WARNING if state == "open" else logging.INFO,
        subject=(state,),
    )


@_safe
def on_cache_state_changed(
    sender: Any = None,
    *,
    cache: str = "",
    state: str = "",
    previous: str = "",
    error: Any = None,
    **kwargs: Any,
) -> None:
    """``cache_state_changed``."""
    with _cache_lock:
        _cache_states[cache] = state
    tally.add(("cache_transitions", cache, state))
    events_log.emit(
        "cache_state_changed",
        {"cache": cache, "state": state, "previous": previous, "error": _error(error)},
        level=logging.WARNING if state == "open" else logging.INFO,
        subject=(cache, state),
    )


@_safe
def on_job_finished(sender: Any = None, *, job: Any = None, state: str = "", **kwargs: Any) -> None:
    """``job_finished``: the job's name, id and end; never its parameters or owner."""
    name = str(getattr(job, "name", ""))
    tally.add(("jobs_finished", name, state))
    fields = {
        "job": name,
        "id": str(getattr(job, "id", "")),
        "state": state,
        "attempts": getattr(job, "attempts", None),
        "error": (getattr(job, "error", "") or None) if state == "failed" else None,
    }
    events_log.emit(
        "job_finished",
        fields,
        level=logging.WARNING if state == "failed" else logging.INFO,
        subject=(name, state),
    )
    from .reporter import reporter

    reporter.ensure_started()  # a Celery worker serves no request, and reports all the same


@_safe
def on_job_refused(sender: Any = None, *, name: str = "", reason: str = "", **kwargs: Any) -> None:
    """``job_refused``."""
    tally.add(("jobs_refused", name, reason))
    events_log.emit(
        "job_refused",
        {"job": name, "reason": reason},
        level=logging.WARNING,
        subject=(name, reason),
    )


@_safe
def on_policies_reloaded(
    sender: Any = None, *, generation: Any = None, count: int | None = None, **kwargs: Any
) -> None:
    """``policies_reloaded``."""
    tally.add(("policy_reloads",))
    events_log.emit(
        "policies_reloaded", {"generation": generation, "count": count}, level=logging.DEBUG
    )


@_safe
def on_operator_acted(
    sender: Any = None,
    *,
    user: Any = None,
    target: str = "",
    name: str = "",
    action: str = "",
    detail: str = "",
    **kwargs: Any,
) -> None:
    """``operator_acted``: always logged (an audit trail is not rate-limited)."""
    tally.add(("operator_actions", target, action))
    events_log.emit(
        "operator_acted",
        {
            "user": getattr(user, "username", None) or str(user),
            "target": target,
            "name": name,
            "action": action,
            "detail": detail or None,
        },
        level=logging.WARNING,
        interval=0.0,
    )


RECEIVERS: tuple[tuple[Any, Callable[..., None]], ...] = (
    (request_started, on_request_started),
    (signals.rate_limited, on_rate_limited),
    (signals.request_shed, on_request_shed),
    (signals.breaker_state_changed, on_breaker_state_changed),
    (signals.bulkhead_full, on_bulkhead_full),
    (signals.store_state_changed, on_store_state_changed),
    (signals.cache_state_changed, on_cache_state_changed),
    (signals.job_finished, on_job_finished),
    (signals.job_refused, on_job_refused),
    (signals.policies_reloaded, on_policies_reloaded),
    (signals.operator_acted, on_operator_acted),
)


def connect() -> None:
    """Connect every receiver (once; called by the app config)."""
    for signal, receiver in RECEIVERS:
        signal.connect(receiver, dispatch_uid=f"django_stability.events.{receiver.__name__}")


def reset() -> None:
    """Forget what this process heard (tests)."""
    with _cache_lock:
        _cache_states.clear()
    _queue_time_sheds.clear()
    tally.reset()
    events_log.reset()
