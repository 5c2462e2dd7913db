"""Brownout: switches for features a page can live without.

Recommendations, "people also bought", live counters: each costs queries and
time on every page, and none is why the visitor came. ``feature_enabled(name)``
lets a view skip such a feature:

- from the admin, as a kill switch (a feature switch row with *enabled* off);
- automatically, while this process sheds load: a process that had to refuse
  requests in the last ``SHEDDING_BROWNOUT_HOLD`` seconds gives the requests it
  still takes the cheap version of the page, which frees capacity sooner. The
  hold keeps a feature off for a while after the last refusal, so that it does
  not flicker on and off at the edge of overload.

A name with no switch anywhere (code, settings or admin) is enabled and browns
out; declare it with ``register_feature`` to change its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from .conf import settings
from .policies import PolicySpec, registry, spec_field
from .shedding import controller


@registry.register_kind
@dataclass(frozen=True)
class FeatureSpec(PolicySpec):
    """A feature switch: on or off, and whether it turns itself off while the site sheds."""

    kind = "feature"
    verbose_name = "feature switch"
    admin_class = "django_stability.shedding_admin.FeatureSwitchAdmin"

    enabled: bool = spec_field(
        True, help="Off turns the feature off in every process (a kill switch)."
    )
    brownout: bool = spec_field(
        True,
        help="Turn the feature off by itself while the process sheds load "
        "(and for SHEDDING_BROWNOUT_HOLD seconds after).",
    )


def register_feature(name: str, *, enabled: bool = True, brownout: bool = True) -> FeatureSpec:
    """Declare a feature's code defaults (the admin and settings may override them)."""
    spec = FeatureSpec(name=name, enabled=enabled, brownout=brownout)
    registry.register(spec)
    return spec


def feature_enabled(name: str) -> bool:
    """Should this request use the feature ``name``? False when switched off or browned out.

    Costs a dictionary lookup on the policy snapshot; no query, no I/O.
    """
    spec = registry.get(FeatureSpec, name)
    if spec is not None and not spec.enabled:
        return False
    brownout = True if spec is None else spec.brownout
    return not (brownout and controller.shedding_recently(settings.SHEDDING_BROWNOUT_HOLD))


def browned_out() -> bool:
    """True while this process turns brownout features off (it shed load recently)."""
    return controller.shedding_recently(settings.SHEDDING_BROWNOUT_HOLD)
