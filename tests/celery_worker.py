"""A real Celery worker for the tests: ``celery -A tests.celery_app worker -P prefork``.

Started as a subprocess from the repository root with this run's settings,
test database and store prefix (``tests.multiproc.child_env``), on queues
named by the test; ``start()`` returns once the worker said it is ready,
``stop()`` shuts it down (warm, then killed) and deletes the broker keys of
those queues.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from tests.multiproc import child_env

ROOT = Path(__file__).resolve().parents[1]


class CeleryWorker:
    """One ``celery worker`` process (and its pool children)."""

    def __init__(
        self, queues: list[str], *, concurrency: int = 2, prefix: str, pool: str = "prefork"
    ) -> None:
        self.queues = queues
        self.concurrency = concurrency
        self.prefix = prefix
        self.pool = pool
        self.name = f"stabtest-{uuid.uuid4().hex[:8]}@%h"
        self.dir = Path(tempfile.mkdtemp(prefix="stabtest-worker-"))
        self.ready_file = self.dir / "ready"
        self.log_file = self.dir / "worker.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> CeleryWorker:
        env = {
            **os.environ,
            **child_env(),
            "STABILITY_TEST_PREFIX": self.prefix,
            "STABILITY_TEST_WORKER_READY": str(self.ready_file),
        }
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.celery_app",
            "worker",
            "-P",
            self.pool,
            "-c",
            str(self.concurrency),
            "-Q",
            ",".join(self.queues),
            "-n",
            self.name,
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-l",
            "INFO",
        ]
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"the Celery worker exited at start:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Celery worker was not ready in {timeout} s:\n{self.log()}")
            time.sleep(0.1)
        return self

    def log(self) -> str:
        """The end of the worker's log (what a failing test shows)."""
        try:
            return self.log_file.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def children(self) -> list[int]:
        """The pids of the pool processes."""
        assert self.process is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in out.stdout.split()]

    def stop(self) -> None:
        """Warm shutdown (running jobs finish, waiting ones go back to the broker); then kill."""
        process = self.process
        if process is None:
            return
        children = self.children() if process.poll() is None else []
        self.process = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> CeleryWorker:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def delete_broker_keys(url: str, prefix: str) -> int:
    """Delete every broker key under ``prefix`` (this run's ``global_keyprefix``)."""
    client = redis.Redis.from_url(url)
    deleted = 0
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        deleted += int(client.delete(key))
    return deleted


def clean_up_run() -> None:
    """Delete what this run left on the broker (its key prefix) and its result files."""
    from django.conf import settings

    delete_broker_keys(
        settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"]
    )
    shutil.rmtree(settings.MEDIA_ROOT, ignore_errors=True)
