"""The Celery task that refreshes a @cached value in a worker (policy ``refresh = "celery"``)."""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="django_stability.cache.refresh", ignore_result=True)
def refresh(
    alias: str,
    key: str,
    version: int | None,
    policy: str,
    token: str,
    started: float,
    ttl: float | None,
    function: str,
    args: list[Any],
    kwargs: dict[str, Any],
) -> bool:
    """Recompute ``function(*args, **kwargs)`` into ``key`` if the lock is still ours.

    The caller that won the lock handed it to this task; when the task starts
    after the lease ran out (a busy queue), another caller may hold it by then
    and this task does nothing.
    """
    from django.utils.module_loading import import_string

    from .decorators import protector_for

    wrapper = import_string(function)
    compute = getattr(wrapper, "uncached", wrapper)
    return protector_for(alias).refresh_from_task(
        key, version, policy, token, started, ttl, lambda: compute(*args, **kwargs)
    )
