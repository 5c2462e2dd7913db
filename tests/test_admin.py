"""The policy admin: pages load, bad values are refused with the format, nothing saved."""

from __future__ import annotations

from typing import Any

import pytest

from django_stability.models import Policy, RateLimitPolicy
from django_stability.policies import registry
from django_stability.ratelimit import RateLimitSpec

pytestmark = pytest.mark.django_db

ADD = "/admin/django_stability/ratelimitpolicy/add/"


def form(**fields: str) -> dict[str, str]:
    data = {
        "name": "login",
        "description": "",
        "url_names": "",
        "path_prefixes": "",
        "path_patterns": "",
        "rate": "",
        "burst": "",
        "key": "",
        "methods": "",
        "mode": "",
        "on_store_failure": "",
        "scope": "",
        "cost": "",
        "quota": "",
        "overrides": "",
        "allow_networks": "",
        "deny_networks": "",
        "aggregate_rate": "",
        "aggregate_ipv4_prefix": "",
        "aggregate_ipv6_prefix": "",
        "headers": "",
        "near_limit": "",
    }
    data.update(fields)
    return data


def test_pages_load(admin_client: Any) -> None:
    registry.register(RateLimitSpec(name="login", rate="5/m"))
    policy = RateLimitPolicy.objects.create(name="login", config={"burst": 2})
    for url in (
        "/admin/",
        "/admin/django_stability/ratelimitpolicy/",
        ADD,
        f"/admin/django_stability/ratelimitpolicy/{policy.pk}/change/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
    change = admin_client.get(f"/admin/django_stability/ratelimitpolicy/{policy.pk}/change/")
    assert b"Code default: 5/m" in change.content
    assert b"e.g. 100/m or 5/10s" in change.content  # the expected format is explained


def test_malformed_rate_is_refused_with_the_expected_format(admin_client: Any) -> None:
    response = admin_client.post(ADD, form(rate="five per minute"))
    assert response.status_code == 200
    assert b"Expected a rate as" in response.content
    assert b"e.g. 100/m or 5/10s" in response.content
    assert not Policy.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("burst", "0", b"at least 1"),
        ("burst", "lots", b"whole number"),
        ("methods", "GET\nFETCH", b"Unknown HTTP method"),
        ("mode", "sometimes", b"Select a valid choice"),
    ],
)
def test_other_bad_values_are_refused(
    admin_client: Any, field: str, value: str, message: bytes
) -> None:
    response = admin_client.post(ADD, form(**{field: value}))
    assert response.status_code == 200
    assert message in response.content
    assert not Policy.objects.exists()


def test_only_the_fields_set_are_saved(admin_client: Any) -> None:
    response = admin_client.post(ADD, form(rate="5/10s", methods="post\nGET"))
    assert response.status_code == 302
    policy = RateLimitPolicy.objects.get()
    assert policy.kind == "ratelimit"
    assert policy.config == {"rate": "5/10s", "methods": ["POST", "GET"]}


def test_a_second_policy_of_the_same_name_is_refused(admin_client: Any) -> None:
    RateLimitPolicy.objects.create(name="login")
    response = admin_client.post(ADD, form(rate="1/s"))
    assert response.status_code == 200
    assert b"already exists" in response.content
    assert Policy.objects.count() == 1


def test_the_admin_delete_action_moves_the_generation(
    admin_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from django_stability.policies import GENERATION_KEY
    from django_stability.store import get_store

    policy = RateLimitPolicy.objects.create(name="gone")
    registry.get(RateLimitSpec, "gone")
    before = get_store().get(GENERATION_KEY)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/django_stability/ratelimitpolicy/",
            {"action": "delete_selected", "_selected_action": [policy.pk], "post": "yes"},
        )
    assert response.status_code == 302
    assert not Policy.objects.exists()
    assert get_store().get(GENERATION_KEY) != before
