"""Cache policies: how long a value is fresh, how stale it may be served, how callers wait.

A cache policy is found by its name (``@cached("menu")``, ``get_or_set(...,
policy="menu")``) or by the longest of its key prefixes that starts the key;
with neither, the policy named ``"default"`` serves (from settings or the admin),
else the class defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

from ..policies import PolicySpec, parse_float, parse_str_tuple, registry, spec_field

#: The name of the policy that serves keys no other policy names.
DEFAULT_POLICY = "default"


def _seconds(minimum: float) -> Any:
    def parse(raw: Any) -> float:
        return parse_float(raw, minimum=minimum)

    return parse


@registry.register_kind
@dataclass(frozen=True)
class CacheSpec(PolicySpec):
    """How ``get_or_set`` and ``@cached`` protect the keys of one policy."""

    kind = "cache"
    verbose_name = "cache"
    admin_class = "django_stability.cache.admin.CachePolicyAdmin"

    key_prefixes: tuple[str, ...] = spec_field(
        (),
        help="Keys starting with one of these (one per line) follow this policy, also "
        "through plain get() and set(); the longest matching prefix wins.",
        parse=parse_str_tuple,
        format="one prefix per line, e.g. product:",
    )
    ttl: float | None = spec_field(
        None,
        help="Seconds a value stays fresh. Empty: the timeout given in code, else the "
        "cache's TIMEOUT.",
        parse=_seconds(0.001),
        format="seconds, e.g. 300",
    )
    jitter: float = spec_field(
        0.1,
        help="Each fresh period is shortened by a random share up to this fraction, so that "
        "keys written together do not expire together.",
        parse=_seconds(0.0),
        format="a fraction from 0 to 0.5, e.g. 0.1",
    )
    grace: float = spec_field(
        60.0,
        help="Seconds past its fresh period a value may still be served while one caller "
        "recomputes it.",
        parse=_seconds(0.0),
        format="seconds, e.g. 60",
    )
    stale_if_error: float = spec_field(
        300.0,
        help="Seconds past its fresh period a value may be served while its recompute fails.",
        parse=_seconds(0.0),
        format="seconds, e.g. 300",
    )
    error_backoff: float = spec_field(
        1.0,
        help="Seconds without a new attempt after a failed recompute (stale values are served "
        "meanwhile); doubles with each failure in a row, up to 60 s.",
        parse=_seconds(0.0),
        format="seconds, e.g. 1",
    )
    lease: float = spec_field(
        1.0,
        help="Seconds the recompute lock lasts unless its holder renews it (every third of a "
        "lease while it computes): a holder that dies is replaced within about one lease.",
        parse=_seconds(0.05),
        format="seconds, at least 0.05, e.g. 1",
    )
    wait: float = spec_field(
        5.0,
        help="Seconds a caller with no value to serve waits for another caller's compute.",
        parse=_seconds(0.0),
        format="seconds, e.g. 5",
    )
    on_wait_timeout: str = spec_field(
        "compute",
        choices=("compute", "raise"),
        help="When the wait is over and no value came: compute (without the lock) or raise "
        "CacheWaitTimeout (a 503 through the middleware).",
    )
    beta: float = spec_field(
        1.0,
        help="Early refresh (XFetch): how eagerly a value is recomputed before it expires, "
        "scaled by its measured compute time; 0 turns it off.",
        parse=_seconds(0.0),
        format="a number, e.g. 1",
    )
    refresh: str = spec_field(
        "inline",
        choices=("inline", "thread", "celery"),
        help="Who recomputes a value that is still servable: the caller that won the lock "
        "(inline), a background thread, or a Celery task (@cached functions with JSON "
        "arguments; others use a thread).",
    )

    def check(self) -> None:
        if not 0.0 <= self.jitter <= 0.5:
            raise ValidationError(
                {"jitter": f"Expected a fraction from 0 to 0.5; got {self.jitter:g}."}
            )
        for prefix in self.key_prefixes:
            if not prefix:
                raise ValidationError({"key_prefixes": "A key prefix may not be empty."})

    @property
    def servable_for(self) -> float:
        """Seconds past the fresh period a value is kept in the cache at all."""
        return max(self.grace, self.stale_if_error)


def _prefix_index() -> tuple[dict[str, CacheSpec], tuple[int, ...]]:
    by_prefix: dict[str, CacheSpec] = {}
    for spec in registry.all(CacheSpec):
        for prefix in spec.key_prefixes:
            by_prefix[prefix] = spec
    lengths = tuple(sorted({len(p) for p in by_prefix}, reverse=True))
    return by_prefix, lengths


def policy_for_key(key: Any) -> CacheSpec | None:
    """The policy one of whose key prefixes starts ``key`` (the longest wins), or None.

    Costs one dictionary look-up per distinct prefix length, whatever the
    number of policies.
    """
    by_prefix, lengths = registry.derived("cache:prefixes", _prefix_index)
    if not lengths or not isinstance(key, str):
        return None
    for length in lengths:
        spec = by_prefix.get(key[:length]) if len(key) >= length else None
        if spec is not None:
            return spec
    return None


_DEFAULT = CacheSpec(name=DEFAULT_POLICY)


def resolve(key: Any, name: str | None = None) -> CacheSpec:
    """The policy for ``key``: by ``name``, else by key prefix, else ``"default"``."""
    if name is not None:
        spec = registry.get(CacheSpec, name)
        if spec is not None:
            return spec
        return CacheSpec(name=name)
    return policy_for_key(key) or registry.get(CacheSpec, DEFAULT_POLICY) or _DEFAULT
