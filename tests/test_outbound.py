"""Outbound HTTP against real local servers: timeouts by default, a guard per host, bounded DNS."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from django.test import override_settings

from django_stability import BreakerOpen, circuit_breaker, guard, timeout
from django_stability.breaker import OPEN
from django_stability.outbound import (
    GuardedSession,
    Resolver,
    async_httpx_client,
    guard_name,
    httpx_client,
    resolver,
)
from django_stability.outbound import session as new_session
from tests.http_servers import Dependency, HungServer
from tests.timing import timed_outcome

# Time bounds asserted with a margin for a shared, noisy 2-core machine; each is far
# below the wait it replaces (the hung server never answers at all).
MARGIN = 0.4


_opened: list[Any] = []


def session(**kwargs: Any) -> GuardedSession:
    """A session closed when the test ends: its pooled sockets must not outlive the servers."""
    made = new_session(**kwargs)
    _opened.append(made)
    return made


@pytest.fixture(autouse=True)
def _close_sessions() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


@pytest.fixture
def dependency() -> Iterator[Dependency]:
    server = Dependency().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def hung() -> Iterator[HungServer]:
    server = HungServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.slow
def test_a_slow_dependency_opens_the_breaker_on_slow_call_rate(dependency: Dependency) -> None:
    """Every answer is a 200, only slow: the breaker opens on the slow-call rate."""
    host = guard_name("127.0.0.1")
    circuit_breaker(
        host,
        window_size=4,
        minimum_calls=4,
        slow_call_duration=0.15,
        slow_call_rate_threshold=75,
        wait_in_open=30,
    )
    http = session()
    for _ in range(4):
        assert http.get(dependency.url("/slow?seconds=0.3")).status_code == 200
    breaker = circuit_breaker(host)
    assert breaker.state == OPEN
    assert breaker.metrics().slow_call_rate == 100.0
    error, took = timed_outcome(lambda: http.get(dependency.url("/slow?seconds=0.3")))
    assert isinstance(error, BreakerOpen)
    assert took < 0.05 + MARGIN  # refused at once, without waiting for the slow answer
    assert dependency.hits["/slow"] == 4  # the refused call never reached it


def test_every_call_has_a_timeout_by_default(hung: HungServer) -> None:
    guard(guard_name("127.0.0.1"), retries=0)
    with override_settings(STABILITY={"GUARD_READ_TIMEOUT": 0.2, "GUARD_CONNECT_TIMEOUT": 0.2}):
        error, took = timed_outcome(lambda: session().get(hung.url))
    assert isinstance(error, requests.ReadTimeout)
    assert took < 0.2 + MARGIN


def test_the_deadline_in_force_caps_the_timeouts(hung: HungServer) -> None:
    guard(guard_name("127.0.0.1"), retries=0)
    http = session(timeout=(10, 10))
    with timeout(0.2):
        error, took = timed_outcome(lambda: http.get(hung.url))
    assert isinstance(error, requests.ReadTimeout)
    assert took < 0.2 + MARGIN


def test_idempotent_requests_are_retried_on_5xx_and_posts_are_not(dependency: Dependency) -> None:
    host = guard_name("127.0.0.1")
    guard(
        host,
        retries=2,
        backoff=0.0,
        retry_budget_minimum=100,
        breaker={"minimum_calls": 50, "window_size": 50},
    )
    http = session()
    assert http.get(dependency.url("/fail")).status_code == 503  # returned as it came
    assert dependency.hits["/fail"] == 3  # the first try and two retries
    assert http.post(dependency.url("/fail")).status_code == 503
    assert dependency.hits["/fail"] == 4  # a POST is tried once
    assert http.get(dependency.url("/throttle")).status_code == 429
    assert dependency.hits["/throttle"] == 3  # Retry-After: 0 honoured, then retried
    assert circuit_breaker(host).metrics().failed_calls == 7


def test_per_host_guards_are_separate(dependency: Dependency) -> None:
    http = session(guards={"localhost": {"retries": 0}})
    circuit_breaker(guard_name("127.0.0.1")).trip()
    with pytest.raises(BreakerOpen):
        http.get(dependency.url("/ok"))
    # The same server under another name is another integration point.
    assert http.get(dependency.url("/ok", host="localhost")).status_code == 200
    # Without per-host guards (for code under a guard of its own): timeouts only.
    assert session(per_host_guards=False).get(dependency.url("/ok")).text == "ok"


def test_name_resolution_is_bounded_and_serves_stale_answers() -> None:
    stuck = threading.Event()
    answers = {"first": True}

    def lookup(host: str, port: int, *args: Any) -> list[Any]:
        if answers["first"]:
            answers["first"] = False
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]
        stuck.wait(10)  # a resolver that hangs, as getaddrinfo can
        return []

    now = [100.0]
    bounded = Resolver(lookup=lookup, clock=lambda: now[0])
    assert bounded.address("api.example.com", 443, timeout=0.2) == "10.1.2.3"
    now[0] += 600  # the answer is stale now; the next lookup hangs
    address, took = timed_outcome(lambda: bounded.address("api.example.com", 443, timeout=0.2))
    assert address == "10.1.2.3"  # the stale answer stands in
    assert took < 0.2 + MARGIN
    error, took = timed_outcome(lambda: bounded.address("other.example.com", 443, timeout=0.2))
    assert isinstance(error, socket.gaierror)
    assert took < 0.2 + MARGIN
    assert bounded.address("127.0.0.1", 80) == "127.0.0.1"  # an address needs no lookup
    stuck.set()


def test_a_hung_resolver_does_not_hold_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def hangs(*args: Any) -> list[Any]:
        release.wait(10)
        return []

    monkeypatch.setattr(resolver, "lookup", hangs)
    resolver.forget()
    guard(guard_name("payments.invalid"), retries=0)
    with override_settings(STABILITY={"GUARD_CONNECT_TIMEOUT": 0.2}):
        error, took = timed_outcome(lambda: session().get("http://payments.invalid/charge"))
        assert isinstance(error, requests.ConnectionError)
        assert "resolve" in str(error)
        assert took < 0.2 + MARGIN
        client = httpx_client()
        _opened.append(client)
        error, took = timed_outcome(lambda: client.get("http://payments.invalid/charge"))
        assert isinstance(error, httpx.ConnectError)
        assert took < 0.2 + MARGIN
    release.set()
    resolver.forget()


def test_real_names_resolve(dependency: Dependency) -> None:
    resolver.forget()
    assert session().get(dependency.url("/ok", host="localhost")).text == "ok"


def test_httpx_clients_are_guarded_too(dependency: Dependency, hung: HungServer) -> None:
    host = guard_name("127.0.0.1")
    guard(host, retries=1, backoff=0.0, retry_budget_minimum=100)
    with httpx_client() as client:
        assert client.get(dependency.url("/ok")).text == "ok"
        assert client.get(dependency.url("/fail")).status_code == 503
    assert dependency.hits["/fail"] == 2
    with timeout(0.2), httpx_client() as client:
        error, took = timed_outcome(lambda: client.get(hung.url))
    assert isinstance(error, httpx.ReadTimeout)
    assert took < 0.2 + MARGIN

    async def main() -> int:
        async with async_httpx_client() as client:
            response = await client.get(dependency.url("/fail"))
            return response.status_code

    assert asyncio.run(main()) == 503
    assert dependency.hits["/fail"] == 4


def test_the_book_example_rewritten_with_guard(
    dependency: Dependency, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/examples/user_profiles.py, as the Integration points page shows it."""
    from docs.examples import user_profiles as example

    monkeypatch.setattr(example, "USER_SERVICE", f"http://127.0.0.1:{dependency.port}")
    monkeypatch.setattr(example.profiles, "sleep", lambda seconds: None)
    assert example.get_user_profile(7) == {"id": 7, "name": "user 7"}
    assert example.get_user_profile(404) is None  # an answer: no retry, no fallback
    assert dependency.hits["/users/404"] == 1
    dependency.down = True
    assert example.get_user_profile(7) == {"id": 7, "name": "user 7"}  # the last good one
    with pytest.raises(requests.HTTPError):
        example.get_user_profile(8)  # nothing kept for user 8
    for _ in range(10):
        example.get_user_profile(7)
    assert example.profiles.breaker.state == OPEN
    reached = dependency.hits["/users/7"]
    for _ in range(20):
        assert example.get_user_profile(7) == {"id": 7, "name": "user 7"}
    assert dependency.hits["/users/7"] == reached  # open: served from the cache, not called
    example.http.close()
