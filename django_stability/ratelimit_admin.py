"""The admin page of rate-limit policies: which keys are limited now, and resetting one."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.html import format_html, format_html_join

from .admin import PolicyAdmin
from .models import Policy

#: How many limited keys the page shows at most (the soonest to retry first).
SHOWN = 100


class RateLimitPolicyAdmin(PolicyAdmin):
    """A rate-limit policy, with the keys it refuses right now and a reset for each."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return (*super().get_readonly_fields(request, obj), "limited_now")

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is not None and obj.pk:
            fieldsets.append(
                (
                    "Limited now",
                    {
                        "fields": ("limited_now",),
                        "description": "Keys refused lately that may not retry yet. Resetting "
                        "a key forgets its counters (after a captcha or a support call).",
                    },
                )
            )
        return fieldsets

    @admin.display(description="Keys limited now")
    def limited_now(self, obj: Policy | None) -> str:
        from .ratelimit import limited_now

        if obj is None or not obj.pk:
            return ""
        keys = limited_now(obj.name, SHOWN)
        rows = format_html_join(
            "",
            '<tr><td><code>{}</code></td><td>{} s</td><td><button type="submit" '
            'name="_reset_key" value="{}" class="button">Reset</button></td></tr>',
            ((key, max(1, round(left)), key) for key, left in keys),
        )
        table = (
            format_html(
                '<table class="stability-limited"><thead><tr><th>Key</th><th>Retry in</th>'
                "<th></th></tr></thead><tbody>{}</tbody></table>",
                rows,
            )
            if keys
            else format_html("<p>{}</p>", "No key is limited right now.")
        )
        return format_html(
            '{}<p><input type="text" name="_reset_typed_key" placeholder="a key, e.g. '
            '203.0.113.7" aria-label="Key to reset"> <button type="submit" name="_reset_key" '
            'value="" class="button">Reset this key</button></p>',
            table,
        )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if request.method == "POST" and "_reset_key" in request.POST:
            return self._reset(request, object_id)
        return super().change_view(request, object_id, form_url, extra_context)

    def _reset(self, request: HttpRequest, object_id: str) -> HttpResponse:
        from .ratelimit import reset

        obj = self.get_object(request, object_id)
        if obj is None or not self.has_change_permission(request, obj):
            messages.error(request, "You may not reset counters of this policy.")
            return HttpResponseRedirect(request.path)
        key = (request.POST.get("_reset_key") or request.POST.get("_reset_typed_key") or "").strip()
        if not key:
            messages.error(request, "Give the key to reset, e.g. a client address.")
            return HttpResponseRedirect(request.path)
        found = reset(obj.name, key)
        self.log_change(request, obj, f"Reset the rate-limit counters of key {key!r}.")
        messages.success(
            request,
            f"Reset {key!r} of {obj.name!r}"
            + (" (it had counters)." if found else " (it had no counter)."),
        )
        return HttpResponseRedirect(request.path)
