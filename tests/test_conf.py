from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_stability.conf import DEFAULTS, merge, settings


def test_defaults_are_used_when_stability_is_absent() -> None:
    assert merge(None) == DEFAULTS


def test_override_settings_is_seen_at_call_time() -> None:
    before = settings.POLICY_REFRESH
    with override_settings(STABILITY={"POLICY_REFRESH": 7}):
        assert settings.POLICY_REFRESH == 7.0
    assert before == settings.POLICY_REFRESH


def test_unknown_key_names_every_accepted_key() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        merge({"STORE_TIMEOUT": 1})
    message = str(info.value)
    assert "STORE_TIMEOUT" in message
    assert "STORE_SOCKET_TIMEOUT" in message and "POLICY_REFRESH" in message


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("STORE_SOCKET_TIMEOUT", "fast", "must be int or float"),
        ("STORE_SOCKET_TIMEOUT", True, "must be int or float"),
        ("STORE_SOCKET_TIMEOUT", 0, "greater than 0"),
        ("STORE", "memcached", "one of 'auto', 'redis', 'local'"),
        ("FAIL_OPEN", "yes", "must be bool"),
    ],
)
def test_wrong_values_are_refused_with_the_expected_type(
    key: str, value: object, words: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match=words):
        merge({key: value})


def test_not_a_dict() -> None:
    with pytest.raises(ImproperlyConfigured, match="must be a dict"):
        merge(["STORE"])


def test_positive_keys_that_allow_none_accept_none_and_refuse_zero() -> None:
    assert merge({"SHEDDING_MAX_IN_FLIGHT": None})["SHEDDING_MAX_IN_FLIGHT"] is None
    assert merge({"SHEDDING_QUEUE_TIME_TARGET": None})["SHEDDING_QUEUE_TIME_TARGET"] is None
    with pytest.raises(ImproperlyConfigured, match="greater than 0"):
        merge({"SHEDDING_MAX_IN_FLIGHT": 0})
    with pytest.raises(ImproperlyConfigured, match="greater than 0"):
        merge({"SHEDDING_QUEUE_TIME_TARGET": -1})
