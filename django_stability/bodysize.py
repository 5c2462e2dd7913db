"""A maximum request body size per route: refuse a too-large upload before reading it.

Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is one number for the whole site, and
applies only when the body is parsed. ``@max_body_size(n)`` gives one route its
own limit, checked on the declared ``Content-Length`` before the view reads a
byte: 413 with a problem+json body (or the HTML page).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from . import responses
from .exceptions import BodyTooLarge

F = TypeVar("F", bound=Callable[..., Any])


def body_refusal(request: HttpRequest, max_bytes: int) -> HttpResponseBase | None:
    """The 413 for a request whose declared body is over ``max_bytes``, or None."""
    raw = request.META.get("CONTENT_LENGTH") or "0"
    try:
        length = int(raw)
    except ValueError:
        length = -1
    if length < 0:
        return responses.refusal(
            request, BodyTooLarge("The Content-Length header is not a whole number.")
        )
    if length > max_bytes:
        return responses.refusal(
            request,
            BodyTooLarge(
                f"This address accepts request bodies of at most {max_bytes} bytes; "
                f"this one declares {length}."
            ),
        )
    return None


def max_body_size(max_bytes: int) -> Callable[[F], F]:
    """Decorate a view (sync or async) to accept bodies of at most ``max_bytes`` bytes."""
    if max_bytes < 0:
        raise ValueError("max_body_size needs a number of bytes of at least 0")

    def decorator(view: F) -> F:
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                refused = body_refusal(request, max_bytes)
                if refused is not None:
                    return refused
                return await view(request, *args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            refused = body_refusal(request, max_bytes)
            return refused if refused is not None else view(request, *args, **kwargs)

        return cast(F, wrapper)

    return decorator
