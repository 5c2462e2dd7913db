"""The admin of cache policies: the generic policy form, plus what each policy counted."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from ..admin import PolicyAdmin
from ..models import Policy
from .counters import EVENTS, counters, shared_counters


class CachePolicyAdmin(PolicyAdmin):
    """Cache policies, with today's counters of every process and of this one."""

    readonly_fields = (*PolicyAdmin.readonly_fields, "counters")  # type: ignore[assignment]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return (*super().get_fieldsets(request, obj), ("Counters", {"fields": ("counters",)}))

    @staticmethod
    def _shared(name: str) -> dict[str, int] | None:
        try:
            return shared_counters(name)
        except Exception:  # the page must load while the store fails
            return None

    def counters(self, obj: Policy | None) -> str:
        if obj is None or not obj.pk:
            return "Counters show once the policy is saved."
        everyone = self._shared(obj.name)
        here = counters.snapshot().get(obj.name, {})
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            (
                (event, "?" if everyone is None else everyone.get(event, 0), here.get(event, 0))
                for event in EVENTS
            ),
        )
        return format_html(
            "<table><tr><th></th><th>today, every process</th><th>this process</th></tr>{}</table>",
            rows,
        )

    counters.short_description = "Counters"  # type: ignore[attr-defined]
