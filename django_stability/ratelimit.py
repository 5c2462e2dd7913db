"""Rate limits: the policy kind, and the rate syntax of django-ratelimit.

A rate is written as django-ratelimit writes it: a count, a slash, and a period
with an optional multiplier: ``100/m``, ``5/10s``, ``1000/d``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

from .policies import PolicySpec, parse_int, registry, spec_field
from .routing import RouteFields

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
RATE_FORMAT = (
    "a count, a slash and a period with an optional multiplier and a unit of s, m, h or d, "
    "e.g. 100/m or 5/10s"
)


def parse_rate(raw: Any) -> tuple[int, int]:
    """``"5/10s"`` -> ``(5, 10)``: a count and a period in seconds.

    Raises ValueError naming the expected format.
    """
    match = _RATE.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise ValueError(f"Expected a rate as {RATE_FORMAT}; got {raw!r}.")
    count, multiplier, unit = match.groups()
    period = int(multiplier or 1) * _UNITS[unit]
    if int(count) < 1 or period < 1:
        raise ValueError(f"A rate needs a count and a period of at least 1; got {raw!r}.")
    return int(count), period


def _checked_rate(raw: Any) -> str:
    parse_rate(raw)
    return str(raw).strip().replace(" ", "")


@registry.register_kind
@dataclass(frozen=True)
class RateLimitSpec(RouteFields, PolicySpec):
    """A rate limit: how many requests per period, for which key."""

    kind = "ratelimit"
    verbose_name = "rate limit"

    rate: str = spec_field(
        "100/m",
        help="The sustained rate allowed per key.",
        parse=_checked_rate,
        format=RATE_FORMAT,
    )
    burst: int | None = spec_field(
        None,
        help="Requests allowed at once from an idle start; empty means the rate's count.",
        parse=lambda raw: parse_int(raw, minimum=1),
        format="a whole number of at least 1",
    )
    key: str = spec_field(
        "ip",
        help="What is counted: ip, user, user_or_ip, header:<name>, get:<name>, post:<name>, "
        "or a dotted path to a function of (group, request).",
    )
    mode: str = spec_field(
        "enforce",
        choices=("enforce", "shadow", "off"),
        help="enforce refuses; shadow counts and reports but admits (a dark launch); "
        "off does nothing.",
    )
    on_store_failure: str = spec_field(
        "open",
        choices=("open", "closed"),
        help="When the shared store cannot be reached: open admits (with per-process limits), "
        "closed refuses.",
    )

    @property
    def limit_and_period(self) -> tuple[int, int]:
        return parse_rate(self.rate)

    def check(self) -> None:
        parse_rate(self.rate)
        if self.burst is not None and self.burst < 1:
            raise ValidationError({"burst": "Expected a whole number of at least 1."})
