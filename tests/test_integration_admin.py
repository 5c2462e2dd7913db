"""The breaker and bulkhead admin pages: live state, and the operator's actions reach the code."""

from __future__ import annotations

from typing import Any

import pytest

from django_stability import BreakerOpen, bulkhead, circuit_breaker
from django_stability.models import BreakerPolicy, BulkheadPolicy

pytestmark = pytest.mark.django_db

BREAKERS = "/admin/django_stability/breakerpolicy/"
BULKHEADS = "/admin/django_stability/bulkheadpolicy/"


def fail() -> None:
    raise ConnectionError


def test_the_breaker_page_shows_live_state_of_breakers_defined_in_code(admin_client: Any) -> None:
    breaker = circuit_breaker("payments", window_size=4, minimum_calls=4, wait_in_open=30)
    for _ in range(4):
        with pytest.raises(ConnectionError):
            breaker.call(fail)
    page = admin_client.get(BREAKERS)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Live state (this process)" in html
    assert "payments" in html
    assert 'class="stability-state open"' in html
    assert "100%" in html  # the failure rate that opened it
    assert "Force open" in html and "Reset" in html and "Shadow" in html
    row = BreakerPolicy.objects.create(name="payments", config={"wait_in_open": 30})
    assert admin_client.get(f"{BREAKERS}{row.pk}/change/").status_code == 200
    assert admin_client.get(f"{BREAKERS}add/").status_code == 200
    listed = admin_client.get(BREAKERS).content.decode()
    assert "open: failures 100%" in listed


def act(client: Any, url: str, name: str, action: str, capture: Any) -> Any:
    with capture(execute=True):
        return client.post(f"{url}live/", {"name": name, "action": action})


def test_force_open_disable_shadow_and_automatic_reach_the_breaker(
    admin_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    breaker = circuit_breaker("inventory")
    response = act(
        admin_client, BREAKERS, "inventory", "forced_open", django_capture_on_commit_callbacks
    )
    assert response.status_code == 302
    assert BreakerPolicy.objects.get(name="inventory").config == {"mode": "forced_open"}
    breaker.refresh_policy()
    with pytest.raises(BreakerOpen):
        breaker.call(lambda: 1)
    for action, state in (
        ("disabled", "disabled"),
        ("metrics_only", "closed"),
        ("automatic", "closed"),
    ):
        act(admin_client, BREAKERS, "inventory", action, django_capture_on_commit_callbacks)
        breaker.refresh_policy()
        assert breaker.state == state
        assert breaker.spec.mode == action
        assert breaker.call(lambda: 1) == 1


def test_reset_closes_and_forgets(
    admin_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    breaker = circuit_breaker("search", window_size=2, minimum_calls=2)
    breaker.trip()
    act(admin_client, BREAKERS, "search", "reset", django_capture_on_commit_callbacks)
    assert breaker.state == "closed"
    assert breaker.call(lambda: 1) == 1
    assert "reset_token" in BreakerPolicy.objects.get(name="search").config


def test_bulk_actions_and_bad_requests(
    admin_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    circuit_breaker("a")
    rows = [BreakerPolicy.objects.create(name=name) for name in ("a", "b")]
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            BREAKERS,
            {"action": "action_forced_open", "_selected_action": [r.pk for r in rows]},
        )
    assert response.status_code == 302
    assert {r.name: r.config for r in BreakerPolicy.objects.all()} == {
        "a": {"mode": "forced_open"},
        "b": {"mode": "forced_open"},
    }
    follow = admin_client.post(f"{BREAKERS}live/", {"name": "a", "action": "explode"}, follow=True)
    assert b"nothing done" in follow.content
    assert admin_client.get(f"{BREAKERS}live/").status_code == 405


def test_the_live_actions_need_the_change_permission(client: Any, django_user_model: Any) -> None:
    circuit_breaker("guarded")
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(user)
    response = client.post(f"{BREAKERS}live/", {"name": "guarded", "action": "forced_open"})
    assert response.status_code == 403
    assert not BreakerPolicy.objects.exists()


def test_the_bulkhead_page_shows_slots_and_switches_modes(
    admin_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    slots = bulkhead("reports", max_concurrent=3)
    held = slots.acquire()
    html = admin_client.get(BULKHEADS).content.decode()
    assert "reports" in html and "In use here" in html
    act(admin_client, BULKHEADS, "reports", "shadow", django_capture_on_commit_callbacks)
    assert BulkheadPolicy.objects.get(name="reports").config == {"mode": "shadow"}
    assert slots.spec.mode == "shadow"
    slots.release(held)
