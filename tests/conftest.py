"""Fixtures shared by the whole suite.

The shared Redis (``REDIS_URL``, default 127.0.0.1:6379) serves ordinary tests;
every test gets its own key prefix there, so tests and parallel runs never see
each other's state. Tests that stop, hang or kill Redis get a private server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from django_stability.test import fresh_state
from tests.redis_servers import PrivateRedis

ROOT = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    from django.conf import settings

    # Every process a test starts (gunicorn, a Celery worker, spawned children)
    # imports this checkout, not whichever one the virtualenv was installed from.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )

    url = settings.CACHES["default"]["LOCATION"]
    try:
        redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.exit(
            f"The test suite needs a real Redis at {url} ({exc}). Start one with:\n"
            "  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''",
            returncode=3,
        )


@pytest.fixture(autouse=True)
def _isolated_state(settings: Any) -> Iterator[str]:
    """A fresh key prefix, store and policy snapshot for every test."""
    prefix = (
        f"stabtest:{settings.STABILITY['STORE_KEY_PREFIX'].split(':')[1]}:{uuid.uuid4().hex[:8]}"
    )
    settings.STABILITY = {**settings.STABILITY, "STORE_KEY_PREFIX": prefix}
    with fresh_state():
        yield prefix


@pytest.fixture
def key_prefix(_isolated_state: str) -> str:
    """The store key prefix of this test."""
    return _isolated_state


@pytest.fixture
def shared_redis(settings: Any) -> redis.Redis:
    """A plain client to the shared Redis (for looking at what the store wrote)."""
    return redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, which the test may stop, hang or kill."""
    server = PrivateRedis().start()
    try:
        yield server
    finally:
        server.close()
