"""The pure decisions of admission: classes, hysteresis, queue time, the log limiter, Gradient2."""

from __future__ import annotations

import pytest

from django_stability.adaptive import Gradient2Limit
from django_stability.policies import registry
from django_stability.shedding import (
    AdmissionSpec,
    ShedLog,
    admit_class,
    class_limits,
    classify,
    parse_request_start,
    queue_wait,
)

SHARES = {"critical": 1.0, "high": 0.9, "default": 0.75, "sheddable": 0.5}


def test_each_class_fills_its_share_of_the_limit() -> None:
    assert class_limits(4, SHARES) == {"critical": 4, "high": 3, "default": 3, "sheddable": 2}
    assert class_limits(100, SHARES) == {
        "critical": 100,
        "high": 90,
        "default": 75,
        "sheddable": 50,
    }
    # A tiny limit still lets one request of every class through.
    assert class_limits(1, SHARES)["sheddable"] == 1


def test_hysteresis_keeps_a_shed_class_out_until_load_falls_by_the_band() -> None:
    ceiling, band = 10, 2
    assert admit_class(9, ceiling, band, shedding=False) == (True, False)
    assert admit_class(10, ceiling, band, shedding=False) == (False, True)
    # Shedding started: 9 and 8 in flight are under the ceiling but not under the band.
    assert admit_class(9, ceiling, band, shedding=True) == (False, True)
    assert admit_class(8, ceiling, band, shedding=True) == (False, True)
    assert admit_class(7, ceiling, band, shedding=True) == (True, False)
    # Without a band it is a plain ceiling.
    assert admit_class(9, ceiling, 0, shedding=True) == (True, False)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("t=1700000000.123", 1700000000.123),  # nginx: t=${msec}
        ("t=1700000000123456", 1700000000.123456),  # Apache: %t, microseconds
        ("1700000000123", 1700000000.123),  # Heroku: milliseconds
        ("t=1700000000123456789", 1700000000.123456789),  # nanoseconds
        (" t=1700000000 ", 1700000000.0),
        ("", None),
        ("t=", None),
        ("soon", None),
        ("-1700000000", None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_request_start_formats(header: str, expected: float | None) -> None:
    value = parse_request_start(header)
    if expected is None:
        assert value is None
    else:
        assert value == pytest.approx(expected, abs=1e-6)


def test_queue_wait_is_never_negative_and_ignores_implausible_stamps() -> None:
    now = 1_700_000_100.0
    assert queue_wait("t=1700000090.0", now) == pytest.approx(10.0)
    assert queue_wait("t=1700000200.0", now) == 0.0  # the proxy's clock runs ahead
    assert queue_wait("t=1600000000.0", now) is None  # years old: a clock or header error
    assert queue_wait("garbage", now) is None


def test_the_log_limiter_summarises_a_storm() -> None:
    now = [0.0]
    log = ShedLog(clock=lambda: now[0])
    lines = [log.record("capacity", "GET /a", 10.0)]
    for _ in range(500):
        now[0] += 0.01
        lines.append(log.record("capacity" if now[0] < 3 else "queue_time", "GET /b", 10.0))
    now[0] = 10.5
    lines.append(log.record("capacity", "GET /c", 10.0))
    logged = [line for line in lines if line is not None]
    assert logged[0] == "Shed a request (capacity): GET /a"
    assert len(logged) == 2
    assert logged[1].startswith("Shed 501 requests in the last 10 s (capacity: ")
    assert "queue_time: " in logged[1] and logged[1].endswith("latest: GET /c")


def test_gradient2_grows_while_latency_holds_and_shrinks_when_it_rises() -> None:
    limit = Gradient2Limit(initial=20, min_limit=4, max_limit=100)
    for _ in range(300):
        limit.sample(0.05, in_flight=int(limit.limit))
    grown = limit.limit
    assert grown > 40
    for _ in range(300):
        limit.sample(0.5, in_flight=int(limit.limit))  # ten times slower: queueing
    assert limit.limit < grown / 2
    assert limit.min_limit <= limit.limit
    for _ in range(2000):
        limit.sample(0.05, in_flight=int(limit.limit))
    assert limit.limit == pytest.approx(100)  # recovered, up to the cap


def test_gradient2_learns_nothing_while_the_process_is_not_busy() -> None:
    limit = Gradient2Limit(initial=20)
    for _ in range(100):
        limit.sample(5.0, in_flight=2)  # slow, but far under the limit
    assert limit.limit == 20


def test_classify_takes_the_highest_class_among_matching_policies(rf: object) -> None:
    registry.register(
        AdmissionSpec(name="search", path_prefixes=("/search",), priority="sheddable")
    )
    registry.register(
        AdmissionSpec(name="bots", user_agents=("bot|crawler",), priority="sheddable")
    )
    registry.register(
        AdmissionSpec(name="checkout", path_prefixes=("/checkout",), priority="critical")
    )
    registry.register(
        AdmissionSpec(name="posts", path_prefixes=("/search",), methods=("POST",), priority="high")
    )
    registry.register(
        AdmissionSpec(name="off", path_prefixes=("/search",), priority="critical", mode="off")
    )

    def spec(path: str, agent: str = "Mozilla", method: str = "get") -> str | None:
        request = getattr(rf, method)(path, HTTP_USER_AGENT=agent)
        found = classify(request)
        return found.name if found else None

    assert spec("/search/?q=x") == "search"
    assert spec("/search/", method="post") == "posts"
    assert spec("/about/") is None
    assert spec("/about/", agent="Googlebot/2.1") == "bots"
    assert spec("/checkout/pay", agent="SomeCrawler") == "checkout"  # critical wins


def test_admission_spec_refuses_bad_values() -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="Expected one of critical"):
        AdmissionSpec.build("x", {"priority": "urgent"})
    with pytest.raises(ValidationError, match="User-Agent"):
        AdmissionSpec.build("x", {"user_agents": "bot("})
    with pytest.raises(ValidationError, match=r"at least 0\.001"):
        AdmissionSpec.build("x", {"queue_time_target": "0"})


def test_the_controller_follows_the_adaptive_limit(settings: object) -> None:
    from django_stability.shedding import AdmissionController

    settings.STABILITY = {  # type: ignore[attr-defined]
        **settings.STABILITY,  # type: ignore[attr-defined]
        "SHEDDING_ADAPTIVE": True,
        "SHEDDING_ADAPTIVE_INITIAL_LIMIT": 10,
        "SHEDDING_ADAPTIVE_MIN_LIMIT": 2,
    }
    now = [0.0]
    controller = AdmissionController(clock=lambda: now[0])
    assert controller.limit() == 10
    # Latency grows tenfold while the process runs at its limit: the limit falls.
    for latency in [0.01] * 200 + [0.1] * 200:
        held = [controller.try_enter("critical").admitted for _ in range(controller.limit() or 1)]
        now[0] += latency
        for admitted in held:
            if admitted is not None:
                controller.leave(admitted)
    assert controller.limit() is not None and controller.limit() < 10  # type: ignore[operator]
    # A static limit caps the adaptive one.
    settings.STABILITY = {**settings.STABILITY, "SHEDDING_MAX_IN_FLIGHT": 3}  # type: ignore[attr-defined]
    assert (controller.limit() or 0) <= 3


def test_a_forked_child_does_not_wait_for_a_lock_held_at_the_fork() -> None:
    import os
    import time

    from django_stability.shedding import controller

    held = controller.try_enter("critical").admitted
    try:
        with controller._lock:  # as if another thread were deciding at the fork
            pid = os.fork()
            if pid == 0:  # the child: nothing in flight, and it can decide
                try:
                    fine = controller.in_flight == 0
                    fine = fine and controller.try_enter("critical").admitted is not None
                    os._exit(0 if fine else 1)
                except BaseException:
                    os._exit(2)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.02)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child hung on the inherited lock")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        assert held is not None
        controller.leave(held)
