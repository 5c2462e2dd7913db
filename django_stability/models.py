"""Policy rows edited in the admin.

One table holds every kind of policy, so that a process reloads all of them in
one query; the fields of each kind live in its JSON ``config`` (plain data only)
and are validated by that kind's spec. Each kind is a proxy model, so the admin
shows one page per kind with a form made from its spec.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models

from .conf import settings as stability_settings


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


def _new_job_id() -> Any:
    import uuid

    # uuid4 draws 122 bits from os.urandom: an id nobody can guess or enumerate.
    return uuid.uuid4()


class Job(models.Model):
    """A background job, written when it is enqueued and kept up to date by the worker.

    The row exists before the message does, so a queued job is told apart from
    an unknown id; only its owner ever sees it through the job views.
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    STATES = (
        (QUEUED, "queued"),
        (RUNNING, "running"),
        (SUCCEEDED, "succeeded"),
        (FAILED, "failed"),
        (EXPIRED, "expired"),
    )
    ACTIVE = (QUEUED, RUNNING)
    FINISHED = (SUCCEEDED, FAILED, EXPIRED)

    id = models.UUIDField(primary_key=True, default=_new_job_id, editable=False)
    name = models.CharField(max_length=200, db_index=True)
    owner = models.ForeignKey(
        stability_settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    parameters = models.JSONField(default=dict, blank=True)
    dedup_key = models.CharField(
        max_length=64, editable=False, help_text="Hash of owner, name and parameters."
    )
    state = models.CharField(max_length=10, choices=STATES, default=QUEUED, db_index=True)
    progress = models.FloatField(default=0.0, help_text="From 0 to 1.")
    message = models.CharField(max_length=500, blank=True, help_text="What the job says it does.")
    error = models.TextField(blank=True, help_text="Why the job failed, as its owner sees it.")
    error_detail = models.TextField(blank=True, help_text="The traceback (admins only).")
    result_name = models.CharField(max_length=500, blank=True, help_text="Path in the storage.")
    result_filename = models.CharField(max_length=255, blank=True)
    result_content_type = models.CharField(max_length=100, blank=True)
    result_size = models.BigIntegerField(null=True, blank=True)
    # What the policy said when the job was enqueued, so that every process
    # (the worker's too) handles the job the same way.
    queue = models.CharField(max_length=200, blank=True)
    countdown = models.FloatField(default=0.0, help_text="Seconds of jittered delay before start.")
    soft_time_limit = models.FloatField(null=True, blank=True)
    time_limit = models.FloatField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    scheduled_for = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = (
            models.Index(fields=("owner", "name", "dedup_key"), name="django_stability_job_dedup"),
        )
        verbose_name = "background job"
        verbose_name_plural = "background jobs"

    def __str__(self) -> str:
        return f"{self.name} {self.id} ({self.state})"

    @property
    def active(self) -> bool:
        """True while the job is queued or running."""
        return self.state in self.ACTIVE


class StabilityDashboard(models.Model):
    """No table: the admin's Stability page, and the permission that opens it.

    Give ``django_stability.view_dashboard`` to the staff who may see the live
    state of every protection (and read the JSON status). Acting on the page
    (resetting a breaker, a rate-limit key, switching a feature) also needs the
    change permission of that policy kind.
    """

    class Meta:
        managed = False
        default_permissions = ()
        permissions = (("view_dashboard", "Can see the Stability page and the JSON status"),)
        verbose_name = "stability dashboard"
        verbose_name_plural = "stability dashboard"

    def __str__(self) -> str:
        return "Stability page"
