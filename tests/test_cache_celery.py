"""Background refresh by a real Celery worker (RabbitMQ, a queue of this run's own)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches

from tests.cache_celery_app import app
from tests.cache_children import celery_refreshed

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def worker() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.cache_celery_app",
            "worker",
            "--pool=solo",
            # A node name of this run's own: the default one's control queue is
            # exclusive, and other workers may run on this machine.
            f"--hostname=cache-{os.environ['STABILITY_TEST_RUN']}@%h",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=WARNING",
        ],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        node = f"cache-{os.environ['STABILITY_TEST_RUN']}@{socket.gethostname()}"
        while not app.control.ping(destination=[node], timeout=0.5):
            assert process.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, "the worker did not answer"
        yield process
    finally:
        # Nothing is left for it to finish, and a warm shutdown of the solo pool
        # takes seconds: stop it at once (its queue is deleted with its connection).
        process.kill()
        process.wait(10)


def test_a_stale_value_is_refreshed_by_a_celery_worker(
    worker: subprocess.Popen[bytes], shared_redis: Any
) -> None:
    item = int(time.time() * 1000) % 1_000_000
    cache = caches["protected"]
    key = celery_refreshed.cache_key(item)  # type: ignore[attr-defined]
    cache.get_or_set(key, lambda: "stale", 0.1)  # the default policy: the code's TTL
    time.sleep(0.15)
    from celery import current_app

    previous = current_app._get_current_object()
    app.set_current()  # the task is sent through this run's app and queue
    try:
        assert celery_refreshed(item) == "stale"  # at once: the worker recomputes
    finally:
        previous.set_current()
    deadline = time.monotonic() + 10
    while not str(cache.get(key)).startswith("refreshed") and time.monotonic() < deadline:
        time.sleep(0.05)
    value = cache.get(key)
    worker_pid = shared_redis.get(f"celery-refreshed:{item}:pid")
    assert value == f"refreshed {item} in {int(worker_pid)}"
    assert int(worker_pid) == worker.pid  # computed in the worker, not in this process
