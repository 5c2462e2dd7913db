"""Admission through the real middleware stack, in process: classes, queue time, streaming."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from django_stability import signals
from django_stability.brownout import FeatureSpec, feature_enabled, register_feature
from django_stability.policies import registry
from django_stability.shedding import AdmissionSpec, controller
from tests.shedding_site import views

pytestmark = pytest.mark.urls("tests.shedding_site.urls")

PROBLEM = "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"


@pytest.fixture
def shedding(settings: Any) -> Iterator[None]:
    """An in-flight limit of 4 (sheddable may find 1 in flight, default 2); the site's classes."""
    settings.STABILITY = {**settings.STABILITY, "SHEDDING_MAX_IN_FLIGHT": 4}
    registry.register(AdmissionSpec(name="slow", url_names=("slow", "aslow"), priority="sheddable"))
    registry.register(
        AdmissionSpec(name="critical", url_names=("critical", "acritical"), priority="critical")
    )
    views.runs.clear()
    yield
    controller.reset()


@pytest.fixture
def shed_events() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []

    def receive(**kwargs: Any) -> None:
        events.append(kwargs)

    signals.request_shed.connect(receive)
    yield events
    signals.request_shed.disconnect(receive)


def busy(priority: str = "critical") -> Any:
    """One request of ``priority`` in flight, as if another thread were serving it."""
    verdict = controller.try_enter(priority)
    assert verdict.admitted is not None
    return verdict.admitted


def test_the_lowest_class_is_shed_first_with_a_503_problem(
    client: Client, shedding: None, shed_events: list[dict[str, Any]]
) -> None:
    other = busy()
    busy()
    response = client.get("/slow/", HTTP_ACCEPT="application/json")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert 2 <= int(response["Retry-After"]) <= 3  # SHEDDING_RETRY_AFTER, spread by up to half
    body = json.loads(response.content)
    assert body["type"] == PROBLEM and body["policy"] == "slow"
    assert views.runs["slow"] == 0  # refused before the view
    # The reserve is there for the higher classes.
    assert client.get("/critical/").status_code == 200
    assert client.get("/ping/").status_code == 200  # default class: 2 of its 3 in flight
    controller.leave(other)
    assert client.get("/slow/").status_code == 200
    assert controller.in_flight == 1
    assert [e["reason"] for e in shed_events] == ["capacity"]
    assert shed_events[0]["priority"] == "sheddable" and shed_events[0]["in_flight"] == 2
    assert shed_events[0]["shadow"] is False


def test_critical_is_refused_only_at_the_full_limit(client: Client, shedding: None) -> None:
    held = [busy() for _ in range(4)]
    assert client.get("/critical/").status_code == 503
    controller.leave(held.pop())
    assert client.get("/critical/").status_code == 200


def test_browsers_get_the_page(client: Client, shedding: None) -> None:
    busy(), busy()
    response = client.get("/slow/", HTTP_ACCEPT="text/html,application/xhtml+xml")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert b'http-equiv="refresh"' in response.content


def test_a_request_that_waited_upstream_too_long_is_shed_before_the_view(
    client: Client, settings: Any, shed_events: list[dict[str, Any]]
) -> None:
    settings.STABILITY = {**settings.STABILITY, "SHEDDING_QUEUE_TIME_TARGET": 1.0}
    views.runs.clear()
    now = time.time()
    for stale in (f"t={now - 3:.3f}", f"t={int((now - 3) * 1e6)}", str(int((now - 3) * 1000))):
        response = client.get("/critical/", HTTP_X_REQUEST_START=stale)
        assert response.status_code == 503, stale
        assert response["Retry-After"]
    assert views.runs["critical"] == 0
    assert client.get("/critical/", HTTP_X_REQUEST_START=f"t={now:.3f}").status_code == 200
    assert client.get("/critical/").status_code == 200  # no header: nothing to judge
    assert views.runs["critical"] == 2
    assert [e["reason"] for e in shed_events] == ["queue_time"] * 3
    assert shed_events[0]["waited"] >= 3 and shed_events[0]["target"] == 1.0


def test_a_policy_sets_its_own_queue_time_target(client: Client, settings: Any) -> None:
    registry.register(AdmissionSpec(name="health", url_names=("ping",), queue_time_target=30.0))
    settings.STABILITY = {**settings.STABILITY, "SHEDDING_QUEUE_TIME_TARGET": 1.0}
    stale = f"t={time.time() - 5:.3f}"
    assert client.get("/ping/", HTTP_X_REQUEST_START=stale).status_code == 200
    assert client.get("/critical/", HTTP_X_REQUEST_START=stale).status_code == 503


def test_shadow_mode_reports_and_admits(
    client: Client, settings: Any, shedding: None, shed_events: list[dict[str, Any]]
) -> None:
    settings.STABILITY = {**settings.STABILITY, "SHEDDING_MODE": "shadow"}
    busy(), busy()
    assert client.get("/slow/").status_code == 200
    assert [(e["reason"], e["shadow"]) for e in shed_events] == [("capacity", True)]
    assert controller.shed_total["sheddable"] == 0  # nothing was shed for real


def test_mode_off_does_nothing(client: Client, settings: Any, shedding: None) -> None:
    settings.STABILITY = {**settings.STABILITY, "SHEDDING_MODE": "off", "SHEDDING_MAX_IN_FLIGHT": 1}
    busy()
    assert client.get("/slow/").status_code == 200


@pytest.mark.django_db  # closing a response closes old database connections
def test_a_streaming_response_is_in_flight_until_it_is_closed(
    client: Client, shedding: None
) -> None:
    registry.register(AdmissionSpec(name="stream", url_names=("stream",), priority="sheddable"))
    busy()
    response = client.get("/stream/")
    assert response.status_code == 200
    assert controller.in_flight == 2  # the body is not sent yet
    assert client.get("/slow/").status_code == 503
    assert b"".join(response.streaming_content) == b"chunk 0\nchunk 1\nchunk 2\n"
    assert controller.in_flight == 1
    response.close()  # a second close gives back nothing more
    assert controller.in_flight == 1


def test_a_view_that_raises_gives_its_slot_back(shedding: None) -> None:
    from django.urls import path

    def boom(request: Any) -> Any:
        raise RuntimeError("boom")

    client = Client(raise_request_exception=False)
    import tests.shedding_site.urls as urls

    urls.urlpatterns.append(path("boom/", boom, name="boom"))
    try:
        from django.urls import clear_url_caches

        clear_url_caches()
        assert client.get("/boom/").status_code == 500
    finally:
        urls.urlpatterns.pop()
        clear_url_caches()
    assert controller.in_flight == 0


async def test_async_views_are_admitted_and_shed_alike(async_client: Any, shedding: None) -> None:
    other = busy()
    busy()
    response = await async_client.get("/aslow/")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert (await async_client.get("/acritical/")).status_code == 200
    controller.leave(other)
    assert (await async_client.get("/aslow/")).status_code == 200
    assert controller.in_flight == 1
    assert controller.shed_total["sheddable"] == 1


def test_log_lines_are_rate_limited(
    client: Client, shedding: None, caplog: pytest.LogCaptureFixture
) -> None:
    from django_stability import shedding as module

    module._shed_log = module.ShedLog()  # a fresh window for this test
    busy(), busy()
    with caplog.at_level(logging.WARNING, logger="django_stability.shedding"):
        for _ in range(50):
            assert client.get("/slow/").status_code == 503
    lines = [r for r in caplog.records if r.name == "django_stability.shedding"]
    assert len(lines) == 1
    assert "Shed a request (capacity): GET /slow/ priority=sheddable" in lines[0].getMessage()


def test_brownout_turns_features_off_while_the_process_sheds(
    client: Client, settings: Any, shedding: None
) -> None:
    assert feature_enabled("recommendations")
    assert client.get("/product/").content == b"product with recommendations"
    other = busy()
    busy()
    assert client.get("/slow/").status_code == 503
    assert not feature_enabled("recommendations")
    assert client.get("/product/").content == b"product"
    register_feature("search-suggestions", brownout=False)
    assert feature_enabled("search-suggestions")  # declared essential: stays on
    controller.leave(other)
    # The hold keeps it off for a while after the last refusal, then it comes back.
    settings.STABILITY = {**settings.STABILITY, "SHEDDING_BROWNOUT_HOLD": 0.2}
    controller.last_shed = controller.clock()
    assert not feature_enabled("recommendations")
    time.sleep(0.25)
    assert feature_enabled("recommendations")


def test_kill_switch(client: Client) -> None:
    from django_stability.test import override_policy

    with override_policy(FeatureSpec(name="recommendations", enabled=False)):
        assert not feature_enabled("recommendations")
        assert client.get("/product/").content == b"product"
    assert feature_enabled("recommendations")


@pytest.mark.django_db
def test_no_query_per_request_in_steady_state(
    client: Client, shedding: None, django_assert_num_queries: Any
) -> None:
    from django_stability.models import AdmissionPolicy

    AdmissionPolicy.objects.create(name="slow", config={"priority": "sheddable"})
    client.get("/critical/")  # loads the snapshot once
    with django_assert_num_queries(0):
        for _ in range(50):
            assert client.get("/critical/").status_code == 200
            assert client.get("/slow/").status_code == 200
            feature_enabled("recommendations")


def test_refusals_are_not_logged_again_by_django(
    client: Client, shedding: None, caplog: pytest.LogCaptureFixture
) -> None:
    busy(), busy()
    with caplog.at_level(logging.WARNING, logger="django.request"):
        for _ in range(20):
            assert client.get("/slow/").status_code == 503
    assert not [r for r in caplog.records if r.name == "django.request"]
