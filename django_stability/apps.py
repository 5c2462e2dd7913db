"""The app config: loads the parts, connects the receivers, registers the checks."""

from __future__ import annotations

import importlib

from django.apps import AppConfig

#: The modules that declare policy kinds; imported once the app registry is ready.
PARTS = (
    "django_stability.ratelimit",
    "django_stability.shedding",
    "django_stability.concurrency",
    "django_stability.brownout",
    "django_stability.cache",
    "django_stability.jobs",
    "django_stability.breaker",
    "django_stability.bulkhead",
    "django_stability.guard",
)


def import_parts() -> None:
    """Import every part so that its policy kind is registered."""
    for module in PARTS:
        importlib.import_module(module)


class StabilityConfig(AppConfig):
    name = "django_stability"
    verbose_name = "Stability"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, events, receivers

        import_parts()
        checks.register()
        receivers.connect()
        events.connect()
