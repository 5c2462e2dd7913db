"""Celery tasks under rate limits, circuit breakers, bulkheads and guards.

The decorators go below the task decorator, where they wrap the task's body::

    @app.task(bind=True)
    @rate_limit("newsletter", rate="100/m", burst=1)  # counted across every worker
    @circuit_breaker("mailer", scope="cluster")
    def send_newsletter(self, user_id): ...

A refusal that escapes the body (``RateLimited``, ``BreakerOpen``,
``BulkheadFull``, and the other ``exceptions.REFUSALS``) does not fail the
task: the task is sent again, to run once the refusal's ``retry_after`` has
passed plus a random delay that widens with each refusal, so that a backlog
of refused tasks does not come back all at once. At most
``JOBS_TASK_MAX_REFUSALS`` times (a task may say otherwise with the
``stability_max_refusals`` option); after that, the refusal fails the task.

Refusals are counted in a message header of their own, not in Celery's
``request.retries``: a task's ``max_retries`` stays for its real failures.
A task called directly, or run eagerly (``task_always_eager``, ``apply()``),
raises the refusal as any function would.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

from celery.exceptions import Retry

from ..conf import settings
from . import broker

logger = logging.getLogger("django_stability.jobs")

#: The message header that counts how often a task was refused and sent again.
REFUSALS_HEADER = "stability_refusals"


def refusal_delay(
    retry_after: float | None,
    refusals: int,
    *,
    jitter: float,
    horizon: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds before a task refused ``refusals`` times before this one runs again.

    Never before ``retry_after`` (it would only be refused again), then a
    random share of a window of ``max(retry_after, jitter)`` seconds that
    widens with each refusal: refused together, tasks come back spread out,
    and a long backlog drains in a number of refusals per task that grows
    with the square root of its length, not with its length. Never past
    ``horizon`` (the broker would deliver a message held longer twice).
    """
    wait = max(0.0, retry_after or 0.0)
    window = max(wait, jitter) * (max(0, refusals) + 1)
    return min(horizon, wait + uniform(0.0, window))


def running_task(body: Callable[..., Any]) -> Any:
    """The Celery task a worker is running now with ``body`` as its body, or None.

    None too when the task was called directly or eagerly: then there is no
    message to send again.
    """
    from celery import current_task

    # A proxy of the task on top of this thread's stack (the stubs type it as the task).
    task = current_task._get_current_object()  # type: ignore[attr-defined]
    # ``run`` on the class is the body @app.task was given (bound or not).
    if task is None or getattr(type(task), "run", None) is not body:
        return None
    request = task.request
    if request.called_directly or request.is_eager:
        return None
    return task


def refusals_of(request: Any) -> int:
    """How often the task of ``request`` was refused and sent again so far."""
    headers = request.headers if isinstance(request.headers, Mapping) else {}
    raw = headers.get(REFUSALS_HEADER, getattr(request, REFUSALS_HEADER, 0))
    try:
        return max(0, int(raw))
    except (TypeError, ValueError):
        return 0


def max_refusals(task: Any) -> int:
    """How often ``task`` may be refused and sent again: its own option, or the setting."""
    own = getattr(task, "stability_max_refusals", None)
    return settings.JOBS_TASK_MAX_REFUSALS if own is None else max(0, int(own))


def retry_refused(body: Callable[..., Any], error: Exception) -> None:
    """``error``, a refusal, escaped ``body``: send its task again later and raise ``Retry``.

    Returns without doing anything when ``body`` is not the body of the task
    a worker runs now, when the task was refused as often as it may be, or
    when it cannot be sent again: the caller then re-raises ``error``.
    """
    task = running_task(body)
    if task is None:
        return
    request = task.request
    refusals = refusals_of(request)
    if refusals >= max_refusals(task):
        logger.warning(
            "Task %s[%s] was refused %d times and fails now: %s",
            task.name,
            request.id,
            refusals + 1,
            error,
        )
        return
    countdown = refusal_delay(
        getattr(error, "retry_after", None),
        refusals,
        jitter=settings.JOBS_TASK_RETRY_JITTER,
        horizon=broker.countdown_horizon(task.app),
    )
    headers = {**(request.headers or {}), REFUSALS_HEADER: refusals + 1}
    # The same message again, with its retries count unchanged: refusals are
    # not failures, and must not use up the task's max_retries.
    again = task.signature_from_request(
        request, countdown=countdown, retries=request.retries, headers=headers
    )
    try:
        again.apply_async()
    except Exception:
        logger.exception(
            "Task %s[%s] was refused and could not be sent again", task.name, request.id
        )
        return
    # (The stubs want a numbers.Real, which mypy cannot check a float against.)
    raise Retry(exc=error, when=countdown, sig=again)  # type: ignore[arg-type]
