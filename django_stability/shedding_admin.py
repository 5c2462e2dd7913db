"""The admin of admission policies, concurrency limits and feature switches, with live state.

Named by the specs' ``admin_class``; ``admin.register_policy_admins`` builds
each kind's admin on top of these. In-flight counts of the admission
controller are those of the process serving the admin page (each process
decides alone); lease and waiting-room counts come from the shared store and
are cluster-wide.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from .admin import PolicyAdmin
from .brownout import FeatureSpec, feature_enabled
from .concurrency import ConcurrencySpec, lease_key
from .models import Policy
from .policies import registry
from .shedding import AdmissionSpec, controller
from .store import get_store
from .waiting_room import status as room_status


def _in_flight_summary() -> str:
    state = controller.snapshot()
    limit = state["limit"]
    by_class = ", ".join(f"{name} {count}" for name, count in state["by_class"].items())
    of = f" of {limit}" if limit else " (no in-flight limit set)"
    return f"In flight now in this process: {state['in_flight']}{of} ({by_class})"


class AdmissionPolicyAdmin(PolicyAdmin):
    """Admission policies, with this process's in-flight requests by class."""

    list_display = ("name", "priority_class", "in_flight_now", "overrides", "updated_at")  # type: ignore[assignment]
    readonly_fields = ("effective", "live_state")  # type: ignore[assignment]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return (*super().get_fieldsets(request, obj), ("Live", {"fields": ("live_state",)}))

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = {"subtitle": _in_flight_summary(), **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

    @admin.display(description="Class")
    def priority_class(self, obj: Policy) -> str:
        spec = registry.get(AdmissionSpec, obj.name)
        return spec.priority if spec is not None else "-"

    @admin.display(description="In flight in this process (its class)")
    def in_flight_now(self, obj: Policy) -> int | str:
        spec = registry.get(AdmissionSpec, obj.name)
        return controller.by_class[spec.priority] if spec is not None else "-"

    @admin.display(description="Admission in this process")
    def live_state(self, obj: Policy | None) -> str:
        return format_html(
            "<p>{}</p><pre>{}</pre>",
            _in_flight_summary(),
            json.dumps(controller.snapshot(), indent=2),
        )


class ConcurrencyPolicyAdmin(PolicyAdmin):
    """Concurrency limits and waiting rooms, with their holders across the cluster."""

    list_display = ("name", "limit_now", "holders_now", "overrides", "updated_at")  # type: ignore[assignment]
    readonly_fields = ("effective", "holders_now")  # type: ignore[assignment]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return (*super().get_fieldsets(request, obj), ("Live", {"fields": ("holders_now",)}))

    @admin.display(description="Limit")
    def limit_now(self, obj: Policy) -> int | str:
        spec = registry.get(ConcurrencySpec, obj.name)
        return spec.limit if spec is not None else "-"

    @admin.display(description="Running now (all servers)")
    def holders_now(self, obj: Policy | None) -> str:
        spec = registry.get(ConcurrencySpec, obj.name) if obj is not None and obj.pk else None
        if spec is None:
            return "-"
        if spec.waiting_room:
            room = room_status(spec)
            return f"{room.active} in, {room.waiting} waiting"
        if spec.key:
            return f"per {spec.key}: each key has its own {spec.limit}"
        return f"{get_store().count_leases(lease_key(spec))} of {spec.limit}"


class FeatureSwitchAdmin(PolicyAdmin):
    """Feature switches: the kill switch, and whether each is on in this process now."""

    list_display = ("name", "state_now", "overrides", "updated_at")  # type: ignore[assignment]
    actions = ("turn_off", "turn_on")

    @admin.display(description="Now (this process)")
    def state_now(self, obj: Policy) -> str:
        spec = registry.get(FeatureSpec, obj.name)
        if spec is not None and not spec.enabled:
            return "off (switched off)"
        return "on" if feature_enabled(obj.name) else "off (brownout: shedding load)"

    def _switch(self, request: HttpRequest, queryset: QuerySet[Policy], on: bool) -> None:
        for row in queryset:
            config = row.config if isinstance(row.config, dict) else {}
            row.config = {**config, "enabled": on}
            row.save()
        self.message_user(
            request,
            f"Turned {'on' if on else 'off'} {queryset.count()} feature(s) in every process.",
            messages.SUCCESS,
        )

    @admin.action(description="Turn off the selected features (kill switch)")
    def turn_off(self, request: HttpRequest, queryset: QuerySet[Policy]) -> None:
        self._switch(request, queryset, False)

    @admin.action(description="Turn on the selected features")
    def turn_on(self, request: HttpRequest, queryset: QuerySet[Policy]) -> None:
        self._switch(request, queryset, True)
