"""Policy rows edited in the admin.

One table holds every kind of policy, so that a process reloads all of them in
one query; the fields of each kind live in its JSON ``config`` (plain data only)
and are validated by that kind's spec. Each kind is a proxy model, so the admin
shows one page per kind with a form made from its spec.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models


class PolicyQuerySet(models.QuerySet["Policy"]):
    """Bulk changes tell every process, as saves and deletes do."""

    def _invalidate(self) -> None:
        from .policies import registry

        registry.invalidate(using=self.db)

    def update(self, **kwargs: Any) -> int:
        count = super().update(**kwargs)
        self._invalidate()
        return count

    def delete(self) -> tuple[int, dict[str, int]]:
        result = super().delete()
        self._invalidate()
        return result

    def bulk_create(self, *args: Any, **kwargs: Any) -> list[Policy]:
        result = super().bulk_create(*args, **kwargs)
        self._invalidate()
        return result

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        result = super().bulk_update(*args, **kwargs)
        self._invalidate()
        return result


class KindManager(models.Manager["Policy"]):
    """The rows of one kind only."""

    def __init__(self, kind: str | None = None) -> None:
        super().__init__()
        self.kind = kind

    def get_queryset(self) -> PolicyQuerySet:
        queryset = PolicyQuerySet(self.model, using=self._db)
        return queryset.filter(kind=self.kind) if self.kind else queryset


class Policy(models.Model):
    """An override, set in the admin, of the policy of this kind and name."""

    #: Set on each proxy; ``save()`` writes it into ``kind``.
    policy_kind: ClassVar[str] = ""

    kind = models.CharField(max_length=40, db_index=True, editable=False)
    name = models.CharField(
        max_length=200,
        help_text='The name used in code, e.g. @rate_limit("login") or guard("payments").',
    )
    config = models.JSONField(
        default=dict,
        blank=True,
        help_text="The fields this row overrides; fields left out keep the code default.",
    )
    description = models.TextField(blank=True, help_text="Why this override exists.")
    updated_at = models.DateTimeField(auto_now=True)

    objects = KindManager()

    class Meta:
        ordering = ("kind", "name")
        constraints = (
            models.UniqueConstraint(
                fields=("kind", "name"), name="django_stability_policy_kind_name"
            ),
        )
        verbose_name = "policy"
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.policy_kind:
            self.kind = self.policy_kind
        super().save(*args, **kwargs)


def _proxy(kind: str, class_name: str, verbose: str, plural: str) -> type[Policy]:
    meta = type("Meta", (), {"proxy": True, "verbose_name": verbose, "verbose_name_plural": plural})
    attrs = {
        "__module__": __name__,
        "Meta": meta,
        "policy_kind": kind,
        "objects": KindManager(kind),
        "__doc__": f"The {verbose}s (policies of kind {kind!r}).",
    }
    return type(class_name, (Policy,), attrs)


# One proxy per kind. The admin shows a kind once its spec is registered.
RateLimitPolicy = _proxy("ratelimit", "RateLimitPolicy", "rate-limit policy", "rate-limit policies")
AdmissionPolicy = _proxy("admission", "AdmissionPolicy", "admission policy", "admission policies")
ConcurrencyPolicy = _proxy(
    "concurrency", "ConcurrencyPolicy", "concurrency policy", "concurrency policies"
)
FeatureSwitch = _proxy("feature", "FeatureSwitch", "feature switch", "feature switches")
BreakerPolicy = _proxy(
    "breaker", "BreakerPolicy", "circuit-breaker policy", "circuit-breaker policies"
)
BulkheadPolicy = _proxy("bulkhead", "BulkheadPolicy", "bulkhead policy", "bulkhead policies")
GuardPolicy = _proxy("guard", "GuardPolicy", "guard policy", "guard policies")
CachePolicy = _proxy("cache", "CachePolicy", "cache policy", "cache policies")
JobPolicy = _proxy("job", "JobPolicy", "job policy", "job policies")

PROXIES: dict[str, type[Policy]] = {
    model.policy_kind: model
    for model in (
        RateLimitPolicy,
        AdmissionPolicy,
        ConcurrencyPolicy,
        FeatureSwitch,
        BreakerPolicy,
        BulkheadPolicy,
        GuardPolicy,
        CachePolicy,
        JobPolicy,
    )
}
