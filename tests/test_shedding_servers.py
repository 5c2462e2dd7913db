"""The promises of load shedding against real servers on loopback: gunicorn (gthread) and uvicorn.

Capacity is small and known: one gunicorn worker with 4 threads serving a
sheddable view that takes 0.25 s serves 16 requests per second. The flood is
sized from that, and every run is bounded in count and time. Assertions are on
status counts; the client timeouts only decide when a request counts as
unanswered, and are generous for the runs that must succeed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.load import Result, Stream, run_load
from tests.servers import Server

pytestmark = pytest.mark.slow

THREADS = 4
SERVICE = 0.25
CAPACITY = THREADS / SERVICE  # requests per second the worker can serve

CLASSES = {
    "slow": {"url_names": ["slow", "aslow"], "priority": "sheddable"},
    "critical": {
        "url_names": ["critical", "acritical", "stats", "reset", "ping", "in-flight"],
        "priority": "critical",
    },
}
ROOM = {
    "url_names": ["room"],
    "waiting_room": True,
    "limit": 2,
    "refresh": 2,
    "queue_timeout": 30,
    "visitor_timeout": 60,
}


def flood(server: Server, path: str = "/slow/", critical: str = "/critical/") -> Result:
    """Three times what the threads can serve on the slow route; a trickle of critical ones."""
    return run_load(
        server.port,
        [
            Stream("sheddable", f"{path}?s={SERVICE}", rate=3 * CAPACITY, timeout=3.0),
            Stream("critical", critical, rate=25, timeout=2.0),
        ],
        duration=4.0,
    )


def assert_nothing_left_in_flight(server: Server) -> None:
    """After the load (and a few streamed responses), only the asking request is in flight."""
    for _ in range(3):
        status, _, body = server.get("/stream/")
        assert status == 200 and body == b"chunk 0\nchunk 1\nchunk 2\n"
    status, _, body = server.get("/in-flight/")
    assert status == 200
    assert json.loads(body)["in_flight"] == 1, body


def assert_shed_well(result: Result, peak: int, share: int) -> None:
    critical = result.statuses("critical")
    assert critical[200] >= 0.99 * result.sent("critical"), critical
    shed = [o for o in result.outcomes["sheddable"] if o.status == 503]
    assert len(shed) >= result.sent("sheddable") / 3, result.statuses("sheddable")
    assert all(o.retry_after and int(o.retry_after) >= 1 for o in shed)
    assert all(o.content_type == "application/problem+json" for o in shed)
    assert result.statuses("sheddable")[200] > 0  # shed, not starved: its share is served
    assert peak <= share  # never more sheddable requests running than their share


def test_under_3x_overload_critical_requests_get_through_on_gunicorn() -> None:
    stability = {"POLICIES": {"admission": CLASSES}, "SHEDDING_MAX_IN_FLIGHT": THREADS}
    with Server("gunicorn", stability=stability, threads=THREADS) as server:
        result = flood(server)
        peak = server.stats()["peak"]["slow"]
        assert_nothing_left_in_flight(server)
    assert_shed_well(result, peak, share=THREADS // 2)


def test_without_the_middleware_critical_requests_queue_and_time_out() -> None:
    with Server("gunicorn", middleware="none", threads=THREADS) as server:
        result = flood(server)
    critical = result.statuses("critical")
    # Behind the flood in the worker's queue, most critical requests get no answer in time.
    assert critical[None] >= 0.3 * result.sent("critical"), critical
    assert 503 not in critical


def test_the_same_decisions_under_uvicorn_for_async_views() -> None:
    limit = 4  # an in-flight target for the event loop, as the thread count is for gthread
    stability = {
        "POLICIES": {"admission": CLASSES},
        "SHEDDING_MAX_IN_FLIGHT": limit,
        "SHEDDING_QUEUE_TIME_TARGET": 1.0,
    }
    with Server("uvicorn", stability=stability) as server:
        result = flood(server, path="/aslow/", critical="/acritical/")
        peak = server.stats()["peak"]["aslow"]
        before = server.stats()["runs"].get("acritical", 0)
        stale = f"t={time.time() - 5:.3f}"
        status, headers, _ = server.get("/acritical/", {"X-Request-Start": stale})
        after = server.stats()["runs"].get("acritical", 0)
        assert_nothing_left_in_flight(server)
    assert_shed_well(result, peak, share=limit // 2)
    assert status == 503 and headers["Retry-After"]
    assert after == before  # shed before the view ran


@pytest.fixture(scope="module")
def features() -> Iterator[Server]:
    """A gunicorn with classes, a queue-time target of 1 s and a waiting room of 2."""
    stability = {
        "POLICIES": {"admission": CLASSES, "concurrency": {"sale": ROOM}},
        "SHEDDING_MAX_IN_FLIGHT": THREADS,
        "SHEDDING_QUEUE_TIME_TARGET": 1.0,
    }
    with Server("gunicorn", stability=stability, threads=THREADS) as server:
        yield server


def test_an_old_x_request_start_is_shed_before_the_view(features: Server) -> None:
    runs = features.stats()["runs"].get("critical", 0)
    waited = time.time() - 5
    for header in (f"t={waited:.3f}", f"t={int(waited * 1e6)}", str(int(waited * 1000))):
        status, headers, body = features.get("/critical/", {"X-Request-Start": header})
        assert status == 503, (header, body)
        assert int(headers["Retry-After"]) >= 1
        assert b"temporary-reduced-capacity" in body
    assert features.stats()["runs"].get("critical", 0) == runs  # the view never ran
    fresh = f"t={time.time():.3f}"
    assert features.get("/critical/", {"X-Request-Start": fresh})[0] == 200
    assert features.stats()["runs"]["critical"] == runs + 1


def test_the_waiting_room_admits_in_arrival_order_on_gunicorn(features: Server) -> None:
    base = f"http://127.0.0.1:{features.port}"
    visitors = [requests.Session() for _ in range(10)]

    def visit(i: int, path: str = "/room/") -> Any:
        return visitors[i].get(base + path, headers={"Accept": "application/json"}, timeout=10)

    try:
        first = [visit(i) for i in range(10)]
        assert [r.status_code for r in first] == [200] * 2 + [503] * 8
        assert [int(r.headers["Waiting-Room-Place"]) for r in first[2:]] == list(range(1, 9))
        assert all(r.headers["Retry-After"] == "2" for r in first[2:])
        order, inside = [0, 1], [0, 1]
        while len(order) < 10:
            assert visit(inside.pop(0), "/room/leave/").text == "left"
            now_in = [
                i for i in reversed(range(10)) if i not in order and visit(i).status_code == 200
            ]
            assert len(now_in) == 1
            order += now_in
            inside += now_in
        assert order == list(range(10))

        # A forged ticket (the last admitted visitor's, altered) gets a place at the back.
        forger = requests.Session()
        cookie = next(iter(visitors[9].cookies))
        forger.cookies.set(cookie.name, cookie.value[:-2] + "xx")
        for _ in range(2):  # the room is full (8 and 9 are in): two more wait ahead of it
            assert requests.get(base + "/room/", timeout=10).status_code == 503
        answer = forger.get(base + "/room/", timeout=10)
        assert answer.status_code == 503
        assert answer.headers["Waiting-Room-Place"] == "3"
    finally:
        for session in visitors:
            session.close()
