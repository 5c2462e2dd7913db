"""The shop's Celery app: ``celery -A example_project.celery worker -B``.

Configured from the Django settings (``CELERY_*``): Redis as the broker in
Redis mode, kombu's filesystem transport when embedded. The beat schedule
runs the nightly report at midnight, jittered over 15 minutes, and the
clean-up of finished background jobs.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("shop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(lambda: ["example_project.shop"], related_name="jobs")

#: The nightly report, as it would be on every server: at 00:00, each run
#: started at a random point of the next 15 minutes.
NIGHTLY_REPORT = {"task": "shop.nightly_report", "schedule": crontab(hour=0, minute=0)}
NIGHTLY_JITTER = 900


@app.on_after_finalize.connect
def _schedule(sender: Any, **kwargs: Any) -> None:
    # Imported once Django is set up (the jobs part reads settings and models).
    from django_stability.jobs import CLEANUP_SCHEDULE, jittered

    sender.conf.beat_schedule = {
        "nightly-report": jittered(NIGHTLY_REPORT, window=NIGHTLY_JITTER),
        "stability-cleanup": CLEANUP_SCHEDULE,
    }
