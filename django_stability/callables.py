"""How the decorators tell a coroutine function from a plain callable.

Every decorator of this package accepts any callable: functions, methods,
``functools.partial`` objects, instances with ``__call__`` (a Celery task, say)
and functions marked with ``asgiref.sync.markcoroutinefunction``. Those whose
call returns a coroutine get the async wrapper.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard

from asgiref.sync import iscoroutinefunction


def is_async(fn: Any) -> TypeGuard[Callable[..., Awaitable[Any]]]:
    """True when calling ``fn`` returns a coroutine to await."""
    if iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an instance's async __call__
    return call is not None and not inspect.isfunction(fn) and iscoroutinefunction(call)
