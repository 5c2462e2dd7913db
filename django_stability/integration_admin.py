"""The admin pages of breakers and bulkheads: live state and operator actions."""

from __future__ import annotations

from .admin import PolicyAdmin


class BreakerAdmin(PolicyAdmin):
    """Circuit-breaker policies."""


class BulkheadAdmin(PolicyAdmin):
    """Bulkhead policies."""
