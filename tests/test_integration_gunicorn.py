"""Under gunicorn: a hung dependency behind a bulkhead and a timeout leaves the site answering."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.http_servers import HungServer
from tests.multiproc import child_env
from tests.redis_servers import free_port

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hung() -> Iterator[HungServer]:
    server = HungServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def site(hung: HungServer) -> Iterator[str]:
    """The test views under gunicorn: one process, 4 threads (gthread), on a free port."""
    port = free_port()
    env = {
        **os.environ,
        **child_env(),
        "DJANGO_SETTINGS_MODULE": "tests.integration_settings",
        "STABILITY_TEST_HUNG_URL": hung.url,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            "1",
            "--threads",
            "4",
            "--timeout",
            "60",
            "--graceful-timeout",
            "1",
            "tests.integration_wsgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/ping/", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start: {process.stderr.read()!r}")  # type: ignore[union-attr]
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def load(base: str, path: str, seconds: float) -> tuple[collections.Counter[Any], list[Any]]:
    """12 clients call ``path`` without pause while one client pings /ping/ every 50 ms."""
    stop_at = time.monotonic() + seconds
    statuses: collections.Counter[Any] = collections.Counter()
    pings: list[Any] = []
    lock = threading.Lock()

    def flood() -> None:
        while time.monotonic() < stop_at:
            try:
                status: Any = requests.get(base + path, timeout=5).status_code
            except requests.RequestException as error:
                status = type(error).__name__
            with lock:
                statuses[status] += 1

    def ping() -> None:
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                status: Any = requests.get(f"{base}/ping/", timeout=2).status_code
            except requests.RequestException as error:
                status = type(error).__name__
            pings.append((status, time.monotonic() - started))
            time.sleep(0.05)

    threads = [threading.Thread(target=flood) for _ in range(12)]
    threads.append(threading.Thread(target=ping))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses, pings


def test_a_hung_dependency_leaves_the_rest_of_the_site_answering(
    site: str, hung: HungServer
) -> None:
    statuses, pings = load(site, "/hung/", seconds=3.0)
    # The dependency never answers: calls time out after 0.5 s (504) or are refused at
    # once by the full bulkhead (503); never more than 2 of them wait on it at a time.
    assert statuses[504] > 0 and statuses[503] > 0, statuses
    assert set(statuses) <= {503, 504}, statuses
    assert hung.most_at_once <= 2
    # Meanwhile the other view keeps answering, every time.
    assert len(pings) > 10
    assert [status for status, _ in pings] == [200] * len(pings), pings
    assert max(took for _, took in pings) < 1.5, pings  # generous: a noisy 2-core machine

    # The control: the same dependency without the guard takes every thread of the site.
    _, unguarded_pings = load(site, "/hung-unguarded/", seconds=2.5)
    failed = [status for status, _ in unguarded_pings if status != 200]
    assert len(failed) >= len(unguarded_pings) // 2, unguarded_pings
