"""One test per check ID: it fires when it should and stays quiet when it should not."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from django_stability import checks

REDIS = "django_redis.cache.RedisCache"
DJANGO_REDIS = "django.core.cache.backends.redis.RedisCache"
LOCMEM = "django.core.cache.backends.locmem.LocMemCache"


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


def test_e001_bad_setting() -> None:
    with override_settings(STABILITY={"STORE": "etcd"}):
        messages = checks.check_settings()
    assert ids(messages) == ["django_stability.E001"]
    assert "'auto', 'redis', 'local'" in messages[0].msg
    with override_settings(STABILITY={}):
        assert checks.check_settings() == []


def test_e002_bad_policy_in_settings() -> None:
    with override_settings(
        STABILITY={"POLICIES": {"ratelimit": {"login": {"rate": "often"}}, "nosuch": {}}}
    ):
        messages = checks.check_policies()
    assert ids(messages) == ["django_stability.E002", "django_stability.E002"]
    assert "often" in messages[0].msg
    assert "unknown policy kind 'nosuch'" in messages[1].msg
    with override_settings(STABILITY={"POLICIES": {"ratelimit": {"login": {"rate": "5/m"}}}}):
        assert checks.check_policies() == []


@pytest.mark.parametrize(
    ("config", "fires"),
    [
        ({"BACKEND": REDIS, "LOCATION": "redis://x"}, True),
        ({"BACKEND": REDIS, "LOCATION": "redis://x", "OPTIONS": {"SOCKET_TIMEOUT": 1}}, True),
        (
            {
                "BACKEND": REDIS,
                "LOCATION": "redis://x",
                "OPTIONS": {"SOCKET_TIMEOUT": 0.5, "SOCKET_CONNECT_TIMEOUT": 0.5},
            },
            False,
        ),
        ({"BACKEND": DJANGO_REDIS, "LOCATION": "redis://x"}, True),
        (
            {
                "BACKEND": DJANGO_REDIS,
                "LOCATION": "redis://x",
                "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
            },
            False,
        ),
        ({"BACKEND": LOCMEM}, False),
    ],
)
def test_w001_redis_cache_without_timeouts(config: dict[str, Any], fires: bool) -> None:
    with override_settings(CACHES={"default": config}):
        assert ids(checks.check_cache_timeouts()) == (["django_stability.W001"] if fires else [])


def test_w002_old_redis_py() -> None:
    assert ids(checks.redis_py_messages("7.4.0")) == ["django_stability.W002"]
    assert checks.redis_py_messages("8.0.1") == []
    assert checks.check_redis_py_version() == []  # this project installs redis-py 8


@pytest.mark.parametrize(
    ("engine", "ignore", "fires"),
    [
        ("django.contrib.sessions.backends.cache", True, True),
        ("django.contrib.sessions.backends.cached_db", True, True),
        ("django.contrib.sessions.backends.cache", False, False),
        ("django.contrib.sessions.backends.db", True, False),
    ],
)
def test_w003_ignore_exceptions_with_cache_sessions(engine: str, ignore: bool, fires: bool) -> None:
    caches = {
        "default": {
            "BACKEND": REDIS,
            "LOCATION": "redis://x",
            "OPTIONS": {"IGNORE_EXCEPTIONS": ignore},
        }
    }
    with override_settings(CACHES=caches, SESSION_ENGINE=engine):
        assert ids(checks.check_ignore_exceptions_with_sessions()) == (
            ["django_stability.W003"] if fires else []
        )


def test_w003_global_ignore_exceptions_setting() -> None:
    caches = {"default": {"BACKEND": REDIS, "LOCATION": "redis://x"}}
    with override_settings(
        CACHES=caches,
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
        DJANGO_REDIS_IGNORE_EXCEPTIONS=True,
    ):
        assert ids(checks.check_ignore_exceptions_with_sessions()) == ["django_stability.W003"]


def test_w004_store_on_a_cache_that_is_not_shared() -> None:
    with override_settings(CACHES={"default": {"BACKEND": LOCMEM}}, STABILITY={}):
        assert ids(checks.check_store_is_shared()) == ["django_stability.W004"]
    with override_settings(CACHES={"default": {"BACKEND": LOCMEM}}, STABILITY={"STORE": "local"}):
        assert checks.check_store_is_shared() == []
    with override_settings(STABILITY={}):
        assert checks.check_store_is_shared() == []  # the test settings use django-redis


def test_w005_store_cannot_apply_its_timeouts() -> None:
    sentinel = {
        "BACKEND": REDIS,
        "LOCATION": "redis://mymaster/0",
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.SentinelClient"},
    }
    with override_settings(CACHES={"default": sentinel}, STABILITY={}):
        assert ids(checks.check_store_timeouts_apply()) == ["django_stability.W005"]
    with override_settings(CACHES={"default": sentinel}, STABILITY={"STORE_URL": "redis://h"}):
        assert checks.check_store_timeouts_apply() == []


def test_checks_are_registered(settings: Any) -> None:
    from django.core.checks import run_checks

    messages = run_checks(tags=["django_stability"])
    assert [m for m in messages if m.is_serious()] == []


def test_w010_login_view_without_a_rate_limit() -> None:
    from django.urls import clear_url_caches

    from django_stability.policies import registry
    from django_stability.ratelimit import RateLimitSpec

    with override_settings(ROOT_URLCONF="tests.checks_urls"):
        clear_url_caches()
        try:
            messages = checks.check_login_rate_limited()
            assert ids(messages) == ["django_stability.W010"] * 2
            assert {m.obj for m in messages} == {"admin:login", "account-login"}
            registry.register(RateLimitSpec(name="admin-login", path_prefixes=("/admin/login",)))
            registry.register(RateLimitSpec(name="account", url_names=("account-login",)))
            assert checks.check_login_rate_limited() == []
            registry.register(
                RateLimitSpec(name="account", url_names=("account-login",), mode="off")
            )
            assert ids(checks.check_login_rate_limited()) == ["django_stability.W010"]
        finally:
            clear_url_caches()


def test_w011_forwarded_for_believed_without_trusted_proxies() -> None:
    with override_settings(RATELIMIT_IP_META_KEY="HTTP_X_FORWARDED_FOR"):
        messages = checks.check_forwarded_for_trust()
    assert ids(messages) == ["django_stability.W011"]
    assert "any client can write" in messages[0].msg
    with override_settings(STABILITY={"TRUSTED_PROXIES": ["0.0.0.0/0", "10.0.0.0/8"]}):
        messages = checks.check_forwarded_for_trust()
    assert ids(messages) == ["django_stability.W011"] and "0.0.0.0/0" in messages[0].msg
    with override_settings(STABILITY={"TRUSTED_PROXIES": ["10.0.0.0/8"]}):
        assert checks.check_forwarded_for_trust() == []
    with override_settings(RATELIMIT_IP_META_KEY="REMOTE_ADDR"):
        assert checks.check_forwarded_for_trust() == []


def test_w012_user_keys_need_the_middleware_after_authentication(settings: Any) -> None:
    from django_stability.policies import registry
    from django_stability.ratelimit import RateLimitSpec

    registry.register(RateLimitSpec(name="per-user", path_prefixes=("/api/",), key="user"))
    assert ids(checks.check_user_keys_after_auth()) == ["django_stability.W012"]
    ours = "django_stability.middleware.StabilityMiddleware"
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != ours] + [ours]
    assert checks.check_user_keys_after_auth() == []
