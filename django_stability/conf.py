"""The ``STABILITY`` setting, merged over documented defaults.

This is the only module that reads ``django.conf.settings``. Values are read at
call time (and cached until Django's ``setting_changed`` signal fires), so
``override_settings`` works in tests and nothing is frozen at import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import Signal, receiver

#: Every accepted key of ``settings.STABILITY`` with its default. The settings
#: reference in ``docs/settings.md`` documents each of them.
DEFAULTS: dict[str, Any] = {
    # Where shared state lives: "auto" (Redis when STORE_URL is set or the
    # STORE_CACHE_ALIAS cache is a django-redis cache, else in-process),
    # "redis" (required; an error if it cannot be built) or "local".
    "STORE": "auto",
    "STORE_CACHE_ALIAS": "default",
    "STORE_URL": None,
    "STORE_KEY_PREFIX": "stability",
    # The store's own protection: short timeouts, no client-side retries.
    "STORE_SOCKET_TIMEOUT": 0.2,
    "STORE_CONNECT_TIMEOUT": 0.2,
    "STORE_BREAKER_THRESHOLD": 3,
    "STORE_BREAKER_COOLDOWN": 5.0,
    # Bounded memory of the in-process store.
    "LOCAL_STORE_MAX_KEYS": 100_000,
    # Policies: code defaults, and how often each process looks for changes.
    "POLICIES": {},
    "POLICY_REFRESH": 1.0,
    # What a protection does when the shared store cannot be reached and a
    # policy does not say: True admits (fail open), False refuses.
    "FAIL_OPEN": True,
    # Circuit breakers, bulkheads, timeouts and guards (integration points).
    # The longest a process trusts its cached verdict of a cluster breaker (at most 1 s).
    "BREAKER_CLUSTER_REFRESH": 1.0,
    # Outbound HTTP helpers: timeouts used when a call does not give its own.
    "GUARD_CONNECT_TIMEOUT": 3.05,
    "GUARD_READ_TIMEOUT": 10.0,
    # Name resolution of guarded hosts: the longest it may take, and how long answers are kept.
    "GUARD_DNS_TIMEOUT": 2.0,
    "GUARD_DNS_CACHE_TTL": 60.0,
    # Pass the deadline of guarded code to PostgreSQL as statement_timeout.
    "GUARD_DATABASE_DEADLINES": True,
    # Worker threads timeout() may run abandoned (timed-out) work in, per process.
    "GUARD_TIMEOUT_THREADS": 32,
    # The cache that keeps the last good value of guards with fallback="last_good".
    "GUARD_FALLBACK_CACHE": "default",
}


class Settings:
    """Typed access to ``settings.STABILITY``; one property per key."""

    def __init__(self) -> None:
        self._merged: dict[str, Any] | None = None

    def reset(self) -> None:
        self._merged = None

    @property
    def merged(self) -> dict[str, Any]:
        if self._merged is None:
            self._merged = merge(getattr(django_settings, "STABILITY", None))
        return self._merged

    def _get(self, key: str) -> Any:
        return self.merged[key]

    @property
    def STORE(self) -> str:
        return str(self._get("STORE"))

    @property
    def STORE_CACHE_ALIAS(self) -> str:
        return str(self._get("STORE_CACHE_ALIAS"))

    @property
    def STORE_URL(self) -> str | None:
        value = self._get("STORE_URL")
        return None if value is None else str(value)

    @property
    def STORE_KEY_PREFIX(self) -> str:
        return str(self._get("STORE_KEY_PREFIX"))

    @property
    def STORE_SOCKET_TIMEOUT(self) -> float:
        return float(self._get("STORE_SOCKET_TIMEOUT"))

    @property
    def STORE_CONNECT_TIMEOUT(self) -> float:
        return float(self._get("STORE_CONNECT_TIMEOUT"))

    @property
    def STORE_BREAKER_THRESHOLD(self) -> int:
        return int(self._get("STORE_BREAKER_THRESHOLD"))

    @property
    def STORE_BREAKER_COOLDOWN(self) -> float:
        return float(self._get("STORE_BREAKER_COOLDOWN"))

    @property
    def LOCAL_STORE_MAX_KEYS(self) -> int:
        return int(self._get("LOCAL_STORE_MAX_KEYS"))

    @property
    def POLICIES(self) -> Mapping[str, Mapping[str, Mapping[str, Any]]]:
        value: Mapping[str, Mapping[str, Mapping[str, Any]]] = self._get("POLICIES")
        return value

    @property
    def POLICY_REFRESH(self) -> float:
        return float(self._get("POLICY_REFRESH"))

    @property
    def FAIL_OPEN(self) -> bool:
        return bool(self._get("FAIL_OPEN"))

    @property
    def BREAKER_CLUSTER_REFRESH(self) -> float:
        return float(self._get("BREAKER_CLUSTER_REFRESH"))

    @property
    def GUARD_CONNECT_TIMEOUT(self) -> float:
        return float(self._get("GUARD_CONNECT_TIMEOUT"))

    @property
    def GUARD_READ_TIMEOUT(self) -> float:
        return float(self._get("GUARD_READ_TIMEOUT"))

    @property
    def GUARD_DNS_TIMEOUT(self) -> float:
        return float(self._get("GUARD_DNS_TIMEOUT"))

    @property
    def GUARD_DNS_CACHE_TTL(self) -> float:
        return float(self._get("GUARD_DNS_CACHE_TTL"))

    @property
    def GUARD_DATABASE_DEADLINES(self) -> bool:
        return bool(self._get("GUARD_DATABASE_DEADLINES"))

    @property
    def GUARD_TIMEOUT_THREADS(self) -> int:
        return int(self._get("GUARD_TIMEOUT_THREADS"))

    @property
    def GUARD_FALLBACK_CACHE(self) -> str:
        return str(self._get("GUARD_FALLBACK_CACHE"))

    # Read-only views of other Django settings, so that the rest of the
    # package never imports django.conf.settings itself.

    @property
    def CACHES(self) -> Mapping[str, Mapping[str, Any]]:
        value: Mapping[str, Mapping[str, Any]] = getattr(django_settings, "CACHES", {})
        return value

    @property
    def SESSION_ENGINE(self) -> str:
        return str(getattr(django_settings, "SESSION_ENGINE", ""))

    @property
    def SESSION_CACHE_ALIAS(self) -> str:
        return str(getattr(django_settings, "SESSION_CACHE_ALIAS", "default"))

    @property
    def DJANGO_REDIS_IGNORE_EXCEPTIONS(self) -> bool:
        return bool(getattr(django_settings, "DJANGO_REDIS_IGNORE_EXCEPTIONS", False))

    @property
    def DEBUG(self) -> bool:
        return bool(getattr(django_settings, "DEBUG", False))

    @property
    def DATABASES(self) -> Mapping[str, Mapping[str, Any]]:
        value: Mapping[str, Mapping[str, Any]] = getattr(django_settings, "DATABASES", {})
        return value


_TYPES: dict[str, tuple[type, ...]] = {
    "STORE": (str,),
    "STORE_CACHE_ALIAS": (str,),
    "STORE_URL": (str, type(None)),
    "STORE_KEY_PREFIX": (str,),
    "STORE_SOCKET_TIMEOUT": (int, float),
    "STORE_CONNECT_TIMEOUT": (int, float),
    "STORE_BREAKER_THRESHOLD": (int,),
    "STORE_BREAKER_COOLDOWN": (int, float),
    "LOCAL_STORE_MAX_KEYS": (int,),
    "POLICIES": (dict,),
    "POLICY_REFRESH": (int, float),
    "FAIL_OPEN": (bool,),
    "BREAKER_CLUSTER_REFRESH": (int, float),
    "GUARD_CONNECT_TIMEOUT": (int, float),
    "GUARD_READ_TIMEOUT": (int, float),
    "GUARD_DNS_TIMEOUT": (int, float),
    "GUARD_DNS_CACHE_TTL": (int, float),
    "GUARD_DATABASE_DEADLINES": (bool,),
    "GUARD_TIMEOUT_THREADS": (int,),
    "GUARD_FALLBACK_CACHE": (str,),
}

_CHOICES: dict[str, tuple[str, ...]] = {"STORE": ("auto", "redis", "local")}

_POSITIVE = {
    "STORE_SOCKET_TIMEOUT",
    "STORE_CONNECT_TIMEOUT",
    "STORE_BREAKER_THRESHOLD",
    "STORE_BREAKER_COOLDOWN",
    "LOCAL_STORE_MAX_KEYS",
    "POLICY_REFRESH",
    "BREAKER_CLUSTER_REFRESH",
    "GUARD_CONNECT_TIMEOUT",
    "GUARD_READ_TIMEOUT",
    "GUARD_DNS_TIMEOUT",
    "GUARD_DNS_CACHE_TTL",
    "GUARD_TIMEOUT_THREADS",
}


def merge(user: Any) -> dict[str, Any]:
    """Merge the user's ``STABILITY`` over the defaults, refusing what is wrong.

    Raises ImproperlyConfigured naming the key and every accepted spelling.
    """
    if user is None:
        user = {}
    if not isinstance(user, Mapping):
        raise ImproperlyConfigured(f"settings.STABILITY must be a dict, not {type(user).__name__}.")
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(
            f"settings.STABILITY has unknown key(s) {', '.join(unknown)}; "
            f"accepted keys are: {', '.join(sorted(DEFAULTS))}."
        )
    merged = dict(DEFAULTS)
    for key, value in user.items():
        expected = _TYPES.get(key)
        # bool is an int in Python; a True timeout is a mistake, not a value.
        wrong_bool = isinstance(value, bool) and bool not in (expected or ())
        if expected is not None and (not isinstance(value, expected) or wrong_bool):
            names = " or ".join("None" if t is type(None) else t.__name__ for t in expected)
            raise ImproperlyConfigured(
                f"settings.STABILITY[{key!r}] must be {names}, not {value!r}."
            )
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ImproperlyConfigured(
                f"settings.STABILITY[{key!r}] must be one of "
                f"{', '.join(map(repr, _CHOICES[key]))}, not {value!r}."
            )
        if key in _POSITIVE and value <= 0:
            raise ImproperlyConfigured(
                f"settings.STABILITY[{key!r}] must be greater than 0, not {value!r}."
            )
        merged[key] = value
    return merged


settings = Settings()

#: Sent after the merged settings were dropped because a setting changed.
#: Parts that cache objects built from settings (the store, the policy
#: registry) listen to this rather than to Django's ``setting_changed``, so
#: that they always reset after this module has.
settings_reset = Signal()


@receiver(setting_changed)
def _reset_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting in {
        "STABILITY",
        "CACHES",
        "SESSION_ENGINE",
        "SESSION_CACHE_ALIAS",
        "DJANGO_REDIS_IGNORE_EXCEPTIONS",
    }:
        settings.reset()
        settings_reset.send(sender=Settings, setting=setting)
