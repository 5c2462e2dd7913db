"""Checks W030-W034: database timeouts, requests without timeout, cluster scope on a local store."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import requests
from django.test import override_settings

from django_stability import checks, circuit_breaker, guard

PG = "django.db.backends.postgresql"


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


@pytest.mark.parametrize(
    ("options", "environ", "missing"),
    [
        ({}, {}, ["statement_timeout", "lock_timeout", "connect_timeout"]),
        ({"options": "-c statement_timeout=5000"}, {}, ["lock_timeout", "connect_timeout"]),
        (
            {"options": "-c statement_timeout=5000 -c lock_timeout=2000", "connect_timeout": 3},
            {},
            [],
        ),
        (
            {},
            {"PGOPTIONS": "-c statement_timeout=1s -c lock_timeout=1s", "PGCONNECT_TIMEOUT": "2"},
            [],
        ),
    ],
)
def test_postgresql_timeouts_read_from_options_and_environment(
    options: dict[str, Any], environ: dict[str, str], missing: list[str]
) -> None:
    assert checks.postgresql_missing_timeouts({"OPTIONS": options}, environ) == missing


def test_w030_w031_w032_fire_for_postgresql_only() -> None:
    databases = {
        "default": {"ENGINE": PG, "NAME": "x"},
        "safe": {
            "ENGINE": PG,
            "NAME": "y",
            "OPTIONS": {
                "options": "-c statement_timeout=5000 -c lock_timeout=1000",
                "connect_timeout": 3,
            },
        },
        "local": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    }
    messages = checks.database_timeout_messages(databases, {})
    assert ids(messages) == [
        "django_stability.W030",
        "django_stability.W031",
        "django_stability.W032",
    ]
    assert all(m.obj == "DATABASES['default']" for m in messages)
    assert "-c lock_timeout=5000" in messages[1].hint
    # The test project's own PostgreSQL sets none of them: the registered check sees it.
    assert "django_stability.W030" in ids(checks.check_database_timeouts())


def test_w033_requests_without_a_timeout_in_guarded_code() -> None:
    @circuit_breaker("w033-breaker")
    def careless(url: str) -> Any:
        return requests.get(url)

    @guard("w033-guard")
    def careful(url: str, **kwargs: Any) -> Any:
        requests.post(url, timeout=(3, 10))
        return requests.get(url, **kwargs)  # the timeout may be in kwargs: not reported

    messages = [
        m for m in checks.check_requests_without_timeout() if "w033" in m.msg or "careless" in m.msg
    ]
    assert ids(messages) == ["django_stability.W033"]
    assert "careless" in messages[0].msg and "requests.get()" in messages[0].msg
    lines, start = inspect.getsourcelines(careless)
    line = start + next(i for i, text in enumerate(lines) if "requests.get(url)" in text)
    assert f"(line {line})" in messages[0].msg
    assert not any("careful" in m.msg for m in checks.check_requests_without_timeout())


def test_w034_cluster_scope_on_a_local_store() -> None:
    circuit_breaker("w034", scope="cluster")
    with override_settings(STABILITY={"STORE": "local"}):
        messages = checks.check_cluster_scope_on_a_local_store()
    assert ids(messages) == ["django_stability.W034"]
    assert "breaker 'w034'" in messages[0].msg
    assert checks.check_cluster_scope_on_a_local_store() == []  # on Redis: fine
