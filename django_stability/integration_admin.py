"""The admin pages of circuit breakers and bulkheads: live state and operator actions.

Each page lists, above the policy rows, every breaker (or bulkhead) this
process knows (from code, settings or the admin), with its live state, and
buttons for the operator: for a breaker, reset, force open, disable, shadow
(metrics only) and automatic; for a bulkhead, enforce, shadow and off. An
action saves the policy row of that name (creating it if there is none), so it
reaches every process within ``POLICY_REFRESH``; a reset also closes the shared
verdict of a cluster breaker at once.

Live state is this process's: rates and counts are measured per process (the
verdict of a cluster breaker and the leases of a cluster bulkhead are read
from the store).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from .admin import PolicyAdmin
from .breaker import BreakerSpec, breakers, get_breaker
from .bulkhead import BulkheadSpec, bulkheads, get_bulkhead
from .models import Policy
from .policies import registry


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} s"


def breaker_state(name: str) -> dict[str, Any]:
    """What the admin shows of a breaker: this process's view, and the store's verdict."""
    breaker = get_breaker(name)
    metrics = breaker.metrics()
    row: dict[str, Any] = {
        "name": name,
        "state": metrics.state,
        "mode": metrics.mode,
        "scope": metrics.scope,
        "failure_rate": f"{metrics.failure_rate:.0f}%",
        "slow_call_rate": f"{metrics.slow_call_rate:.0f}%",
        "calls": metrics.calls,
        "time_left_open": _seconds(metrics.time_left_open),
        "shared": "",
    }
    if metrics.scope == "cluster":
        verdict = breaker.shared_verdict()
        if verdict is None:
            row["shared"] = "closed (nothing stored)"
        else:
            row["shared"] = verdict.state
            if verdict.state == "open":
                left = max(0.0, verdict.since_wall + verdict.wait - time.time())
                row["time_left_open"] = _seconds(left)
    return row


def bulkhead_state(name: str) -> dict[str, Any]:
    metrics = get_bulkhead(name).metrics()
    return {
        "name": name,
        "state": metrics.mode,
        "mode": metrics.mode,
        "scope": metrics.scope,
        "limit": metrics.limit,
        "in_use": metrics.in_use,
        "cluster_in_use": "" if metrics.cluster_in_use is None else metrics.cluster_in_use,
        "waiting": metrics.waiting,
        "refused": metrics.refused,
    }


def _set_fields(kind_model: type[Policy], name: str, fields: dict[str, Any]) -> None:
    """Save ``fields`` into the policy row of ``name`` (made if missing); every process follows."""
    row, _ = kind_model.objects.get_or_create(name=name, defaults={"config": {}})
    config = dict(row.config) if isinstance(row.config, dict) else {}
    config.update(fields)
    row.config = config
    row.save()


class LiveStateAdmin(PolicyAdmin):
    """A policy admin with a live-state table and per-name operator buttons above the rows."""

    change_list_template = "admin/django_stability/live_change_list.html"
    #: (action name, button label, fields saved) shown for each name.
    live_actions: tuple[tuple[str, str], ...] = ()
    live_columns: tuple[tuple[str, str], ...] = ()

    def live_names(self) -> list[str]:
        raise NotImplementedError

    def live_state(self, name: str) -> dict[str, Any]:
        raise NotImplementedError

    def apply(self, name: str, action: str) -> str:
        """Do ``action`` for ``name``; return what was done, for the message."""
        raise NotImplementedError

    def _url_name(self, suffix: str) -> str:
        return f"{self.model._meta.app_label}_{self.model._meta.model_name}_{suffix}"

    def get_urls(self) -> list[URLPattern]:
        live = path(
            "live/",
            self.admin_site.admin_view(require_POST(self.live_action)),
            name=self._url_name("live"),
        )
        return [live, *super().get_urls()]

    def live_action(self, request: HttpRequest) -> HttpResponse:
        if not self.has_change_permission(request):
            raise PermissionDenied
        name = request.POST.get("name", "")
        action = request.POST.get("action", "")
        if name not in self.live_names() or action not in dict(self.live_actions):
            messages.error(request, f"Unknown name {name!r} or action {action!r}; nothing done.")
        else:
            messages.success(request, self.apply(name, action))
        return HttpResponseRedirect(reverse(f"admin:{self._url_name('changelist')}"))

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        context = {
            "live_rows": [self.live_state(name) for name in self.live_names()],
            "live_columns": self.live_columns,
            "live_actions": self.live_actions,
            "live_url": reverse(f"admin:{self._url_name('live')}"),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    def _bulk(self, queryset: QuerySet[Policy], action: str) -> int:
        done = 0
        for row in queryset:
            self.apply(row.name, action)
            done += 1
        return done


def _row_action(action: str, label: str) -> Callable[..., None]:
    def run(modeladmin: LiveStateAdmin, request: HttpRequest, queryset: QuerySet[Policy]) -> None:
        done = modeladmin._bulk(queryset, action)
        modeladmin.message_user(request, f"{label}: {done} policies.", messages.SUCCESS)

    run.__name__ = f"action_{action}"
    return admin.action(description=f"{label} the selected")(run)


class BreakerAdmin(LiveStateAdmin):
    """Circuit breakers: live state (state, failure and slow-call rates, calls, time left open)."""

    list_display = ("name", "overrides", "live", "updated_at")  # type: ignore[assignment]
    live_actions = (
        ("reset", "Reset"),
        ("forced_open", "Force open"),
        ("disabled", "Disable"),
        ("metrics_only", "Shadow"),
        ("automatic", "Automatic"),
    )
    live_columns = (
        ("state", "State"),
        ("mode", "Mode"),
        ("scope", "Scope"),
        ("failure_rate", "Failure rate"),
        ("slow_call_rate", "Slow-call rate"),
        ("calls", "Calls in window"),
        ("time_left_open", "Time left open"),
        ("shared", "Shared verdict"),
    )
    actions = [_row_action(a, label) for a, label in live_actions]

    def live_names(self) -> list[str]:
        return sorted({spec.name for spec in registry.all(BreakerSpec)} | set(breakers()))

    def live_state(self, name: str) -> dict[str, Any]:
        return breaker_state(name)

    def apply(self, name: str, action: str) -> str:
        from .models import BreakerPolicy

        if action == "reset":
            _set_fields(BreakerPolicy, name, {"reset_token": uuid.uuid4().hex[:12]})
            get_breaker(name).reset()
            return f"Circuit breaker {name!r} reset: closed, with an empty window."
        _set_fields(BreakerPolicy, name, {"mode": action})
        return f"Circuit breaker {name!r} set to {action}; every process follows within seconds."

    @admin.display(description="Live state (this process)")
    def live(self, obj: Policy) -> str:
        row = breaker_state(obj.name)
        left = f", {row['time_left_open']} left" if row["time_left_open"] else ""
        return (
            f"{row['state']}: failures {row['failure_rate']}, slow {row['slow_call_rate']} "
            f"over {row['calls']} calls{left}"
        )


class BulkheadAdmin(LiveStateAdmin):
    """Bulkheads: live state (slots in use here and in the cluster, waiting, refused)."""

    list_display = ("name", "overrides", "live", "updated_at")  # type: ignore[assignment]
    live_actions = (("enforce", "Enforce"), ("shadow", "Shadow"), ("off", "Turn off"))
    live_columns = (
        ("mode", "Mode"),
        ("scope", "Scope"),
        ("limit", "Limit"),
        ("in_use", "In use here"),
        ("cluster_in_use", "In use (cluster)"),
        ("waiting", "Waiting"),
        ("refused", "Refused here"),
    )
    actions = [_row_action(a, label) for a, label in live_actions]

    def live_names(self) -> list[str]:
        return sorted({spec.name for spec in registry.all(BulkheadSpec)} | set(bulkheads()))

    def live_state(self, name: str) -> dict[str, Any]:
        return bulkhead_state(name)

    def apply(self, name: str, action: str) -> str:
        from .models import BulkheadPolicy

        _set_fields(BulkheadPolicy, name, {"mode": action})
        return f"Bulkhead {name!r} set to {action}; every process follows within seconds."

    @admin.display(description="Live state (this process)")
    def live(self, obj: Policy) -> str:
        row = bulkhead_state(obj.name)
        return f"{row['mode']}: {row['in_use']} of {row['limit']} in use, {row['refused']} refused"
