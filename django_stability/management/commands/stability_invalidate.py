"""``manage.py stability_invalidate``: make every process reload its policies."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from django_stability.policies import registry


class Command(BaseCommand):
    help = (
        "Tell every process that the policies changed (after editing the policy table by hand "
        "or in a migration); each reloads within POLICY_REFRESH seconds."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        registry.publish_change()
        self.stdout.write(
            self.style.SUCCESS(
                "Policy generation bumped; every process reloads within its refresh interval."
            )
        )
