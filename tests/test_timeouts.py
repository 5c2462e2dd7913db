"""Timeouts: the caller released on time, abandoned work capped, deadlines passed down for real."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis
from django.db import OperationalError, connection, transaction

from django_stability import BulkheadFull, DeadlineExceeded, bulkhead, timeout
from django_stability.timeouts import (
    DeadlineConnection,
    deadline,
    parse_pg_duration,
    remaining,
    running_threads,
)
from tests.redis_servers import PrivateRedis
from tests.timing import timed_outcome

# The promises below are time bounds; the margin is for a shared, noisy 2-core
# machine and stays far below the waits the timeouts cut short (2 s and more).
MARGIN = 0.35


def test_the_caller_is_released_at_the_deadline_and_abandoned_work_is_capped() -> None:
    slots = bulkhead("abandoned", max_concurrent=2)
    hang = threading.Event()
    finished: list[str] = []

    def stuck(tag: str) -> str:
        hang.wait(10)
        finished.append(tag)
        return tag

    bounded_call = timeout(0.1, bulkhead="abandoned")
    for tag in ("a", "b"):
        error, took = timed_outcome(lambda tag=tag: bounded_call.call(stuck, tag))
        assert isinstance(error, DeadlineExceeded) and isinstance(error, TimeoutError)
        assert took < 0.1 + MARGIN
    # Two hung calls hold both slots: the third is refused at once, no new thread.
    threads_before = running_threads()
    error, took = timed_outcome(lambda: bounded_call.call(stuck, "c"))
    assert isinstance(error, BulkheadFull)
    assert took < MARGIN
    assert running_threads() == threads_before
    assert slots.metrics().in_use == 2
    hang.set()  # the abandoned work ends by itself and gives its slots back
    deadline_at = time.monotonic() + 5
    while slots.metrics().in_use and time.monotonic() < deadline_at:
        time.sleep(0.01)
    assert sorted(finished) == ["a", "b"]
    assert slots.metrics().in_use == 0
    assert bounded_call.call(lambda: "quick") == "quick"


def test_results_errors_and_the_deadline_reach_across_the_thread() -> None:
    @timeout(1.0)
    def work(x: int) -> tuple[int, float | None]:
        return x + 1, remaining()

    value, left = work(1)
    assert value == 2 and left is not None and 0 < left <= 1.0

    @timeout(1.0)
    def broken() -> None:
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        broken()


def test_a_coroutine_is_cancelled_at_the_deadline() -> None:
    cancelled = []

    @timeout(0.1)
    async def slow() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    error, took = timed_outcome(lambda: asyncio.run(slow()))
    assert isinstance(error, DeadlineExceeded)
    assert took < 0.1 + MARGIN
    assert cancelled == [True]


def test_a_deadline_block_tells_the_code_inside_and_nests_to_the_tighter() -> None:
    assert remaining() is None
    with timeout(10):
        outer = remaining()
        with deadline(0.5):
            inner = remaining()
            with deadline(30):
                assert remaining() <= 0.5  # type: ignore[operator]
        assert remaining() > 5  # type: ignore[operator]
    assert remaining() is None
    assert outer is not None and inner is not None and inner <= 0.5 < outer <= 10


def test_bad_timeouts_are_refused() -> None:
    with pytest.raises(ValueError, match="above 0"):
        timeout(0)


def test_postgresql_durations() -> None:
    assert [parse_pg_duration(v) for v in ("0", "500ms", "5s", "2min", "250")] == [
        0,
        500,
        5000,
        120_000,
        250,
    ]


@pytest.mark.django_db(transaction=True)
def test_the_deadline_becomes_postgresql_statement_timeout() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")  # the connection exists, with its wrapper
        with deadline(0.3):
            error, took = timed_outcome(lambda: cursor.execute("SELECT pg_sleep(3)"))
        assert isinstance(error, OperationalError)
        assert "statement timeout" in str(error)
        assert took < 0.3 + MARGIN
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"  # back to the default outside the deadline
        with deadline(5):
            cursor.execute("SELECT pg_sleep(0.01)")  # enough time: runs


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_does_not_leave_the_deadline_unset() -> None:
    with connection.cursor() as cursor:
        with pytest.raises(OperationalError), transaction.atomic(), deadline(0.3):
            cursor.execute("SELECT pg_sleep(3)")
        # The rollback undid our SET; the next query under a deadline sets it again.
        with deadline(0.3):
            error, took = timed_outcome(lambda: cursor.execute("SELECT pg_sleep(3)"))
        assert isinstance(error, OperationalError)
        assert took < 0.3 + MARGIN


@pytest.mark.slow
def test_the_deadline_bounds_redis_socket_waits(private_redis: PrivateRedis) -> None:
    pool = redis.ConnectionPool(
        host="127.0.0.1",
        port=private_redis.port,
        socket_timeout=10,
        socket_connect_timeout=10,
        connection_class=DeadlineConnection,
    )
    client = redis.Redis(connection_pool=pool, retry=None)
    assert client.set("k", "v")
    private_redis.hang()
    try:
        with deadline(0.3):
            error, took = timed_outcome(lambda: client.get("k"))
        assert isinstance(error, redis.TimeoutError)
        assert took < 0.3 + MARGIN  # not the connection's 10 s
        fresh = redis.Redis(
            connection_pool=redis.ConnectionPool(
                host="127.0.0.1",
                port=private_redis.port,
                socket_timeout=10,
                connection_class=DeadlineConnection,
            ),
            retry=None,
        )
        with deadline(0.3):
            error, took = timed_outcome(lambda: fresh.ping())
        assert isinstance(error, redis.TimeoutError)
        assert took < 0.3 + MARGIN
    finally:
        private_redis.resume()
    assert client.get("k") == b"v"


@pytest.mark.django_db(transaction=True)
def test_the_deadline_applies_to_server_side_cursors_too() -> None:
    from django.contrib.auth.models import Group

    Group.objects.bulk_create(Group(name=f"g{i}") for i in range(5))
    with deadline(5), transaction.atomic():
        # .iterator() runs on a named (server-side) cursor: SET must not go through it.
        assert len(list(Group.objects.iterator(chunk_size=2))) == 5
