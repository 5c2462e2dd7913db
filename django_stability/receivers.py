"""Signal receivers: a committed change to any policy row reaches every process."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from .models import Policy
from .policies import registry


def policy_changed(sender: type, instance: Any, using: str = "default", **kwargs: Any) -> None:
    # Proxy models send with themselves as sender, so match on the instance.
    if isinstance(instance, Policy):
        registry.invalidate(using=using)


def connect() -> None:
    post_save.connect(policy_changed, dispatch_uid="django_stability.policy_saved")
    post_delete.connect(policy_changed, dispatch_uid="django_stability.policy_deleted")
