"""The admin: one page per policy kind, its form made from the kind's spec.

Every field of a kind is optional in the admin: a field left empty keeps the
default from code (shown under the field), a field filled in overrides it. A
value in the wrong format is refused with a message that shows the format, and
nothing is saved.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.module_loading import import_string

from .apps import import_parts
from .models import PROXIES, Policy
from .policies import PolicySpec, SpecField, registry


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ", ".join(value) if value else "(none)"
    if value is None or value == "":
        return "(empty)"
    return str(value)


def _form_field(spec: SpecField) -> forms.Field:
    label = spec.name.replace("_", " ").capitalize()
    field: forms.Field
    if spec.choices:
        field = forms.ChoiceField(
            choices=[("", "(code default)"), *[(c, c) for c in spec.choices]], required=False
        )
    elif spec.type is bool or spec.type == bool | None:
        field = forms.ChoiceField(
            choices=[("", "(code default)"), ("true", "yes"), ("false", "no")], required=False
        )
    elif "tuple" in str(spec.type):
        field = forms.CharField(
            widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), required=False, strip=True
        )
    else:
        field = forms.CharField(required=False, strip=True)
    field.label = label
    field.help_text = spec.help + (f" Format: {spec.format}." if spec.format else "")
    return field


class PolicyForm(forms.ModelForm):  # type: ignore[type-arg]
    """The base of the per-kind forms; ``spec_class`` is set by ``form_for()``."""

    spec_class: type[PolicySpec]

    class Meta:
        model = Policy
        fields = ("name", "description")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.instance.config if isinstance(self.instance.config, dict) else {}
        default = registry.code_default(self.spec_class, self.instance.name or "")
        for spec in self.spec_class.spec_fields():
            form_field = self.fields[spec.name]
            raw = config.get(spec.name)
            if raw is not None:
                if isinstance(raw, list):
                    raw = "\n".join(map(str, raw))
                elif isinstance(raw, bool):
                    raw = "true" if raw else "false"
                form_field.initial = raw
            code_value = getattr(default, spec.name) if default is not None else spec.default
            form_field.help_text = f"{form_field.help_text} Code default: {_shown(code_value)}."

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        name = (cleaned.get("name") or "").strip()
        config: dict[str, Any] = {}
        for spec in self.spec_class.spec_fields():
            raw = cleaned.get(spec.name)
            if raw not in (None, ""):
                config[spec.name] = raw
        if not name:
            return cleaned
        duplicate = Policy.objects.filter(kind=self.spec_class.kind, name=name)
        if self.instance.pk:
            duplicate = duplicate.exclude(pk=self.instance.pk)
        if duplicate.exists():
            self.add_error(
                "name",
                f"A {self.spec_class.verbose_name or self.spec_class.kind} policy named "
                f"{name!r} already exists; edit that one.",
            )
            return cleaned
        try:
            merged = self.spec_class.build(
                name, config, base=registry.code_default(self.spec_class, name)
            )
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                for field_name, errors in exc.error_dict.items():
                    target = field_name if field_name in self.fields else None
                    for error in errors:
                        self.add_error(target, error)
            else:
                self.add_error(None, exc)
            return cleaned
        # Store only what was set, in its plain form.
        plain = merged.to_config()
        self._config = {key: plain[key] for key in config}
        return cleaned

    def save(self, commit: bool = True) -> Policy:
        self.instance.config = getattr(self, "_config", {})
        return super().save(commit=commit)  # type: ignore[no-any-return]


def form_for(spec_class: type[PolicySpec]) -> type[PolicyForm]:
    """A model form with one optional field per field of the spec."""
    attrs: dict[str, Any] = {spec.name: _form_field(spec) for spec in spec_class.spec_fields()}
    attrs["spec_class"] = spec_class
    return type(f"{spec_class.__name__}Form", (PolicyForm,), attrs)


class PolicyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The admin of one policy kind."""

    spec_class: type[PolicySpec]
    list_display = ("name", "overrides", "updated_at")
    search_fields = ("name", "description")
    readonly_fields = ("effective",)

    class Media:
        css = {"all": ("django_stability/stability.css",)}

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        names = [spec.name for spec in self.spec_class.spec_fields()]
        return (
            (None, {"fields": ("name", "description")}),
            (
                f"{self.spec_class.verbose_name or self.spec_class.kind} settings",
                {
                    "fields": names,
                    "description": "Leave a field empty to keep the default from code.",
                },
            ),
            ("In effect now", {"fields": ("effective",)}),
        )

    @admin.display(description="Overrides")
    def overrides(self, obj: Policy) -> str:
        config = obj.config if isinstance(obj.config, dict) else {}
        return ", ".join(f"{k}={_shown(v)}" for k, v in sorted(config.items())) or "(none)"

    @admin.display(description="Effective policy")
    def effective(self, obj: Policy | None) -> str:
        if obj is None or not obj.pk:
            return "Saved policies show here the values every process decides with."
        spec = registry.get(self.spec_class, obj.name)
        if spec is None:
            return "(not in effect yet)"
        return format_html("<pre>{}</pre>", json.dumps(spec.to_config(), indent=2))


def register_policy_admins(site: admin.AdminSite = admin.site) -> None:
    """Register an admin page for every policy kind whose spec is known."""
    import_parts()
    for kind, spec_class in registry.kinds.items():
        model = PROXIES.get(kind)
        if model is None or site.is_registered(model):
            continue
        base = import_string(spec_class.admin_class) if spec_class.admin_class else PolicyAdmin
        model_admin = type(
            f"{spec_class.__name__}Admin",
            (base,),
            {"spec_class": spec_class, "form": form_for(spec_class)},
        )
        site.register(model, model_admin)


register_policy_admins()

from . import dashboard_admin  # noqa: E402, F401 - registers the Stability page
from .jobs import admin as jobs_admin  # noqa: E402, F401 - registers the Job admin
