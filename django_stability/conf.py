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
    # Who the client is: the networks of the reverse proxies whose forwarding
    # header is believed, and that header's name (read right to left).
    "TRUSTED_PROXIES": [],
    "CLIENT_IP_HEADER": "X-Forwarded-For",
    # Rate limits: a switch for all of them, how client addresses are grouped,
    # and how many over-limit keys each process remembers (no round trip for them).
    "RATELIMIT_ENABLED": True,
    "RATELIMIT_IPV4_PREFIX": 32,
    "RATELIMIT_IPV6_PREFIX": 64,
    "RATELIMIT_PENALTY_BOX_SIZE": 10_000,
    # Load shedding (django_stability.shedding): admission before the view.
    # "enforce" sheds, "shadow" only reports what it would shed, "off" does nothing.
    "SHEDDING_MODE": "enforce",
    # Requests one process runs at once; None leaves the in-flight limit off.
    # Set it to the threads of a gthread worker, or a concurrency target under ASGI.
    "SHEDDING_MAX_IN_FLIGHT": None,
    # The share of the in-flight limit each priority class may fill.
    "SHEDDING_CLASS_SHARES": {"critical": 1.0, "high": 0.9, "default": 0.75, "sheddable": 0.5},
    "SHEDDING_DEFAULT_PRIORITY": "default",
    # Once a class is shed, it is admitted again only below its share by this
    # fraction of the limit, so that the decision does not flap.
    "SHEDDING_HYSTERESIS": 0.1,
    "SHEDDING_RETRY_AFTER": 2.0,
    "SHEDDING_QUEUE_TIME_HEADER": "X-Request-Start",
    "SHEDDING_QUEUE_TIME_TARGET": None,
    "SHEDDING_ADAPTIVE": False,
    "SHEDDING_ADAPTIVE_INITIAL_LIMIT": 20,
    "SHEDDING_ADAPTIVE_MIN_LIMIT": 4,
    "SHEDDING_ADAPTIVE_MAX_LIMIT": 200,
    "SHEDDING_ADAPTIVE_TOLERANCE": 1.5,
    "SHEDDING_ADAPTIVE_SMOOTHING": 0.2,
    "SHEDDING_BROWNOUT_HOLD": 10.0,
    "SHEDDING_LOG_INTERVAL": 10.0,
    "SHEDDING_STALE_AFTER": 3600.0,
    # The stampede-protected cache: the cache @cached uses unless told, the
    # timeouts a protected Redis cache gets when its OPTIONS set none, its own
    # breaker, its per-process fallback, its background refreshes and counters.
    "CACHE_ALIAS": "default",
    "CACHE_SOCKET_TIMEOUT": 0.25,
    "CACHE_CONNECT_TIMEOUT": 0.25,
    "CACHE_BREAKER_THRESHOLD": 3,
    "CACHE_BREAKER_COOLDOWN": 5.0,
    "CACHE_LOCAL_MAX_KEYS": 10_000,
    "CACHE_REFRESH_THREADS": 4,
    "CACHE_COUNTERS_FLUSH": 10.0,
    # Background jobs: the Celery app (a dotted path; None means Celery's
    # current app), where result files go, and how the queue is watched.
    "JOBS_CELERY_APP": None,
    "JOBS_STORAGE": "default",
    "JOBS_UPLOAD_TO": "stability-jobs",
    "JOBS_DEPTH_CACHE": 1.0,
    "JOBS_PROBE_TIMEOUT": 0.5,
    "JOBS_POLL_INTERVAL": 2,
    "JOBS_LOST_GRACE": 60.0,
    # Celery tasks refused by a rate limit, a breaker or a bulkhead are sent
    # again later: at most this many times, after their retry_after plus a
    # random delay that widens with each refusal (at least this many seconds).
    "JOBS_TASK_MAX_REFUSALS": 100,
    "JOBS_TASK_RETRY_JITTER": 1.0,
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
    # Operations: the Stability page, the JSON status, health, metrics, events, the audit.
    # Seconds between two refreshes of the Stability page in the browser.
    "DASHBOARD_REFRESH": 5.0,
    # Seconds between two reports of each process to the store (its live state and
    # counters, for the page of any process to show the whole site); None: no reports.
    "DASHBOARD_REPORT_INTERVAL": 5.0,
    # Minutes of per-minute counters the charts show (and the store keeps).
    "DASHBOARD_HISTORY_MINUTES": 30,
    # A token that reads the JSON status without a staff session (Authorization: Bearer ...).
    "DASHBOARD_STATUS_TOKEN": None,
    # Prometheus metrics: None is on when prometheus_client is installed; a token for
    # scrapers; anonymous scrapes refused unless allowed.
    "METRICS_ENABLED": None,
    "METRICS_TOKEN": None,
    "METRICS_ALLOW_ANONYMOUS": False,
    # Readiness is "not ready" while the process sheds this priority class or a higher one.
    "HEALTH_NOT_READY_WHEN_SHEDDING": "default",
    # Structured event log lines: at most one per event and subject per interval.
    "EVENTS_LOG_INTERVAL": 10.0,
    # manage.py stability_audit: URLs of integration points to probe (name -> URL), the
    # time each probe may take, the certificate age that warns, and extra trusted CAs.
    "AUDIT_ENDPOINTS": {},
    "AUDIT_TIMEOUT": 3.0,
    "AUDIT_CERT_WARN_DAYS": 14,
    "AUDIT_CA_FILE": None,
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
    def TRUSTED_PROXIES(self) -> tuple[str, ...]:
        return tuple(str(item) for item in self._get("TRUSTED_PROXIES"))

    @property
    def CLIENT_IP_HEADER(self) -> str:
        return str(self._get("CLIENT_IP_HEADER"))

    @property
    def RATELIMIT_ENABLED(self) -> bool:
        return bool(self._get("RATELIMIT_ENABLED"))

    @property
    def RATELIMIT_IPV4_PREFIX(self) -> int:
        return int(self._get("RATELIMIT_IPV4_PREFIX"))

    @property
    def RATELIMIT_IPV6_PREFIX(self) -> int:
        return int(self._get("RATELIMIT_IPV6_PREFIX"))

    @property
    def RATELIMIT_PENALTY_BOX_SIZE(self) -> int:
        return int(self._get("RATELIMIT_PENALTY_BOX_SIZE"))

    @property
    def SHEDDING_MODE(self) -> str:
        return str(self._get("SHEDDING_MODE"))

    @property
    def SHEDDING_MAX_IN_FLIGHT(self) -> int | None:
        value = self._get("SHEDDING_MAX_IN_FLIGHT")
        return None if value is None else int(value)

    @property
    def SHEDDING_CLASS_SHARES(self) -> Mapping[str, float]:
        value: Mapping[str, float] = self._get("SHEDDING_CLASS_SHARES")
        return value

    @property
    def SHEDDING_DEFAULT_PRIORITY(self) -> str:
        return str(self._get("SHEDDING_DEFAULT_PRIORITY"))

    @property
    def SHEDDING_HYSTERESIS(self) -> float:
        return float(self._get("SHEDDING_HYSTERESIS"))

    @property
    def SHEDDING_RETRY_AFTER(self) -> float:
        return float(self._get("SHEDDING_RETRY_AFTER"))

    @property
    def SHEDDING_QUEUE_TIME_HEADER(self) -> str | None:
        value = self._get("SHEDDING_QUEUE_TIME_HEADER")
        return None if value is None else str(value)

    @property
    def SHEDDING_QUEUE_TIME_TARGET(self) -> float | None:
        value = self._get("SHEDDING_QUEUE_TIME_TARGET")
        return None if value is None else float(value)

    @property
    def SHEDDING_ADAPTIVE(self) -> bool:
        return bool(self._get("SHEDDING_ADAPTIVE"))

    @property
    def SHEDDING_ADAPTIVE_INITIAL_LIMIT(self) -> int:
        return int(self._get("SHEDDING_ADAPTIVE_INITIAL_LIMIT"))

    @property
    def SHEDDING_ADAPTIVE_MIN_LIMIT(self) -> int:
        return int(self._get("SHEDDING_ADAPTIVE_MIN_LIMIT"))

    @property
    def SHEDDING_ADAPTIVE_MAX_LIMIT(self) -> int:
        return int(self._get("SHEDDING_ADAPTIVE_MAX_LIMIT"))

    @property
    def SHEDDING_ADAPTIVE_TOLERANCE(self) -> float:
        return float(self._get("SHEDDING_ADAPTIVE_TOLERANCE"))

    @property
    def SHEDDING_ADAPTIVE_SMOOTHING(self) -> float:
        return float(self._get("SHEDDING_ADAPTIVE_SMOOTHING"))

    @property
    def SHEDDING_BROWNOUT_HOLD(self) -> float:
        return float(self._get("SHEDDING_BROWNOUT_HOLD"))

    @property
    def SHEDDING_LOG_INTERVAL(self) -> float:
        return float(self._get("SHEDDING_LOG_INTERVAL"))

    @property
    def SHEDDING_STALE_AFTER(self) -> float:
        return float(self._get("SHEDDING_STALE_AFTER"))

    @property
    def CACHE_ALIAS(self) -> str:
        return str(self._get("CACHE_ALIAS"))

    @property
    def CACHE_SOCKET_TIMEOUT(self) -> float:
        return float(self._get("CACHE_SOCKET_TIMEOUT"))

    @property
    def CACHE_CONNECT_TIMEOUT(self) -> float:
        return float(self._get("CACHE_CONNECT_TIMEOUT"))

    @property
    def CACHE_BREAKER_THRESHOLD(self) -> int:
        return int(self._get("CACHE_BREAKER_THRESHOLD"))

    @property
    def CACHE_BREAKER_COOLDOWN(self) -> float:
        return float(self._get("CACHE_BREAKER_COOLDOWN"))

    @property
    def CACHE_LOCAL_MAX_KEYS(self) -> int:
        return int(self._get("CACHE_LOCAL_MAX_KEYS"))

    @property
    def CACHE_REFRESH_THREADS(self) -> int:
        return int(self._get("CACHE_REFRESH_THREADS"))

    @property
    def CACHE_COUNTERS_FLUSH(self) -> float:
        return float(self._get("CACHE_COUNTERS_FLUSH"))

    @property
    def JOBS_CELERY_APP(self) -> str | None:
        value = self._get("JOBS_CELERY_APP")
        return None if value is None else str(value)

    @property
    def JOBS_STORAGE(self) -> str:
        return str(self._get("JOBS_STORAGE"))

    @property
    def JOBS_UPLOAD_TO(self) -> str:
        return str(self._get("JOBS_UPLOAD_TO"))

    @property
    def JOBS_DEPTH_CACHE(self) -> float:
        return float(self._get("JOBS_DEPTH_CACHE"))

    @property
    def JOBS_PROBE_TIMEOUT(self) -> float:
        return float(self._get("JOBS_PROBE_TIMEOUT"))

    @property
    def JOBS_POLL_INTERVAL(self) -> int:
        return int(self._get("JOBS_POLL_INTERVAL"))

    @property
    def JOBS_LOST_GRACE(self) -> float:
        return float(self._get("JOBS_LOST_GRACE"))

    @property
    def JOBS_TASK_MAX_REFUSALS(self) -> int:
        return int(self._get("JOBS_TASK_MAX_REFUSALS"))

    @property
    def JOBS_TASK_RETRY_JITTER(self) -> float:
        return float(self._get("JOBS_TASK_RETRY_JITTER"))

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

    @property
    def DASHBOARD_REFRESH(self) -> float:
        return float(self._get("DASHBOARD_REFRESH"))

    @property
    def DASHBOARD_REPORT_INTERVAL(self) -> float | None:
        value = self._get("DASHBOARD_REPORT_INTERVAL")
        return None if value is None else float(value)

    @property
    def DASHBOARD_HISTORY_MINUTES(self) -> int:
        return int(self._get("DASHBOARD_HISTORY_MINUTES"))

    @property
    def DASHBOARD_STATUS_TOKEN(self) -> str | None:
        value = self._get("DASHBOARD_STATUS_TOKEN")
        return None if value is None else str(value)

    @property
    def METRICS_ENABLED(self) -> bool | None:
        value = self._get("METRICS_ENABLED")
        return None if value is None else bool(value)

    @property
    def METRICS_TOKEN(self) -> str | None:
        value = self._get("METRICS_TOKEN")
        return None if value is None else str(value)

    @property
    def METRICS_ALLOW_ANONYMOUS(self) -> bool:
        return bool(self._get("METRICS_ALLOW_ANONYMOUS"))

    @property
    def HEALTH_NOT_READY_WHEN_SHEDDING(self) -> str:
        return str(self._get("HEALTH_NOT_READY_WHEN_SHEDDING"))

    @property
    def EVENTS_LOG_INTERVAL(self) -> float:
        return float(self._get("EVENTS_LOG_INTERVAL"))

    @property
    def AUDIT_ENDPOINTS(self) -> Mapping[str, str]:
        value: Mapping[str, str] = self._get("AUDIT_ENDPOINTS")
        return value

    @property
    def AUDIT_TIMEOUT(self) -> float:
        return float(self._get("AUDIT_TIMEOUT"))

    @property
    def AUDIT_CERT_WARN_DAYS(self) -> int:
        return int(self._get("AUDIT_CERT_WARN_DAYS"))

    @property
    def AUDIT_CA_FILE(self) -> str | None:
        value = self._get("AUDIT_CA_FILE")
        return None if value is None else str(value)

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
    def MIDDLEWARE(self) -> tuple[str, ...]:
        return tuple(getattr(django_settings, "MIDDLEWARE", None) or ())

    @property
    def DJANGO_RATELIMIT_IP_META_KEY(self) -> Any:
        """django-ratelimit's own ``RATELIMIT_IP_META_KEY`` (how it finds the client address)."""
        return getattr(django_settings, "RATELIMIT_IP_META_KEY", None)

    @property
    def DEBUG(self) -> bool:
        return bool(getattr(django_settings, "DEBUG", False))

    @property
    def AUTH_USER_MODEL(self) -> str:
        return str(getattr(django_settings, "AUTH_USER_MODEL", "auth.User"))

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
    "TRUSTED_PROXIES": (list, tuple),
    "CLIENT_IP_HEADER": (str,),
    "RATELIMIT_ENABLED": (bool,),
    "RATELIMIT_IPV4_PREFIX": (int,),
    "RATELIMIT_IPV6_PREFIX": (int,),
    "RATELIMIT_PENALTY_BOX_SIZE": (int,),
    "SHEDDING_MODE": (str,),
    "SHEDDING_MAX_IN_FLIGHT": (int, type(None)),
    "SHEDDING_CLASS_SHARES": (dict,),
    "SHEDDING_DEFAULT_PRIORITY": (str,),
    "SHEDDING_HYSTERESIS": (int, float),
    "SHEDDING_RETRY_AFTER": (int, float),
    "SHEDDING_QUEUE_TIME_HEADER": (str, type(None)),
    "SHEDDING_QUEUE_TIME_TARGET": (int, float, type(None)),
    "SHEDDING_ADAPTIVE": (bool,),
    "SHEDDING_ADAPTIVE_INITIAL_LIMIT": (int,),
    "SHEDDING_ADAPTIVE_MIN_LIMIT": (int,),
    "SHEDDING_ADAPTIVE_MAX_LIMIT": (int,),
    "SHEDDING_ADAPTIVE_TOLERANCE": (int, float),
    "SHEDDING_ADAPTIVE_SMOOTHING": (int, float),
    "SHEDDING_BROWNOUT_HOLD": (int, float),
    "SHEDDING_LOG_INTERVAL": (int, float),
    "SHEDDING_STALE_AFTER": (int, float),
    "CACHE_ALIAS": (str,),
    "CACHE_SOCKET_TIMEOUT": (int, float),
    "CACHE_CONNECT_TIMEOUT": (int, float),
    "CACHE_BREAKER_THRESHOLD": (int,),
    "CACHE_BREAKER_COOLDOWN": (int, float),
    "CACHE_LOCAL_MAX_KEYS": (int,),
    "CACHE_REFRESH_THREADS": (int,),
    "CACHE_COUNTERS_FLUSH": (int, float),
    "JOBS_CELERY_APP": (str, type(None)),
    "JOBS_STORAGE": (str,),
    "JOBS_UPLOAD_TO": (str,),
    "JOBS_DEPTH_CACHE": (int, float),
    "JOBS_PROBE_TIMEOUT": (int, float),
    "JOBS_POLL_INTERVAL": (int,),
    "JOBS_LOST_GRACE": (int, float),
    "JOBS_TASK_MAX_REFUSALS": (int,),
    "JOBS_TASK_RETRY_JITTER": (int, float),
    "BREAKER_CLUSTER_REFRESH": (int, float),
    "GUARD_CONNECT_TIMEOUT": (int, float),
    "GUARD_READ_TIMEOUT": (int, float),
    "GUARD_DNS_TIMEOUT": (int, float),
    "GUARD_DNS_CACHE_TTL": (int, float),
    "GUARD_DATABASE_DEADLINES": (bool,),
    "GUARD_TIMEOUT_THREADS": (int,),
    "GUARD_FALLBACK_CACHE": (str,),
    "DASHBOARD_REFRESH": (int, float),
    "DASHBOARD_REPORT_INTERVAL": (int, float, type(None)),
    "DASHBOARD_HISTORY_MINUTES": (int,),
    "DASHBOARD_STATUS_TOKEN": (str, type(None)),
    "METRICS_ENABLED": (bool, type(None)),
    "METRICS_TOKEN": (str, type(None)),
    "METRICS_ALLOW_ANONYMOUS": (bool,),
    "HEALTH_NOT_READY_WHEN_SHEDDING": (str,),
    "EVENTS_LOG_INTERVAL": (int, float),
    "AUDIT_ENDPOINTS": (dict,),
    "AUDIT_TIMEOUT": (int, float),
    "AUDIT_CERT_WARN_DAYS": (int,),
    "AUDIT_CA_FILE": (str, type(None)),
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "STORE": ("auto", "redis", "local"),
    "SHEDDING_MODE": ("enforce", "shadow", "off"),
    "SHEDDING_DEFAULT_PRIORITY": ("critical", "high", "default", "sheddable"),
    "HEALTH_NOT_READY_WHEN_SHEDDING": ("critical", "high", "default", "sheddable"),
}

_POSITIVE = {
    "STORE_SOCKET_TIMEOUT",
    "STORE_CONNECT_TIMEOUT",
    "STORE_BREAKER_THRESHOLD",
    "STORE_BREAKER_COOLDOWN",
    "LOCAL_STORE_MAX_KEYS",
    "POLICY_REFRESH",
    "RATELIMIT_IPV4_PREFIX",
    "RATELIMIT_IPV6_PREFIX",
    "RATELIMIT_PENALTY_BOX_SIZE",
    "SHEDDING_MAX_IN_FLIGHT",
    "SHEDDING_QUEUE_TIME_TARGET",
    "SHEDDING_RETRY_AFTER",
    "SHEDDING_ADAPTIVE_INITIAL_LIMIT",
    "SHEDDING_ADAPTIVE_MIN_LIMIT",
    "SHEDDING_ADAPTIVE_MAX_LIMIT",
    "SHEDDING_ADAPTIVE_TOLERANCE",
    "SHEDDING_BROWNOUT_HOLD",
    "SHEDDING_LOG_INTERVAL",
    "SHEDDING_STALE_AFTER",
    "CACHE_SOCKET_TIMEOUT",
    "CACHE_CONNECT_TIMEOUT",
    "CACHE_BREAKER_THRESHOLD",
    "CACHE_BREAKER_COOLDOWN",
    "CACHE_LOCAL_MAX_KEYS",
    "CACHE_REFRESH_THREADS",
    "CACHE_COUNTERS_FLUSH",
    "JOBS_DEPTH_CACHE",
    "JOBS_PROBE_TIMEOUT",
    "JOBS_POLL_INTERVAL",
    "JOBS_LOST_GRACE",
    "JOBS_TASK_MAX_REFUSALS",
    "JOBS_TASK_RETRY_JITTER",
    "BREAKER_CLUSTER_REFRESH",
    "GUARD_CONNECT_TIMEOUT",
    "GUARD_READ_TIMEOUT",
    "GUARD_DNS_TIMEOUT",
    "GUARD_DNS_CACHE_TTL",
    "GUARD_TIMEOUT_THREADS",
    "DASHBOARD_REFRESH",
    "DASHBOARD_REPORT_INTERVAL",
    "DASHBOARD_HISTORY_MINUTES",
    "EVENTS_LOG_INTERVAL",
    "AUDIT_TIMEOUT",
    "AUDIT_CERT_WARN_DAYS",
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
        if key in _POSITIVE and value is not None and value <= 0:
            raise ImproperlyConfigured(
                f"settings.STABILITY[{key!r}] must be greater than 0, not {value!r}."
            )
        if key in _CHECKED:
            _CHECKED[key](key, value)
        merged[key] = value
    return merged


def _check_networks(key: str, value: Any) -> None:
    from .clientip import parse_networks

    try:
        parse_networks(list(value))
    except ValueError as exc:
        raise ImproperlyConfigured(f"settings.STABILITY[{key!r}]: {exc}") from None


def _check_prefix(maximum: int) -> Any:
    def check(key: str, value: Any) -> None:
        if value > maximum:
            raise ImproperlyConfigured(
                f"settings.STABILITY[{key!r}] must be a prefix length from 1 to {maximum}, "
                f"not {value!r}."
            )

    return check


def _check_at_most(maximum: int) -> Any:
    def check(key: str, value: Any) -> None:
        if value > maximum:
            raise ImproperlyConfigured(
                f"settings.STABILITY[{key!r}] must be at most {maximum}, not {value!r}."
            )

    return check


def _check_token(key: str, value: Any) -> None:
    if value is not None and not value.strip():
        raise ImproperlyConfigured(
            f"settings.STABILITY[{key!r}] must be None (no token) or a non-empty secret string."
        )


def _check_endpoints(key: str, value: Any) -> None:
    from urllib.parse import urlsplit

    for name, url in value.items():
        try:
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is not None:
                parts.port  # noqa: B018 - reading it raises on a bad port
        except ValueError:
            parts = None
        if parts is None or not parts.scheme or not parts.hostname:
            raise ImproperlyConfigured(
                f"settings.STABILITY[{key!r}][{name!r}] must be a URL with a scheme and a "
                f"host, e.g. 'https://api.example.com/', not {url!r}."
            )


#: Keys whose values need more than a type to be right.
_CHECKED: dict[str, Any] = {
    "TRUSTED_PROXIES": _check_networks,
    "RATELIMIT_IPV4_PREFIX": _check_prefix(32),
    "RATELIMIT_IPV6_PREFIX": _check_prefix(128),
    "DASHBOARD_HISTORY_MINUTES": _check_at_most(24 * 60),
    "DASHBOARD_STATUS_TOKEN": _check_token,
    "METRICS_TOKEN": _check_token,
    "AUDIT_ENDPOINTS": _check_endpoints,
}


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
