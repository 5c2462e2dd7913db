"""Query guards from the book's "Users": no request for "everything", no deep offsets.

A client that asks for ``?limit=1000000`` or ``?offset=5000000`` makes the
database read (and usually sort) every row before the page. ``page_window()``
clamps ``limit`` to a maximum and refuses an ``offset`` over a maximum with a
400 that points to cursor pagination; ``cursor_page()`` is that pagination: it
continues after the last row seen (a keyset), so page 10,000 costs what page 1
costs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from django.core import signing
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest

from . import responses
from .exceptions import PaginationRefused

T = TypeVar("T", bound=Model)
F = TypeVar("F", bound=Callable[..., Any])

CURSOR_HINT = (
    "Page through with a cursor instead: follow the 'next' cursor of the previous page "
    "(the cursor parameter), which costs the same at any depth."
)


@dataclass(frozen=True)
class PageWindow:
    """The slice a request may have: at most ``limit`` rows from ``offset``."""

    limit: int
    offset: int

    def apply(self, queryset: QuerySet[T]) -> QuerySet[T]:
        """``queryset[offset:offset + limit]``."""
        return queryset[self.offset : self.offset + self.limit]


def _whole(request: HttpRequest, name: str, default: int) -> int:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise PaginationRefused(
            f"The {name} parameter must be a whole number; got {raw[:40]!r}."
        ) from None
    if value < 0:
        raise PaginationRefused(f"The {name} parameter cannot be negative; got {value}.")
    return value


def page_window(
    request: HttpRequest,
    *,
    default_limit: int = 20,
    max_limit: int = 100,
    max_offset: int = 1000,
    limit_param: str = "limit",
    offset_param: str = "offset",
) -> PageWindow:
    """The page a request asks for: ``limit`` clamped to ``max_limit``; an ``offset`` over
    ``max_offset`` refused with ``PaginationRefused`` (400) pointing to cursor pagination.
    """
    limit = min(_whole(request, limit_param, default_limit), max_limit)
    offset = _whole(request, offset_param, 0)
    if offset > max_offset:
        raise PaginationRefused(
            f"The {offset_param} parameter may be at most {max_offset}; got {offset}. "
            + CURSOR_HINT
        )
    return PageWindow(limit=limit, offset=offset)


def page_guard(
    *,
    default_limit: int = 20,
    max_limit: int = 100,
    max_offset: int = 1000,
    limit_param: str = "limit",
    offset_param: str = "offset",
) -> Callable[[F], F]:
    """Decorate a view (sync or async): ``request.page_window`` is set, or a 400 is answered."""
    window = functools.partial(
        page_window,
        default_limit=default_limit,
        max_limit=max_limit,
        max_offset=max_offset,
        limit_param=limit_param,
        offset_param=offset_param,
    )

    def decorator(view: F) -> F:
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                try:
                    request.page_window = window(request)  # type: ignore[attr-defined]
                except PaginationRefused as refused:
                    return responses.refusal(request, refused)
                return await view(request, *args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            try:
                request.page_window = window(request)  # type: ignore[attr-defined]
            except PaginationRefused as refused:
                return responses.refusal(request, refused)
            return view(request, *args, **kwargs)

        return cast(F, wrapper)

    return decorator


@dataclass(frozen=True)
class CursorPage(Generic[T]):
    """One page of a keyset walk: the rows, and the cursor of the next page (None at the end)."""

    items: list[T]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


def _field_value(obj: Model, name: str) -> Any:
    return obj.pk if name == "pk" else getattr(obj, name)


def _to_python(model: type[Model], name: str, raw: Any) -> Any:
    field = model._meta.pk if name == "pk" else model._meta.get_field(name)
    return field.to_python(raw)  # type: ignore[union-attr]


def _after(ordering: Sequence[str], values: Sequence[Any]) -> Q:
    """Rows strictly after ``values`` in ``ordering``: (a > x) or (a = x and b > y) or ..."""
    condition = Q()
    equal: dict[str, Any] = {}
    for spec, value in zip(ordering, values, strict=True):
        name = spec.lstrip("-")
        lookup = "lt" if spec.startswith("-") else "gt"
        condition |= Q(**equal, **{f"{name}__{lookup}": value})
        equal[name] = value
    return condition


def cursor_page(
    queryset: QuerySet[T],
    *,
    ordering: Sequence[str] = ("pk",),
    cursor: str | None = None,
    limit: int = 20,
    salt: str = "",
) -> CursorPage[T]:
    """The ``limit`` rows of ``queryset`` after ``cursor``, in ``ordering``.

    ``ordering`` names model fields (``-`` for descending) and must end with a
    unique one (``pk``), so that no two rows tie. The cursor is signed (with
    ``SECRET_KEY`` and ``salt``): a tampered or foreign cursor is refused with
    ``PaginationRefused`` (400), never a 500.
    """
    model = queryset.model
    ordering = tuple(ordering)
    last = ordering[-1].lstrip("-") if ordering else ""
    try:
        unique = last == "pk" or model._meta.get_field(last).unique  # type: ignore[union-attr]
    except FieldDoesNotExist:
        unique = False
    if not unique:
        raise ValueError(
            f"cursor_page() needs an ordering ending with a unique field; got {ordering}"
        )
    signer_salt = f"django_stability.cursor:{model._meta.label}:{','.join(ordering)}:{salt}"
    page = queryset.order_by(*ordering)
    if cursor:
        try:
            raw = signing.loads(cursor, salt=signer_salt)
            if not isinstance(raw, list) or len(raw) != len(ordering):
                raise ValueError("wrong shape")
            values = [
                _to_python(model, spec.lstrip("-"), value)
                for spec, value in zip(ordering, raw, strict=True)
            ]
        except (signing.BadSignature, ValueError, TypeError, ValidationError):
            raise PaginationRefused(
                "The cursor parameter is not one this site gave out; start again from the "
                "first page."
            ) from None
        page = page.filter(_after(ordering, values))
    rows = list(page[: limit + 1])
    items = rows[:limit]
    next_cursor = None
    if len(rows) > limit and items:
        encoder = DjangoJSONEncoder()
        plain = [
            value if isinstance(value, (int, str, float, bool)) else encoder.default(value)
            for value in (_field_value(items[-1], spec.lstrip("-")) for spec in ordering)
        ]
        next_cursor = signing.dumps(plain, salt=signer_salt, compress=True)
    return CursorPage(items=items, next_cursor=next_cursor)
