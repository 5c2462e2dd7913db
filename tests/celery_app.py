"""The Celery app of the test suite, configured from the test settings (``CELERY_*``).

Workers started by the tests run ``celery -A tests.celery_app worker``; the
test process sends with the same app (``STABILITY["JOBS_CELERY_APP"]``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django
from django.apps import apps

if not apps.ready:
    django.setup()

from celery import Celery
from celery.signals import worker_init, worker_ready

app = Celery("stabtest")
app.config_from_object("django.conf:settings", namespace="CELERY")

import tests.testapp.jobs  # noqa: E402 - the jobs the tests run
import tests.testapp.protected_tasks  # noqa: E402, F401 - tasks under rate limits, breakers...


@worker_init.connect
def _show_job_warnings(**kwargs: Any) -> None:
    # The test settings silence django_stability's loggers; a worker's log
    # shows what the jobs part reports, as a project's logging would. (Added
    # once the worker has set up Django's logging, which would drop it.)
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    logging.getLogger("django_stability.jobs").addHandler(handler)


@worker_ready.connect
def _announce_ready(**kwargs: Any) -> None:
    # The test that started this worker waits for this file.
    path = os.environ.get("STABILITY_TEST_WORKER_READY")
    if path:
        Path(path).touch()
