"""Background jobs on Celery: 202 Accepted, jittered starts, time limits, dedup, backpressure.

The public names are re-exported here; see ``background`` (the decorator and
the view helper), ``runner`` (what runs in the worker), ``schedules`` (jitter
for periodic tasks, ``spread``), ``backpressure`` and ``cleanup``.
"""

from __future__ import annotations

from django.db.models.signals import post_delete

from .background import BackgroundJob, Submission, accepted, background_job
from .cleanup import CLEANUP_SCHEDULE, CleanupReport, cleanup_jobs
from .policy import JobSpec
from .runner import JobFailed, RunningJob, job_deleted
from .schedules import JITTER_HEADER, SpreadResult, jittered, plan_spread, spread

__all__ = [
    "CLEANUP_SCHEDULE",
    "JITTER_HEADER",
    "BackgroundJob",
    "CleanupReport",
    "JobFailed",
    "JobSpec",
    "RunningJob",
    "SpreadResult",
    "Submission",
    "accepted",
    "background_job",
    "cleanup_jobs",
    "jittered",
    "plan_spread",
    "spread",
]

post_delete.connect(job_deleted, sender="django_stability.Job", dispatch_uid="django_stability.job")
