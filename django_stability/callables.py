"""What the decorators need to know about the callables they decorate.

Every decorator of this package accepts any callable: functions, methods,
``functools.partial`` objects, instances with ``__call__`` and functions
marked with ``asgiref.sync.markcoroutinefunction``. Those whose call returns a
coroutine get the async wrapper.

Celery tasks are decorated from below: ``@app.task`` (or ``@shared_task``)
above the decorator, so that the decorator wraps the task's body and the
worker runs it protected. A refusal escaping that body makes the task run
again later instead of failing (``django_stability.jobs.tasks``).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard

from asgiref.sync import iscoroutinefunction

from .exceptions import StabilityError, worth_retrying_later


def is_async(fn: Any) -> TypeGuard[Callable[..., Awaitable[Any]]]:
    """True when calling ``fn`` returns a coroutine to await."""
    if iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an instance's async __call__
    return call is not None and not inspect.isfunction(fn) and iscoroutinefunction(call)


def reject_celery_task(fn: Any, decorator: str) -> None:
    """Raise TypeError when ``fn`` is a Celery task: the decorator belongs below ``@app.task``.

    Above it, the decorator would replace the task with a plain function: the
    worker would run the task unprotected, and ``.delay()`` would be gone.
    """
    # Nothing to look for before Celery is imported (no import here: it is slow).
    local = sys.modules.get("celery.local")
    task_module = sys.modules.get("celery.app.task")
    # type(), not isinstance(): asking a lazy task proxy for its class evaluates it.
    if (local is not None and issubclass(type(fn), local.Proxy)) or (
        task_module is not None and isinstance(fn, task_module.Task)
    ):
        raise TypeError(
            f"{decorator} was given a Celery task. Put it below the task decorator, so that "
            "it protects the task's body where the worker runs it:\n\n"
            f"    @app.task(bind=True)\n    {decorator}\n    def my_task(self, ...): ..."
        )


def refused_in_task(body: Callable[..., Any], error: BaseException) -> None:
    """A refusal escaped ``body``: when a worker runs ``body`` as a Celery task, retry it later.

    Raises Celery's ``Retry`` after sending the task again; returns (and the
    caller re-raises ``error``) when ``body`` is not a task's body running
    in a worker, or the task has been refused as often as it may be.
    """
    global _retry_refused
    if "celery" not in sys.modules or not isinstance(error, Exception):
        return  # no task runs in a process that has not imported Celery
    if worth_retrying_later(error):
        if _retry_refused is None:
            # Imported on first use: the jobs package imports the decorators' modules.
            from .jobs.tasks import retry_refused

            _retry_refused = retry_refused
        _retry_refused(body, error)


_retry_refused: Callable[[Callable[..., Any], Exception], None] | None = None


def wrap_calls(
    fn: Callable[..., Any],
    call: Callable[..., Any],
    acall: Callable[..., Awaitable[Any]],
    attribute: str,
    owner: object,
) -> Callable[..., Any]:
    """Wrap ``fn`` so that each call goes through ``call(fn, ...)`` (or ``acall`` when async).

    The wrapper carries ``owner`` as ``wrapper.<attribute>``; a refusal escaping
    it while it is a Celery task's body sends the task again later.
    """
    if is_async(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await acall(fn, *args, **kwargs)

        setattr(async_wrapper, attribute, owner)
        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return call(fn, *args, **kwargs)
        except StabilityError as error:
            refused_in_task(wrapper, error)
            raise

    setattr(wrapper, attribute, owner)
    return wrapper
