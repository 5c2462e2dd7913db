"""The cache's system checks, one test per ID: fires when it should, quiet when not."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from django_stability import checks

PROTECTED = "django_stability.cache.StampedeProtectedRedisCache"
LOCMEM = "django_stability.cache.StampedeProtectedLocMemCache"
DJANGO = "django_stability.cache.StampedeProtectedDjangoRedisCache"


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


def caches(**options: Any) -> dict[str, Any]:
    return {"default": {"BACKEND": PROTECTED, "LOCATION": "redis://x", "OPTIONS": options}}


@pytest.mark.parametrize(
    ("client", "fires"),
    [
        ("django_redis.client.DefaultClient", False),
        ("django_redis.client.SentinelClient", False),
        ("django_redis.client.ShardClient", True),
        ("django_redis.client.HerdClient", True),
    ],
)
def test_e040_protected_cache_needs_one_redis_and_its_own_envelope(
    client: str, fires: bool
) -> None:
    with override_settings(CACHES=caches(CLIENT_CLASS=client)):
        assert ids(checks.check_protected_cache_client()) == (
            ["django_stability.E040"] if fires else []
        )


def test_e041_and_w043_the_cache_cached_uses() -> None:
    with override_settings(CACHES=caches(), STABILITY={"CACHE_ALIAS": "nosuch"}):
        messages = checks.check_cached_alias()
        assert ids(messages) == ["django_stability.E041"]
        assert "default" in messages[0].hint
    plain = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://x"}}
    with override_settings(CACHES=plain, STABILITY={}):
        assert ids(checks.check_cached_alias()) == ["django_stability.W043"]
    with override_settings(CACHES=caches(), STABILITY={}):
        assert checks.check_cached_alias() == []


@pytest.mark.parametrize(
    ("backend", "options", "fires"),
    [
        (PROTECTED, {}, False),  # the protection's own short timeouts apply
        (PROTECTED, {"SOCKET_TIMEOUT": 0.5, "SOCKET_CONNECT_TIMEOUT": 0.5}, False),
        (PROTECTED, {"SOCKET_TIMEOUT": 5}, True),
        (PROTECTED, {"SOCKET_CONNECT_TIMEOUT": 3.0}, True),
        (DJANGO, {"socket_timeout": 2}, True),
        (DJANGO, {"socket_timeout": 0.3, "socket_connect_timeout": 0.3}, False),
    ],
)
def test_w040_long_timeouts_on_a_protected_cache(
    backend: str, options: dict[str, Any], fires: bool
) -> None:
    config = {"default": {"BACKEND": backend, "LOCATION": "redis://x", "OPTIONS": options}}
    with override_settings(CACHES=config):
        found = [m for m in checks.check_protected_cache_timeouts() if m.id.endswith("W040")]
        assert bool(found) == fires


@pytest.mark.parametrize(
    ("options", "fires"),
    [
        ({}, False),
        ({"CONNECTION_POOL_KWARGS": {"retry_on_timeout": True}}, True),
        ({"CONNECTION_POOL_KWARGS": {"retry": Retry(NoBackoff(), 3)}}, True),
        ({"CONNECTION_POOL_KWARGS": {"retry": Retry(NoBackoff(), 0)}}, False),
        ({"REDIS_CLIENT_KWARGS": {"retry_on_error": [TimeoutError]}}, True),
    ],
)
def test_w041_retries_on_a_protected_cache(options: dict[str, Any], fires: bool) -> None:
    with override_settings(CACHES=caches(**options)):
        found = [m for m in checks.check_protected_cache_timeouts() if m.id.endswith("W041")]
        assert bool(found) == fires


def test_w042_mixin_on_a_per_process_backend() -> None:
    with override_settings(CACHES={"default": {"BACKEND": LOCMEM}}):
        messages = checks.check_mixin_backend_is_shared()
        assert ids(messages) == ["django_stability.W042"]
        assert "LocMemCache" in messages[0].msg
    with override_settings(CACHES={"default": {"BACKEND": DJANGO, "LOCATION": "redis://x"}}):
        assert checks.check_mixin_backend_is_shared() == []


def test_w001_is_silent_for_the_protected_cache_which_brings_its_own_timeouts() -> None:
    with override_settings(CACHES=caches()):
        assert checks.check_cache_timeouts() == []
    # ... but not for the mixin on Django's RedisCache, which does not.
    config = {"default": {"BACKEND": DJANGO, "LOCATION": "redis://x"}}
    with override_settings(CACHES=config):
        assert ids(checks.check_cache_timeouts()) == ["django_stability.W001"]
