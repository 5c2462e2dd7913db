"""Which policies apply to a request: matching by URL name, path and method.

Policies that the middleware applies without touching the view (rate limits,
priority classes, concurrency limits) say which requests they cover with the
fields of ``RouteFields``. ``RouteIndex`` answers "which of them match this
request?" at a cost that does not grow with the number of policies: URL names
and path prefixes are dictionary lookups (one per distinct prefix length);
only regular-expression patterns are tried one by one, so prefer names and
prefixes where they do the job.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest
from django.urls import Resolver404, resolve

from .policies import parse_str_tuple, spec_field

T = TypeVar("T")

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def parse_methods(raw: Any) -> tuple[str, ...]:
    """HTTP method names, upper-cased; unknown names refused."""
    methods = tuple(m.upper() for m in parse_str_tuple(raw))
    unknown = sorted(set(methods) - HTTP_METHODS)
    if unknown:
        raise ValueError(
            f"Unknown HTTP method(s) {', '.join(unknown)}; expected some of "
            f"{', '.join(sorted(HTTP_METHODS))}, one per line."
        )
    return methods


def parse_paths(raw: Any) -> tuple[str, ...]:
    paths = parse_str_tuple(raw)
    bad = [p for p in paths if not p.startswith("/")]
    if bad:
        raise ValueError(f"Expected paths starting with /, one per line; got {', '.join(bad)}.")
    return paths


def parse_patterns(raw: Any) -> tuple[str, ...]:
    patterns = parse_str_tuple(raw)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"Expected regular expressions matched against the path, one per line; "
                f"{pattern!r} is not one ({exc})."
            ) from None
    return patterns


@dataclass(frozen=True)
class RouteFields:
    """The fields a policy uses to say which requests it covers (a mixin for specs).

    A policy with none of ``url_names``, ``path_prefixes`` and ``path_patterns``
    set covers no request by itself: it applies only where code names it (a
    decorator). ``methods`` narrows any match; empty means every method.
    """

    url_names: tuple[str, ...] = spec_field(
        (),
        help="URL names (as in reverse()), one per line; 'namespace:name' for namespaced ones.",
        format="one URL name per line",
    )
    path_prefixes: tuple[str, ...] = spec_field(
        (),
        help="Path prefixes, one per line, e.g. /api/.",
        parse=parse_paths,
        format="one path starting with / per line",
    )
    path_patterns: tuple[str, ...] = spec_field(
        (),
        help="Regular expressions searched from the start of the path, one per line.",
        parse=parse_patterns,
        format="one regular expression per line, e.g. ^/shop/\\d+/export$",
    )
    methods: tuple[str, ...] = spec_field(
        (),
        help="HTTP methods covered, one per line; empty covers every method.",
        parse=parse_methods,
        format="method names such as GET or POST, one per line",
    )

    @property
    def routed(self) -> bool:
        """True when the policy covers requests by itself (has a name, prefix or pattern)."""
        return bool(self.url_names or self.path_prefixes or self.path_patterns)

    def allows_method(self, method: str | None) -> bool:
        return not self.methods or (method or "GET").upper() in self.methods


def url_name(request: HttpRequest) -> str | None:
    """The request's URL name ('namespace:name' when namespaced), resolving it if need be.

    The middleware runs before Django resolves the URL, so it resolves the path
    itself; the answers are kept in a bounded cache per URLconf and path.
    """
    match = getattr(request, "resolver_match", None)
    if match is not None:
        return match.view_name if match.url_name else None
    return _view_name(getattr(request, "urlconf", None), request.path_info)


@functools.lru_cache(maxsize=4096)
def _view_name(urlconf: str | None, path: str) -> str | None:
    try:
        match = resolve(path, urlconf)
    except Resolver404:
        return None
    return match.view_name if match.url_name else None


@receiver(setting_changed)
def _forget_names(*, setting: str, **kwargs: Any) -> None:
    if setting == "ROOT_URLCONF":
        _view_name.cache_clear()


class RouteIndex(Generic[T]):
    """An index from requests to the values of the policies whose route fields match."""

    def __init__(self, entries: Iterable[tuple[RouteFields, T]]) -> None:
        self._by_name: dict[str, list[tuple[RouteFields, T]]] = {}
        self._by_prefix: dict[str, list[tuple[RouteFields, T]]] = {}
        self._patterns: list[tuple[re.Pattern[str], RouteFields, T]] = []
        for fields, value in entries:
            for name in fields.url_names:
                self._by_name.setdefault(name, []).append((fields, value))
            for prefix in fields.path_prefixes:
                self._by_prefix.setdefault(prefix, []).append((fields, value))
            for pattern in fields.path_patterns:
                self._patterns.append((re.compile(pattern), fields, value))
        self._prefix_lengths = sorted({len(prefix) for prefix in self._by_prefix})

    def __bool__(self) -> bool:
        return bool(self._by_name or self._by_prefix or self._patterns)

    def match(self, request: HttpRequest) -> list[T]:
        """The values of every matching policy, each once, in a stable order."""
        if not self:
            return []
        path = request.path_info
        method = request.method
        found: list[T] = []
        seen: set[int] = set()

        def add(fields: RouteFields, value: T) -> None:
            if id(value) not in seen and fields.allows_method(method):
                seen.add(id(value))
                found.append(value)

        if self._by_name:
            name = url_name(request)
            if name is not None:
                for fields, value in self._by_name.get(name, ()):
                    add(fields, value)
        for length in self._prefix_lengths:
            if length > len(path):
                break
            for fields, value in self._by_prefix.get(path[:length], ()):
                add(fields, value)
        for pattern, fields, value in self._patterns:
            if pattern.match(path):
                add(fields, value)
        return found
