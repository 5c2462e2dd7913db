"""The Stability page of the admin: every protection's live state on one screen, and the actions.

The page is rendered from ``status.collect()`` and refreshes itself (a small
script polls ``status.json`` every ``DASHBOARD_REFRESH`` seconds and redraws).
Seeing it takes a staff account with ``django_stability.view_dashboard``;
each action also takes the change permission of the policy kind it changes:

* circuit breakers: reset, force open, disable, shadow (metrics only), automatic
  (the same actions as the breaker admin page, which saves the policy row so
  that every process follows within ``POLICY_REFRESH``);
* rate limits: reset a key's counters;
* feature switches (brownout): turn off, turn on, in every process.

Each action sends ``operator_acted``, is logged as an event, and is written to
the admin's history of the policy row it changed.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from . import signals
from .conf import settings
from .models import BreakerPolicy, FeatureSwitch, Policy, RateLimitPolicy, StabilityDashboard
from .status_views import may_see_dashboard

#: What each target accepts, and the policy model whose change permission it needs.
ACTIONS: dict[str, tuple[type[Policy], tuple[str, ...]]] = {
    "breaker": (
        BreakerPolicy,
        ("reset", "forced_open", "disabled", "metrics_only", "automatic"),
    ),
    "ratelimit": (RateLimitPolicy, ("reset_key",)),
    "feature": (FeatureSwitch, ("turn_off", "turn_on")),
}


class Refused(Exception):
    """An action that cannot be done as asked; the message says why (nothing was changed)."""


def may_change(user: Any, model: type[Model]) -> bool:
    """Whether ``user`` has the change permission of ``model`` (a policy kind)."""
    opts = model._meta
    return bool(user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}"))


def _known_breakers() -> set[str]:
    from .breaker import BreakerSpec, breakers
    from .policies import registry

    return {spec.name for spec in registry.all(BreakerSpec)} | set(breakers())


def _known(target: str, name: str) -> bool:
    from .brownout import FeatureSpec
    from .policies import registry
    from .ratelimit import RateLimitSpec

    if target == "breaker":
        return name in _known_breakers()
    if target == "ratelimit":
        return registry.get(RateLimitSpec, name) is not None
    return registry.get(FeatureSpec, name) is not None


def apply(site: admin.AdminSite, target: str, name: str, action: str, key: str = "") -> str:
    """Do one operator action; the message to show. Raises ``Refused`` for bad input."""
    accepted = ACTIONS[target][1]
    if action not in accepted:
        raise Refused(
            f"Unknown action {action!r} for a {target}; expected one of {', '.join(accepted)}."
        )
    if not _known(target, name):
        raise Refused(f"No {target} policy is named {name!r}; nothing was changed.")
    if target == "breaker":
        from .integration_admin import BreakerAdmin

        return BreakerAdmin(BreakerPolicy, site).apply(name, action)
    if target == "ratelimit":
        from .ratelimit import reset

        if not key:
            raise Refused("Give the key to reset, e.g. a client address.")
        found = reset(name, key)
        had = "it had counters" if found else "it had no counter"
        return f"Reset the key {key!r} of the rate limit {name!r} ({had})."
    row, _ = FeatureSwitch.objects.get_or_create(name=name, defaults={"config": {}})
    config = dict(row.config) if isinstance(row.config, dict) else {}
    config["enabled"] = action == "turn_on"
    row.config = config
    row.save()
    return f"Feature {name!r} turned {'on' if action == 'turn_on' else 'off'} in every process."


class DashboardAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The Stability page: no rows, no forms; the live state and the operator's actions."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_see_dashboard(request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return may_see_dashboard(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def _url_name(self, suffix: str) -> str:
        return f"{self.model._meta.app_label}_{self.model._meta.model_name}_{suffix}"

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.page), name=self._url_name("changelist")),
            path("status.json", wrap(self.status_json), name=self._url_name("status")),
            path("act/", wrap(require_POST(self.act)), name=self._url_name("act")),
        ]

    def _require_view(self, request: HttpRequest) -> None:
        if not self.has_view_permission(request):
            raise PermissionDenied

    def permissions(self, request: HttpRequest) -> dict[str, bool]:
        """Which actions this user may take, by target (the page shows only those buttons)."""
        return {target: may_change(request.user, model) for target, (model, _) in ACTIONS.items()}

    def _status(self, request: HttpRequest) -> dict[str, Any]:
        from .status import collect

        data = collect()
        data["permissions"] = self.permissions(request)
        return data

    def page(self, request: HttpRequest) -> HttpResponse:
        """The page, with the current status in it (the script redraws from it at once)."""
        self._require_view(request)
        context = {
            **self.admin_site.each_context(request),
            "title": "Stability",
            "subtitle": None,
            "opts": self.model._meta,
            "app_label": self.model._meta.app_label,
            "status": self._status(request),
            "status_url": reverse(f"admin:{self._url_name('status')}"),
            "act_url": reverse(f"admin:{self._url_name('act')}"),
            "refresh": settings.DASHBOARD_REFRESH,
        }
        return TemplateResponse(request, "admin/django_stability/dashboard.html", context)

    def status_json(self, request: HttpRequest) -> HttpResponse:
        """The status the page polls (the same as the public JSON status, with permissions)."""
        self._require_view(request)
        response = JsonResponse(self._status(request))
        response["Cache-Control"] = "no-store"
        return response

    def act(self, request: HttpRequest) -> HttpResponse:
        """One action from the page: JSON for the script, or a redirect with a message."""
        self._require_view(request)
        target = request.POST.get("target", "")
        name = request.POST.get("name", "").strip()
        action = request.POST.get("action", "")
        key = request.POST.get("key", "").strip()
        status, ok = 200, True
        if target not in ACTIONS:
            status, ok = 400, False
            message = f"Unknown target {target!r}; expected one of {', '.join(ACTIONS)}."
        elif not may_change(request.user, ACTIONS[target][0]):
            status, ok = 403, False
            message = f"You may not change {target} policies."
        else:
            try:
                message = apply(self.admin_site, target, name, action, key)
            except Refused as exc:
                status, ok, message = 400, False, str(exc)
            else:
                self._record(request, target, name, action, key, message)
        if "application/json" in request.headers.get("Accept", ""):
            return JsonResponse({"ok": ok, "message": message}, status=status)
        (messages.success if ok else messages.error)(request, message)
        return HttpResponseRedirect(reverse(f"admin:{self._url_name('changelist')}"))

    def _record(
        self, request: HttpRequest, target: str, name: str, action: str, key: str, message: str
    ) -> None:
        signals.operator_acted.send(
            sender=DashboardAdmin,
            user=request.user,
            target=target,
            name=name,
            action=action,
            detail=key,
        )
        model = ACTIONS[target][0]
        row = model.objects.filter(name=name).first()
        if row is not None:
            admin.ModelAdmin(model, self.admin_site).log_change(
                request, row, f"From the Stability page: {message}"
            )


admin.site.register(StabilityDashboard, DashboardAdmin)
