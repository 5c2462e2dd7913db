"""A Celery app for the cache's refresh task, on RabbitMQ, with a queue of this run's own.

Started as a real worker by test_cache_celery.py:
``celery -A tests.cache_celery_app worker``.
"""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from celery import Celery  # noqa: E402
from kombu import Queue  # noqa: E402

QUEUE = f"stability-cache-{os.environ['STABILITY_TEST_RUN']}"

app = Celery(
    "cache-tests", broker=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
)
app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[Queue(QUEUE, auto_delete=True)],
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    # The refresh task comes with the app (django_stability.cache); the @cached
    # function it refreshes must be importable by the worker.
    imports=["tests.cache_children"],
)
