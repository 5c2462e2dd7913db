"""Bulkheads: threads, asyncio tasks, both at once, and leases across processes."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from django.test import override_settings

from django_stability import BulkheadFull, StoreUnavailable, bulkhead, signals
from django_stability.bulkhead import Bulkhead, BulkheadSpec
from django_stability.test import override_policy
from tests.redis_servers import free_port


class Occupancy:
    """Counts the calls in progress at once, and the most ever seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def test_threads_over_the_cap_are_refused_at_once() -> None:
    slots = bulkhead("threads", max_concurrent=3)
    occupancy = Occupancy()
    release = threading.Event()
    inside = threading.Semaphore(0)
    outcomes: list[str] = []

    def work() -> None:
        occupancy.enter()
        inside.release()
        release.wait(5)
        occupancy.leave()

    def client() -> None:
        try:
            slots.call(work)
            outcomes.append("done")
        except BulkheadFull:
            outcomes.append("refused")

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    for _ in range(3):
        assert inside.acquire(timeout=5)
    late = [threading.Thread(target=client) for _ in range(5)]
    for thread in late:
        thread.start()
    for thread in late:
        thread.join()
    release.set()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["done"] * 3 + ["refused"] * 5
    assert occupancy.most == 3
    metrics = slots.metrics()
    assert (metrics.in_use, metrics.waiting, metrics.refused) == (0, 0, 5)


def test_a_short_wait_gets_the_slot_given_back_in_time() -> None:
    slots = bulkhead("waiting", max_concurrent=1, max_wait=2.0)
    first = slots.acquire()
    timer = threading.Timer(0.05, slots.release, args=(first,))
    timer.start()
    second = slots.acquire()  # waits for the release
    slots.release(second)
    held = slots.acquire()
    with pytest.raises(BulkheadFull):
        slots.acquire(wait=0.05)
    slots.release(held)
    slots.release(first)  # a second release of the same slot does nothing
    assert slots.metrics().in_use == 0


def test_asyncio_tasks_share_the_cap_and_wait_without_blocking_the_loop() -> None:
    slots = bulkhead("tasks", max_concurrent=2, max_wait=2.0)
    occupancy = Occupancy()

    @slots
    async def work() -> str:
        occupancy.enter()
        await asyncio.sleep(0.02)
        occupancy.leave()
        return "ok"

    async def main() -> list[Any]:
        return await asyncio.gather(*(work() for _ in range(8)), return_exceptions=True)

    assert asyncio.run(main()) == ["ok"] * 8
    assert occupancy.most == 2

    async def refused() -> list[Any]:
        async def hold() -> None:
            async with slots:
                await asyncio.sleep(0.1)

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        await asyncio.sleep(0.01)
        outcome: list[Any] = []
        try:
            await slots.aacquire(wait=0)
        except BulkheadFull as error:
            outcome.append(error)
        await asyncio.gather(*holders)
        return outcome

    assert len(asyncio.run(refused())) == 1


def test_a_thread_giving_back_wakes_a_waiting_task_and_cancelled_waiters_leak_nothing() -> None:
    slots = bulkhead("mixed", max_concurrent=1)
    held = slots.acquire()

    async def main() -> str:
        waiting = asyncio.create_task(slots.aacquire(wait=5))
        cancelled = asyncio.create_task(slots.aacquire(wait=5))
        await asyncio.sleep(0.02)
        cancelled.cancel()
        threading.Timer(0.05, slots.release, args=(held,)).start()
        slot = await waiting
        slots.release(slot)
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        return "woken"

    assert asyncio.run(main()) == "woken"
    metrics = slots.metrics()
    assert (metrics.in_use, metrics.waiting) == (0, 0)


def test_shadow_counts_and_reports_but_never_refuses() -> None:
    reports: list[dict[str, Any]] = []

    def record(**kwargs: Any) -> None:
        reports.append(kwargs)

    signals.bulkhead_full.connect(record, weak=False)
    try:
        slots = bulkhead("shadowed", max_concurrent=1, mode="shadow")
        first = slots.acquire()
        second = slots.acquire()  # over the cap: let through
        slots.release(second)
        slots.release(first)
    finally:
        signals.bulkhead_full.disconnect(record)
    assert [r["shadow"] for r in reports] == [True]
    assert slots.metrics().refused == 1
    with override_policy(BulkheadSpec(name="shadowed", max_concurrent=1, mode="off")):
        assert all(slots.acquire() for _ in range(5))


def test_bad_values_are_refused() -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="at least 1"):
        bulkhead("bad", max_concurrent=0)
    with pytest.raises(ValidationError, match="Expected one of"):
        bulkhead("bad", scope="galaxy")


def test_cluster_slots_are_leases_shared_by_every_process() -> None:
    bulkhead("shared-slots", max_concurrent=2, scope="cluster", lease_ttl=0.3)
    # Two objects of the same name behave as two processes would: only the store is shared.
    one, two = Bulkhead("shared-slots"), Bulkhead("shared-slots")
    a = one.acquire()
    b = two.acquire()
    with pytest.raises(BulkheadFull):
        one.acquire()
    assert one.metrics().cluster_in_use == 2
    one.release(a)
    c = two.acquire()
    two.release(c)
    # b is never given back (its process died): its lease runs out by itself.
    time.sleep(0.35)
    d, e = one.acquire(), two.acquire()
    one.release(d)
    two.release(e)
    assert one.metrics().cluster_in_use == 0
    del b


def test_cluster_cap_holds_under_threads_with_waiting() -> None:
    bulkhead("shared-threads", max_concurrent=3, scope="cluster", max_wait=3.0)
    objects = [Bulkhead("shared-threads") for _ in range(3)]
    occupancy = Occupancy()
    errors: list[BaseException] = []

    def work() -> None:
        occupancy.enter()
        time.sleep(0.02)
        occupancy.leave()

    def client(slots: Bulkhead) -> None:
        try:
            for _ in range(3):
                slots.call(work)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=client, args=(objects[i % 3],)) for i in range(9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert occupancy.most == 3


def test_cluster_scope_when_the_store_is_unreachable() -> None:
    refused_port = free_port()  # nothing listens there: connections are refused at once
    with override_settings(
        STABILITY={
            "STORE_URL": f"redis://127.0.0.1:{refused_port}/0",
            "STORE_KEY_PREFIX": "bulkhead-faults",
        }
    ):
        open_bulkhead = bulkhead("degraded-open", max_concurrent=1, scope="cluster")
        slot = open_bulkhead.acquire()  # the local store caps it per process meanwhile
        with pytest.raises(BulkheadFull):
            open_bulkhead.acquire()
        open_bulkhead.release(slot)
        closed = bulkhead("degraded-closed", scope="cluster", on_store_failure="closed")
        with pytest.raises(StoreUnavailable):
            closed.acquire()
