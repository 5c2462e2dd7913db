"""Old results expire: the periodic cleanup of finished jobs and of runs lost for good.

Run ``django_stability.cleanup_jobs`` from beat (``CLEANUP_SCHEDULE`` is a
ready-made entry, itself jittered) or call ``cleanup_jobs()`` from cron.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task
from django.utils import timezone

from ..conf import settings
from . import runner
from .schedules import jittered

logger = logging.getLogger("django_stability.jobs")

CLEANUP_TASK = "django_stability.cleanup_jobs"

#: A ``beat_schedule`` entry: the cleanup every hour, at a random minute.
CLEANUP_SCHEDULE: dict[str, Any] = jittered({"task": CLEANUP_TASK, "schedule": 3600.0}, 600)


@dataclass(frozen=True)
class CleanupReport:
    """How many jobs one cleanup expired, and how many lost runs it ended."""

    expired: int
    lost: int


def cleanup_jobs(now: datetime | None = None, batch: int = 500) -> CleanupReport:
    """Delete the files of jobs past their result lifetime and mark them expired.

    Also ends failed the runs that are past their hard time limit by more than
    ``JOBS_LOST_GRACE`` seconds and still say "running": their worker is gone
    without a word (the whole machine died) and nobody else will end them.
    """
    from ..models import Job

    now = now or timezone.now()
    expired = 0
    finished = Job.objects.filter(
        state__in=(Job.SUCCEEDED, Job.FAILED), expires_at__lte=now
    ).order_by("expires_at")[:batch]
    for job in finished:
        if job.result_name:
            runner.delete_result_file(job.result_name)
        expired += Job.objects.filter(pk=job.pk, state=job.state).update(
            state=Job.EXPIRED, result_name="", updated_at=now
        )
    lost = 0
    grace = timedelta(seconds=settings.JOBS_LOST_GRACE)
    running = Job.objects.filter(state=Job.RUNNING, time_limit__isnull=False)
    for job in running.order_by("started_at")[:batch]:
        if job.started_at is None or job.time_limit is None:
            continue
        if job.started_at + timedelta(seconds=job.time_limit) + grace < now:
            lost += runner.end_failed(
                job,
                runner.HARD_LIMIT_MESSAGE.format(limit=job.time_limit)
                + " Nobody reported its end: the worker was lost.",
            )
    if expired or lost:
        logger.info("Job cleanup: %d expired, %d lost runs ended", expired, lost)
    return CleanupReport(expired, lost)


@shared_task(name=CLEANUP_TASK, ignore_result=True)
def cleanup_jobs_task() -> dict[str, int]:
    """The Celery task that runs ``cleanup_jobs()``."""
    report = cleanup_jobs()
    return {"expired": report.expired, "lost": report.lost}
