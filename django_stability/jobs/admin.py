"""The admin of background jobs: what ran, for whom, how it ended; expire results by hand."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from ..models import Job
from .cleanup import cleanup_jobs


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Jobs are written by the app; the admin reads them and can expire finished ones."""

    list_display = ("id", "name", "owner", "state", "progress_percent", "attempts", "created_at")
    list_filter = ("state", "name", "queue")
    search_fields = ("=id", "name", "owner__username")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    actions = ("expire_now",)
    readonly_fields = [field.name for field in Job._meta.fields]

    @admin.display(description="Progress")
    def progress_percent(self, obj: Job) -> str:
        return f"{obj.progress * 100:.0f}%"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Expire the selected finished jobs now (delete their files)")
    def expire_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        now = timezone.now()
        count = queryset.filter(state__in=(Job.SUCCEEDED, Job.FAILED)).update(expires_at=now)
        report = cleanup_jobs(now=now)
        self.message_user(
            request,
            f"{count} job(s) set to expire; {report.expired} expired now.",
            messages.SUCCESS,
        )
