"""The rate-limit policy page: which keys are limited now, and resetting one."""

from __future__ import annotations

import re
from typing import Any

import pytest

from django_stability.models import RateLimitPolicy
from django_stability.policies import registry
from django_stability.ratelimit import RateLimitSpec, check

pytestmark = pytest.mark.django_db


def change_url(policy: Any) -> str:
    return f"/admin/django_stability/ratelimitpolicy/{policy.pk}/change/"


def test_the_page_shows_limited_keys_and_resets_one(admin_client: Any) -> None:
    registry.register(RateLimitSpec(name="login", rate="1/h"))
    policy = RateLimitPolicy.objects.create(name="login")
    for key in ("203.0.113.7", "198.51.100.1"):
        assert check("login", key).allowed
        assert not check("login", key).allowed
    page = admin_client.get(change_url(policy))
    assert page.status_code == 200
    assert b"Keys limited now" in page.content
    assert b"<code>203.0.113.7</code>" in page.content
    assert b"<code>198.51.100.1</code>" in page.content
    # Each may retry in about an hour (the page rounds what is left, and a
    # loaded machine may take a second or more to render it).
    left = [int(seconds) for seconds in re.findall(rb"<td>(\d+) s</td>", page.content)]
    assert len(left) == 2 and all(3590 <= seconds <= 3600 for seconds in left), left

    done = admin_client.post(change_url(policy), {"_reset_key": "203.0.113.7"}, follow=True)
    assert done.status_code == 200
    assert b"Reset &#x27;203.0.113.7&#x27; of &#x27;login&#x27; (it had counters)." in done.content
    assert b"<code>203.0.113.7</code>" not in done.content
    assert b"<code>198.51.100.1</code>" in done.content
    assert check("login", "203.0.113.7").allowed  # its counter is gone
    assert not check("login", "198.51.100.1").allowed
    assert RateLimitPolicy.objects.get().config == {}  # the form was not saved


def test_a_typed_key_can_be_reset(admin_client: Any) -> None:
    registry.register(RateLimitSpec(name="login", rate="1/h"))
    policy = RateLimitPolicy.objects.create(name="login")
    check("login", "user-42")
    done = admin_client.post(
        change_url(policy), {"_reset_key": "", "_reset_typed_key": " user-42 "}, follow=True
    )
    assert b"(it had counters)" in done.content
    empty = admin_client.post(change_url(policy), {"_reset_key": ""}, follow=True)
    assert b"Give the key to reset" in empty.content


def test_a_user_without_change_permission_cannot_reset(client: Any, django_user_model: Any) -> None:
    from django.contrib.auth.models import Permission

    registry.register(RateLimitSpec(name="login", rate="1/h"))
    policy = RateLimitPolicy.objects.create(name="login")
    check("login", "k")
    check("login", "k")
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_ratelimitpolicy"))
    client.force_login(viewer)
    client.post(change_url(policy), {"_reset_key": "k"})
    assert not check("login", "k").allowed  # still limited
