"""Cache policies in the admin: by name or key prefix, validated, with their counters."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import caches

from django_stability.cache import CacheSpec, counters
from django_stability.models import CachePolicy, Policy
from django_stability.policies import registry

pytestmark = pytest.mark.django_db

ADD = "/admin/django_stability/cachepolicy/add/"
FIELDS = [
    "key_prefixes",
    "ttl",
    "jitter",
    "grace",
    "stale_if_error",
    "error_backoff",
    "lease",
    "wait",
    "on_wait_timeout",
    "beta",
    "refresh",
]


def form(**fields: str) -> dict[str, str]:
    data = {"name": "products", "description": "", **dict.fromkeys(FIELDS, "")}
    data.update(fields)
    return data


def test_pages_load_with_counters(admin_client: Any) -> None:
    registry.register(CacheSpec(name="products", ttl=300))
    counters.reset()
    caches["protected"].get_or_set("admin-test-key", "v", 60, policy="products")
    policy = CachePolicy.objects.create(name="products", config={"grace": 5})
    for url in (
        "/admin/django_stability/cachepolicy/",
        ADD,
        f"/admin/django_stability/cachepolicy/{policy.pk}/change/",
    ):
        assert admin_client.get(url).status_code == 200, url
    page = admin_client.get(f"/admin/django_stability/cachepolicy/{policy.pk}/change/")
    assert b"Code default: 300" in page.content
    assert b"recomputes" in page.content and b"this process" in page.content


def test_a_policy_by_key_prefix_is_saved_with_only_its_fields(admin_client: Any) -> None:
    response = admin_client.post(
        ADD, form(key_prefixes="product:\ncategory:", ttl="120", refresh="thread")
    )
    assert response.status_code == 302
    policy = CachePolicy.objects.get()
    assert policy.config == {
        "key_prefixes": ["product:", "category:"],
        "ttl": 120.0,
        "refresh": "thread",
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("jitter", "0.9", b"from 0 to 0.5"),
        ("lease", "0", b"at least 0.05"),
        ("ttl", "soon", b"Expected a number"),
        ("on_wait_timeout", "shrug", b"Select a valid choice"),
    ],
)
def test_bad_values_are_refused(admin_client: Any, field: str, value: str, message: bytes) -> None:
    response = admin_client.post(ADD, form(**{field: value}))
    assert response.status_code == 200
    assert message in response.content
    assert not Policy.objects.exists()
