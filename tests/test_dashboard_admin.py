"""The Stability page in the admin: who sees it, what it embeds, and the operator's actions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User

from django_stability import circuit_breaker, signals
from django_stability.breaker import get_breaker
from django_stability.brownout import feature_enabled, register_feature
from django_stability.models import BreakerPolicy, FeatureSwitch
from django_stability.policies import registry
from django_stability.ratelimit import RateLimitSpec, check
from tests.operations import fresh_counts

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_counts")]

__all__ = ["fresh_counts"]

PAGE = "/admin/django_stability/stabilitydashboard/"
ACT = f"{PAGE}act/"


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def act(client: Any, capture: Any, *, json_reply: bool = True, **fields: str) -> Any:
    headers = {"HTTP_ACCEPT": "application/json"} if json_reply else {}
    with capture(execute=True):
        return client.post(ACT, fields, **headers)


def test_the_page_embeds_the_status_and_the_script(admin_client: Any) -> None:
    circuit_breaker("payments")
    page = admin_client.get(PAGE)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="stability-dashboard"' in html
    assert "django_stability/dashboard.js" in html
    assert f'data-status-url="{PAGE}status.json"' in html
    start = html.index('<script id="stability-initial" type="application/json">')
    embedded = html[start:].split(">", 1)[1].split("</script>", 1)[0]
    data = json.loads(embedded)
    assert "payments" in [row["name"] for row in data["breakers"]]
    assert data["permissions"] == {"breaker": True, "ratelimit": True, "feature": True}


def test_the_admin_index_links_to_the_page_for_those_who_may_see_it(client: Any) -> None:
    client.force_login(staff("viewer", "view_dashboard"))
    index = client.get("/admin/").content.decode()
    assert PAGE in index
    client.force_login(staff("clerk"))
    assert PAGE not in client.get("/admin/").content.decode()


def test_who_may_open_the_page(client: Any) -> None:
    response = client.get(PAGE)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    customer = User.objects.create_user("customer", password="pw")
    customer.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client.force_login(customer)  # the permission without staff status opens nothing
    assert client.get(PAGE).status_code == 302
    assert client.get(f"{PAGE}status.json").status_code == 302
    client.force_login(staff("clerk"))
    assert client.get(PAGE).status_code == 403
    assert client.get(f"{PAGE}status.json").status_code == 403
    client.force_login(staff("viewer", "view_dashboard"))
    assert client.get(PAGE).status_code == 200
    polled = client.get(f"{PAGE}status.json")
    assert polled.status_code == 200 and "no-store" in polled["Cache-Control"]
    assert polled.json()["permissions"] == {"breaker": False, "ratelimit": False, "feature": False}


def test_forcing_a_breaker_open_and_resetting_it_reach_the_breaker(
    admin_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    breaker = circuit_breaker("payments")
    done = act(
        admin_client,
        django_capture_on_commit_callbacks,
        target="breaker",
        name="payments",
        action="forced_open",
    )
    assert done.status_code == 200 and done.json()["ok"]
    assert BreakerPolicy.objects.get(name="payments").config["mode"] == "forced_open"
    breaker.refresh_policy()
    assert breaker.state == "forced_open"
    polled = admin_client.get(f"{PAGE}status.json").json()
    [row] = [row for row in polled["breakers"] if row["name"] == "payments"]
    assert row["state"] == "forced_open"
    act(
        admin_client,
        django_capture_on_commit_callbacks,
        target="breaker",
        name="payments",
        action="automatic",
    )
    get_breaker("payments").trip("by the test")
    done = act(
        admin_client,
        django_capture_on_commit_callbacks,
        target="breaker",
        name="payments",
        action="reset",
    )
    assert "reset" in done.json()["message"]
    assert get_breaker("payments").state == "closed"
    entries = LogEntry.objects.filter(object_repr__contains="payments")
    assert entries.count() == 3
    assert "From the Stability page" in entries.first().get_change_message()  # type: ignore[union-attr]


def test_without_json_an_action_redirects_back_with_a_message(
    admin_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    circuit_breaker("payments")
    done = act(
        admin_client,
        django_capture_on_commit_callbacks,
        json_reply=False,
        target="breaker",
        name="payments",
        action="disabled",
    )
    assert done.status_code == 302 and done["Location"] == PAGE
    page = admin_client.get(PAGE)
    assert b"set to disabled" in page.content


def test_resetting_a_rate_limit_key(
    admin_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    registry.register(RateLimitSpec(name="login", rate="1/h"))
    check("login", "203.0.113.7")
    assert not check("login", "203.0.113.7").allowed
    done = act(
        admin_client,
        django_capture_on_commit_callbacks,
        target="ratelimit",
        name="login",
        action="reset_key",
        key="203.0.113.7",
    )
    assert done.json() == {
        "ok": True,
        "message": "Reset the key '203.0.113.7' of the rate limit 'login' (it had counters).",
    }
    assert check("login", "203.0.113.7").allowed
    empty = act(
        admin_client,
        django_capture_on_commit_callbacks,
        target="ratelimit",
        name="login",
        action="reset_key",
        key=" ",
    )
    assert empty.status_code == 400 and "Give the key" in empty.json()["message"]


def test_turning_a_feature_off_and_on(
    admin_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    register_feature("recommendations")
    heard: list[dict[str, Any]] = []

    def listen(**kwargs: Any) -> None:
        heard.append(kwargs)

    signals.operator_acted.connect(listen)
    try:
        act(
            admin_client,
            django_capture_on_commit_callbacks,
            target="feature",
            name="recommendations",
            action="turn_off",
        )
        registry.reload()
        assert not feature_enabled("recommendations")
        assert FeatureSwitch.objects.get(name="recommendations").config == {"enabled": False}
        act(
            admin_client,
            django_capture_on_commit_callbacks,
            target="feature",
            name="recommendations",
            action="turn_on",
        )
        registry.reload()
        assert feature_enabled("recommendations")
    finally:
        signals.operator_acted.disconnect(listen)
    assert [(h["target"], h["action"], h["user"].username) for h in heard] == [
        ("feature", "turn_off", "admin"),
        ("feature", "turn_on", "admin"),
    ]


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"target": "nuke", "name": "x", "action": "reset"}, 400, "Unknown target"),
        ({"target": "breaker", "name": "payments", "action": "explode"}, 400, "Unknown action"),
        ({"target": "breaker", "name": "no-such", "action": "reset"}, 400, "No breaker policy"),
        ({"target": "feature", "name": "no-such", "action": "turn_off"}, 400, "No feature policy"),
        (
            {"target": "ratelimit", "name": "no-such", "action": "reset_key", "key": "k"},
            400,
            "No ratelimit",
        ),
    ],
)
def test_bad_actions_are_refused_and_change_nothing(
    admin_client: Any,
    django_capture_on_commit_callbacks: Any,
    fields: dict[str, str],
    status: int,
    says: str,
) -> None:
    circuit_breaker("payments")
    done = act(admin_client, django_capture_on_commit_callbacks, **fields)
    assert done.status_code == status
    assert says in done.json()["message"] and not done.json()["ok"]
    assert not BreakerPolicy.objects.exists() and not FeatureSwitch.objects.exists()
    assert not LogEntry.objects.exists()


def test_an_action_needs_the_change_permission_of_its_kind(
    client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    circuit_breaker("payments")
    register_feature("recommendations")
    client.force_login(staff("viewer", "view_dashboard"))
    refused = act(
        client,
        django_capture_on_commit_callbacks,
        target="breaker",
        name="payments",
        action="reset",
    )
    assert refused.status_code == 403
    client.force_login(staff("operator", "view_dashboard", "change_breakerpolicy"))
    assert act(
        client,
        django_capture_on_commit_callbacks,
        target="breaker",
        name="payments",
        action="reset",
    ).json()["ok"]
    assert (
        act(
            client,
            django_capture_on_commit_callbacks,
            target="feature",
            name="recommendations",
            action="turn_off",
        ).status_code
        == 403
    )
    assert client.get(ACT).status_code == 405
