"""The stability audit: Django system checks with stable IDs.

Each check is a small function of the settings; ``docs/checks.md`` documents
every ID with its reason and its fix, and IDs are never reused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured, ValidationError

from .conf import settings

_REDIS_HINT = (
    "Set OPTIONS SOCKET_CONNECT_TIMEOUT and SOCKET_TIMEOUT (django-redis) or "
    "socket_connect_timeout and socket_timeout (Django's RedisCache) to well under a second."
)


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E001: ``settings.STABILITY`` must be a dict of known keys with values of the right type."""
    try:
        settings.merged  # noqa: B018 - merging is the check
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                str(exc),
                hint="See the settings reference in the docs for every key and its type.",
                id="django_stability.E001",
            )
        ]
    return []


def check_policies(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E002: every policy in ``STABILITY["POLICIES"]`` must name a known kind and valid fields."""
    from .policies import registry

    try:
        configured = settings.POLICIES
    except ImproperlyConfigured:
        return []  # E001 reports it
    errors: list[checks.CheckMessage] = []
    for kind, policies in configured.items():
        spec_class = registry.kinds.get(kind)
        if spec_class is None:
            errors.append(
                checks.Error(
                    f"STABILITY['POLICIES'] names an unknown policy kind {kind!r}.",
                    hint=f"Known kinds are: {', '.join(sorted(registry.kinds))}.",
                    id="django_stability.E002",
                )
            )
            continue
        if not isinstance(policies, Mapping):
            errors.append(
                checks.Error(
                    f"STABILITY['POLICIES'][{kind!r}] must map policy names to their fields.",
                    id="django_stability.E002",
                )
            )
            continue
        for name, values in policies.items():
            try:
                if not isinstance(values, Mapping):
                    raise ValidationError("Expected a dict of fields.")
                spec_class.build(str(name), values)
            except ValidationError as exc:
                errors.append(
                    checks.Error(
                        f"STABILITY['POLICIES'][{kind!r}][{name!r}] is invalid: "
                        + "; ".join(_messages(exc)),
                        id="django_stability.E002",
                    )
                )
    return errors


def _messages(exc: ValidationError) -> list[str]:
    if hasattr(exc, "error_dict"):
        return [
            f"{field}: {message}" if field != "__all__" else message
            for field, errors in exc.message_dict.items()
            for message in errors
        ]
    return list(exc.messages)


def redis_cache_timeouts(config: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """The (connect, read) socket timeouts of a Redis cache config, or None if it is not Redis."""
    from .store import cache_kind

    kind = cache_kind(config)
    options = config.get("OPTIONS") or {}
    if kind == "django-redis":
        return options.get("SOCKET_CONNECT_TIMEOUT"), options.get("SOCKET_TIMEOUT")
    if kind == "django":
        return options.get("socket_connect_timeout"), options.get("socket_timeout")
    return None


def check_cache_timeouts(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W001: a Redis cache without socket timeouts holds every thread while Redis hangs."""
    warnings: list[checks.CheckMessage] = []
    for alias, config in settings.CACHES.items():
        timeouts = redis_cache_timeouts(config)
        if timeouts is None or _gets_cache_timeouts(config):
            continue
        missing = [
            label
            for label, value in zip(("connect", "read"), timeouts, strict=True)
            if value is None
        ]
        if missing:
            warnings.append(
                checks.Warning(
                    f"The Redis cache {alias!r} has no socket {' or '.join(missing)} timeout: "
                    "while Redis hangs, every request that touches it waits (5 s with redis-py 8, "
                    "without end with older versions).",
                    hint=_REDIS_HINT,
                    obj=f"CACHES[{alias!r}]",
                    id="django_stability.W001",
                )
            )
    return warnings


def _gets_cache_timeouts(config: Mapping[str, Any]) -> bool:
    """A stampede-protected django-redis cache: it fills in CACHE_*_TIMEOUT itself (W040)."""
    from .cache import StampedeProtectedRedisCache

    backend = _cache_backend(config)
    return backend is not None and issubclass(backend, StampedeProtectedRedisCache)


def check_redis_py_version(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W002: redis-py before 8 has no default socket timeout at all."""
    import redis

    return redis_py_messages(redis.__version__)


def redis_py_messages(version: str) -> list[checks.CheckMessage]:
    try:
        major = int(version.split(".")[0])
    except ValueError:
        return []
    if major >= 8:
        return []
    return [
        checks.Warning(
            f"redis-py {version} has no default socket timeout: a hung Redis holds a caller "
            "without end wherever a timeout was not set explicitly.",
            hint="Upgrade to redis-py 8 or later, and set socket timeouts on every Redis cache.",
            id="django_stability.W002",
        )
    ]


def check_ignore_exceptions_with_sessions(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W003: django-redis IGNORE_EXCEPTIONS under cache sessions loops while Redis is down."""
    engine = settings.SESSION_ENGINE
    if engine not in {
        "django.contrib.sessions.backends.cache",
        "django.contrib.sessions.backends.cached_db",
    }:
        return []
    alias = settings.SESSION_CACHE_ALIAS
    config = settings.CACHES.get(alias) or {}
    from .store import cache_kind

    if cache_kind(config) != "django-redis":
        return []
    options = config.get("OPTIONS") or {}
    if not (options.get("IGNORE_EXCEPTIONS") or settings.DJANGO_REDIS_IGNORE_EXCEPTIONS):
        return []
    return [
        checks.Warning(
            f"Sessions are stored in the django-redis cache {alias!r} with IGNORE_EXCEPTIONS: "
            "while Redis is down, creating a session loops over exists()/add() (about 10,000 "
            "calls per request) because every key looks free and no add succeeds.",
            hint="Drop IGNORE_EXCEPTIONS on the session cache, or keep sessions in the database "
            "(SESSION_ENGINE = 'django.contrib.sessions.backends.db').",
            obj=f"CACHES[{alias!r}]",
            id="django_stability.W003",
        )
    ]


def check_store_is_shared(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W004: the store (policy generation, shared limits) on a cache each process has alone."""
    from .store import cache_kind

    if settings.STORE == "local" or settings.STORE_URL:
        return []
    alias = settings.STORE_CACHE_ALIAS
    config = settings.CACHES.get(alias)
    if config is None or cache_kind(config) not in {"local", "shared", "unknown"}:
        return []
    return [
        checks.Warning(
            f"STABILITY['STORE_CACHE_ALIAS'] points at {alias!r} ({config.get('BACKEND')}), "
            "which is not a Redis cache: the store runs in each process alone, so limits are "
            "per process and a policy saved in the admin reaches only the process that saved it.",
            hint="Point STORE_CACHE_ALIAS at a django-redis cache, set STABILITY['STORE_URL'], "
            "or set STABILITY['STORE'] = 'local' to accept per-process state.",
            id="django_stability.W004",
        )
    ]


def check_store_timeouts_apply(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W005: the store could not apply its own short timeouts to the cache's connection pool."""
    from .store import cache_kind

    if settings.STORE == "local" or settings.STORE_URL:
        return []
    alias = settings.STORE_CACHE_ALIAS
    config = settings.CACHES.get(alias) or {}
    if cache_kind(config) != "django-redis":
        return []
    options = config.get("OPTIONS") or {}
    factory = str(options.get("CONNECTION_POOL_CLASS", "")) + str(options.get("CLIENT_CLASS", ""))
    if "Sentinel" not in factory and "Cluster" not in factory and "Shard" not in factory:
        return []
    return [
        checks.Warning(
            f"The store uses the cache {alias!r} through a client it cannot copy with its own "
            "timeouts; it will use that client's timeouts as they are.",
            hint="Set STABILITY['STORE_URL'] to a Redis URL for the store, or make sure the "
            "cache's own socket timeouts are short.",
            id="django_stability.W005",
        )
    ]


def _url_patterns() -> list[tuple[str, str | None, Any]]:
    """Every URL pattern as (path as far as it is literal, name with namespace, callback)."""
    from django.urls import URLPattern, URLResolver, get_resolver

    found: list[tuple[str, str | None, Any]] = []

    def literal(pattern: Any) -> str:
        text = str(pattern).lstrip("^").rstrip("$").replace("\\", "")
        cut = min((text.find(c) for c in "<([?*+" if c in text), default=len(text))
        return text[:cut]

    def walk(patterns: Any, prefix: str, namespace: str) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
                walk(entry.url_patterns, prefix + literal(entry.pattern), inner)
            elif isinstance(entry, URLPattern):
                name = f"{namespace}{entry.name}" if entry.name else None
                found.append(("/" + prefix + literal(entry.pattern), name, entry.callback))

    walk(get_resolver().url_patterns, "", "")
    return found


def _is_login(name: str | None, callback: Any) -> bool:
    from django.contrib.auth.views import LoginView

    view_class = getattr(callback, "view_class", None)
    if isinstance(view_class, type) and issubclass(view_class, LoginView):
        return True
    if getattr(callback, "__name__", "") == "login":
        return True
    return name is not None and name.rsplit(":", 1)[-1].endswith("login")


def check_login_rate_limited(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W010: a login view that no rate-limit policy covers invites credential stuffing."""
    from django.urls import Resolver404, resolve

    from .policies import registry
    from .ratelimit import RateLimitSpec

    try:
        patterns = _url_patterns()
    except Exception:  # a broken URLconf is reported by Django's own checks
        return []
    routed = [s for s in registry.all(RateLimitSpec) if s.routed and s.mode != "off"]
    warnings: list[checks.CheckMessage] = []
    for path, name, callback in patterns:
        if not _is_login(name, callback):
            continue
        if getattr(callback, "_stability_rate_limits", None):
            continue
        try:
            match = resolve(path)
        except Resolver404:
            match = None
        covered = any(
            (name and name in spec.url_names)
            or any(path.startswith(prefix) for prefix in spec.path_prefixes)
            or any(re.match(pattern, path) for pattern in spec.path_patterns)
            or (match is not None and match.view_name in spec.url_names)
            for spec in routed
        )
        if not covered:
            warnings.append(
                checks.Warning(
                    f"The login view {name or path!r} ({path}) has no rate-limit policy: "
                    "nothing slows down password guessing and credential stuffing.",
                    hint=f"Decorate it with @rate_limit('login', rate='10/m', key='ip', "
                    f"on_store_failure='closed'), or add a rate-limit policy with url_names "
                    f"{name or path!r} in STABILITY['POLICIES'] or the admin.",
                    obj=name or path,
                    id="django_stability.W010",
                )
            )
    return warnings


def check_forwarded_for_trust(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W011: X-Forwarded-For believed without a list of trusted proxies."""
    from .clientip import parse_networks

    warnings: list[checks.CheckMessage] = []
    meta_key = settings.DJANGO_RATELIMIT_IP_META_KEY
    if isinstance(meta_key, str) and meta_key.upper().startswith("HTTP_"):
        warnings.append(
            checks.Warning(
                f"RATELIMIT_IP_META_KEY = {meta_key!r} makes django-ratelimit count clients by a "
                "header that any client can write: rotating its value walks around every IP "
                "limit.",
                hint="Set STABILITY['TRUSTED_PROXIES'] to your proxies' networks and use "
                "django-stability's 'ip' key (or policy_rate with a key function that reads "
                "django_stability.clientip.client_key), which believes the header only as far "
                "as trusted proxies wrote it.",
                id="django_stability.W011",
            )
        )
    try:
        trusted = parse_networks(list(settings.TRUSTED_PROXIES))
    except (ValueError, ImproperlyConfigured):
        return warnings  # E001 reports it
    everyone = [str(net) for net in trusted if net.prefixlen == 0]
    if everyone:
        warnings.append(
            checks.Warning(
                f"STABILITY['TRUSTED_PROXIES'] trusts every address ({', '.join(everyone)}): "
                f"{settings.CLIENT_IP_HEADER} is then believed from any client, which may name "
                "itself anyone.",
                hint="List only the networks of your load balancers and reverse proxies.",
                id="django_stability.W011",
            )
        )
    return warnings


def check_user_keys_after_auth(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W012: a routed policy counts by user, but the middleware runs before authentication."""
    from .policies import registry
    from .ratelimit import RateLimitSpec
    from .ratelimit_keys import needs_user

    middleware = list(settings.MIDDLEWARE)
    ours = "django_stability.middleware.StabilityMiddleware"
    auth = "django.contrib.auth.middleware.AuthenticationMiddleware"
    if ours not in middleware or auth not in middleware:
        return []
    if middleware.index(ours) > middleware.index(auth):
        return []
    by_user = [
        spec.name
        for spec in registry.all(RateLimitSpec)
        if spec.routed and spec.mode != "off" and needs_user(spec.key)
    ]
    if not by_user:
        return []
    return [
        checks.Warning(
            f"Rate-limit policies {', '.join(map(repr, by_user))} count by user, but "
            "StabilityMiddleware runs before AuthenticationMiddleware: the middleware sees no "
            "user and counts every such request as anonymous.",
            hint="Move StabilityMiddleware after AuthenticationMiddleware, or apply these "
            "policies with @rate_limit on the views.",
            id="django_stability.W012",
        )
    ]


# Load shedding: E020-E029, W020-W029 ----------------------------------------------

MIDDLEWARE_PATH = "django_stability.middleware.StabilityMiddleware"


def check_shedding_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E020: the shedding settings must describe a limit that can work."""
    from .shedding import PRIORITIES

    try:
        shares = settings.SHEDDING_CLASS_SHARES
        hysteresis = settings.SHEDDING_HYSTERESIS
        low = settings.SHEDDING_ADAPTIVE_MIN_LIMIT
        high = settings.SHEDDING_ADAPTIVE_MAX_LIMIT
        smoothing = settings.SHEDDING_ADAPTIVE_SMOOTHING
    except ImproperlyConfigured:
        return []  # E001 reports it
    problems: list[str] = []
    if set(shares) != set(PRIORITIES) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1
        for v in shares.values()
    ):
        problems.append(
            "SHEDDING_CLASS_SHARES must give each of "
            f"{', '.join(PRIORITIES)} a fraction of the limit above 0 and at most 1, "
            f"not {dict(shares)!r}"
        )
    elif [shares[p] for p in PRIORITIES] != sorted((shares[p] for p in PRIORITIES), reverse=True):
        problems.append(
            "SHEDDING_CLASS_SHARES must not give a lower class a larger share than a higher "
            f"one (critical >= high >= default >= sheddable), not {dict(shares)!r}"
        )
    if not 0 <= hysteresis < 0.5:
        problems.append(f"SHEDDING_HYSTERESIS must be from 0 to under 0.5, not {hysteresis!r}")
    if low > high:
        problems.append(
            f"SHEDDING_ADAPTIVE_MIN_LIMIT ({low}) is above SHEDDING_ADAPTIVE_MAX_LIMIT ({high})"
        )
    if not 0 < smoothing <= 1:
        problems.append(
            f"SHEDDING_ADAPTIVE_SMOOTHING must be above 0 and at most 1, not {smoothing!r}"
        )
    return [
        checks.Error(
            f"settings.STABILITY: {problem}.",
            hint="See the load-shedding settings in the settings reference.",
            id="django_stability.E020",
        )
        for problem in problems
    ]


def _middleware() -> list[str]:
    from django.conf import settings as django_settings

    return [str(m) for m in getattr(django_settings, "MIDDLEWARE", None) or []]


def check_middleware_first(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W020: StabilityMiddleware must come first, before sessions, auth and everything else."""
    middleware = _middleware()
    if MIDDLEWARE_PATH not in middleware or middleware[0] == MIDDLEWARE_PATH:
        return []
    before = middleware[: middleware.index(MIDDLEWARE_PATH)]
    return [
        checks.Warning(
            f"{MIDDLEWARE_PATH} comes after {', '.join(before)}: every request those refuse "
            "to shed has already cost their work (sessions, authentication, database "
            "queries), which is what an overloaded process cannot afford.",
            hint="Put django_stability.middleware.StabilityMiddleware first in MIDDLEWARE.",
            id="django_stability.W020",
        )
    ]


def _routed_shedding_policies() -> list[tuple[str, Any]]:
    from .concurrency import ConcurrencySpec
    from .policies import registry
    from .shedding import AdmissionSpec

    found: list[tuple[str, Any]] = []
    for spec in registry.all(AdmissionSpec):
        if spec.mode != "off":
            found.append(("admission", spec))
    for cspec in registry.all(ConcurrencySpec):
        if cspec.mode != "off" and cspec.routed:
            found.append(("concurrency", cspec))
    return found


def check_middleware_installed(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W021: admission and routed concurrency policies need the middleware to do anything."""
    if MIDDLEWARE_PATH in _middleware():
        return []
    policies = _routed_shedding_policies()
    if not policies:
        return []
    names = ", ".join(f"{kind}:{spec.name}" for kind, spec in policies)
    return [
        checks.Warning(
            f"Policies that the middleware applies are defined ({names}), but "
            f"{MIDDLEWARE_PATH} is not in MIDDLEWARE: they have no effect.",
            hint="Add django_stability.middleware.StabilityMiddleware, first, to MIDDLEWARE.",
            id="django_stability.W021",
        )
    ]


def _url_names() -> set[str]:
    """Every URL name the URLconf can reverse, namespaced ones as 'namespace:name'."""
    from django.urls import URLPattern, URLResolver, get_resolver

    names: set[str] = set()

    def walk(patterns: Any, namespace: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = namespace
                if pattern.namespace:
                    inner = f"{namespace}{pattern.namespace}:"
                walk(pattern.url_patterns, inner)
            elif isinstance(pattern, URLPattern) and pattern.name:
                names.add(f"{namespace}{pattern.name}")

    walk(get_resolver().url_patterns, "")
    return names


def check_policies_can_match(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W022: a routed policy names a URL that does not exist; W023: it covers nothing at all."""
    from .shedding import AdmissionSpec

    policies = _routed_shedding_policies()
    if not policies:
        return []
    try:
        known = _url_names()
    except Exception:  # a broken URLconf is Django's own check to report
        return []
    messages: list[checks.CheckMessage] = []
    for kind, spec in policies:
        unknown = sorted(set(spec.url_names) - known)
        if unknown:
            messages.append(
                checks.Warning(
                    f"The {kind} policy {spec.name!r} names URL(s) {', '.join(unknown)} that "
                    "the URLconf does not have: it never matches them.",
                    hint="Use names as reverse() takes them, 'namespace:name' for namespaced URLs.",
                    id="django_stability.W022",
                )
            )
        if isinstance(spec, AdmissionSpec) and not spec.matches_anything:
            messages.append(
                checks.Warning(
                    f"The admission policy {spec.name!r} has no URL name, path prefix, path "
                    "pattern or User-Agent: it never matches a request.",
                    hint="Give it the routes (or clients) whose priority it sets.",
                    id="django_stability.W023",
                )
            )
    return messages


def check_classes_have_a_limit(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W024: priority classes only matter once there is an in-flight limit to share."""
    from .policies import registry
    from .shedding import AdmissionSpec

    try:
        if settings.SHEDDING_MAX_IN_FLIGHT is not None or settings.SHEDDING_ADAPTIVE:
            return []
        if settings.SHEDDING_MODE == "off":
            return []
    except ImproperlyConfigured:
        return []
    if not any(spec.mode != "off" for spec in registry.all(AdmissionSpec)):
        return []
    return [
        checks.Warning(
            "Admission policies give requests priority classes, but no in-flight limit is "
            "set: no request is ever shed for capacity, whatever its class.",
            hint="Set STABILITY['SHEDDING_MAX_IN_FLIGHT'] to the threads of a worker "
            "(gthread) or a concurrency target (ASGI), or turn on SHEDDING_ADAPTIVE.",
            id="django_stability.W024",
        )
    ]


def check_concurrency_keys(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E021: a routed concurrency limit keyed by user cannot be decided before authentication."""
    from .concurrency import ConcurrencySpec
    from .policies import registry

    return [
        checks.Error(
            f"The concurrency limit {spec.name!r} is keyed by user and routed: the middleware "
            "decides before authentication, so it cannot know the user, and skips it.",
            hint="Key it by ip or header:<name>, or apply it with @concurrency_limit on the "
            "view, where request.user is set.",
            id="django_stability.E021",
        )
        for spec in registry.all(ConcurrencySpec)
        if spec.routed and spec.key == "user" and spec.mode != "off"
    ]


# The stampede-protected cache: E040-E049, W040-W049 -------------------------------

#: Socket timeouts above this leave protected calls waiting too long on a hung Redis.
CACHE_TIMEOUT_LIMIT = 1.0


def _cache_backend(config: Mapping[str, Any]) -> type | None:
    from .store import cache_backend

    return cache_backend(config)


def check_protected_cache_client(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E040: the protected Redis cache needs django-redis's DefaultClient (or SentinelClient)."""
    from django.utils.module_loading import import_string
    from django_redis.client import DefaultClient, HerdClient, ShardClient

    from .cache import StampedeProtectedRedisCache

    errors: list[checks.CheckMessage] = []
    for alias, config in settings.CACHES.items():
        backend = _cache_backend(config)
        if backend is None or not issubclass(backend, StampedeProtectedRedisCache):
            continue
        path = (config.get("OPTIONS") or {}).get(
            "CLIENT_CLASS", "django_redis.client.DefaultClient"
        )
        try:
            client = import_string(str(path))
        except ImportError:
            continue  # Django reports the broken path itself
        if not issubclass(client, DefaultClient) or issubclass(client, (ShardClient, HerdClient)):
            errors.append(
                checks.Error(
                    f"The stampede-protected cache {alias!r} uses CLIENT_CLASS {path!r}: the "
                    "protection keeps a value, its lock and its backoff on one Redis and stores "
                    "its own envelope, which a sharded client splits and HerdClient wraps again.",
                    hint="Use django_redis.client.DefaultClient or SentinelClient; for other "
                    "clients protect the cache with StampedeProtectionMixin instead.",
                    obj=f"CACHES[{alias!r}]",
                    id="django_stability.E040",
                )
            )
    return errors


def check_cached_alias(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E041/W043: the cache @cached uses must exist, and had better be protected itself."""
    from .cache import StampedeProtectedRedisCache, StampedeProtectionMixin

    try:
        alias = settings.CACHE_ALIAS
    except ImproperlyConfigured:
        return []  # E001 reports it
    config = settings.CACHES.get(alias)
    if config is None:
        return [
            checks.Error(
                f"STABILITY['CACHE_ALIAS'] is {alias!r}, which is not in CACHES: @cached "
                "functions without cache= fail on their first call.",
                hint="Set CACHE_ALIAS to one of: "
                f"{', '.join(sorted(settings.CACHES)) or '(none)'}.",
                id="django_stability.E041",
            )
        ]
    backend = _cache_backend(config)
    if backend is None or issubclass(
        backend, (StampedeProtectedRedisCache, StampedeProtectionMixin)
    ):
        return []
    return [
        checks.Warning(
            f"@cached uses the cache {alias!r} ({config.get('BACKEND')}), which has no stampede "
            "protection of its own: it is protected through its add(), and waiters in other "
            "processes poll for the value instead of being woken.",
            hint="Use django_stability.cache.StampedeProtectedRedisCache as its BACKEND, or "
            "point STABILITY['CACHE_ALIAS'] at a protected cache.",
            obj=f"CACHES[{alias!r}]",
            id="django_stability.W043",
        )
    ]


def check_protected_cache_timeouts(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W040/W041: a protected Redis cache with long socket timeouts, or with client retries."""
    from .cache import StampedeProtectedRedisCache, StampedeProtectionMixin

    messages: list[checks.CheckMessage] = []
    for alias, config in settings.CACHES.items():
        backend = _cache_backend(config)
        if backend is None or not issubclass(
            backend, (StampedeProtectedRedisCache, StampedeProtectionMixin)
        ):
            continue
        options = config.get("OPTIONS") or {}
        timeouts = redis_cache_timeouts(config)
        if timeouts is not None:
            long = [
                f"{label} {value!r} s"
                for label, value in zip(("connect", "read"), timeouts, strict=True)
                if isinstance(value, (int, float)) and value > CACHE_TIMEOUT_LIMIT
            ]
            if long:
                messages.append(
                    checks.Warning(
                        f"The stampede-protected cache {alias!r} has a long socket timeout "
                        f"({', '.join(long)}): while Redis hangs, each protected call waits "
                        "that long before it computes the value itself.",
                        hint="Remove the timeouts from OPTIONS (the protection then uses "
                        "STABILITY['CACHE_SOCKET_TIMEOUT'] and CACHE_CONNECT_TIMEOUT) or set "
                        f"them to {CACHE_TIMEOUT_LIMIT:g} s or less.",
                        obj=f"CACHES[{alias!r}]",
                        id="django_stability.W040",
                    )
                )
        retry_sources = [
            options.get("CONNECTION_POOL_KWARGS") or {},
            options.get("REDIS_CLIENT_KWARGS") or {},
            options,
        ]
        retries = any(
            source.get("retry_on_timeout")
            or source.get("retry_on_error")
            or getattr(source.get("retry"), "get_retries", lambda: 0)() > 0
            for source in retry_sources
        )
        if retries:
            messages.append(
                checks.Warning(
                    f"The stampede-protected cache {alias!r} retries failed Redis calls: each "
                    "retry adds a socket timeout to every protected call while Redis hangs.",
                    hint="Drop retry, retry_on_timeout and retry_on_error from the cache's "
                    "OPTIONS; the protection falls back to the process after one failure.",
                    obj=f"CACHES[{alias!r}]",
                    id="django_stability.W041",
                )
            )
    return messages


def check_mixin_backend_is_shared(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W042: the mixin on a backend whose add() is per process or not atomic."""
    from django.core.cache.backends.dummy import DummyCache
    from django.core.cache.backends.filebased import FileBasedCache
    from django.core.cache.backends.locmem import LocMemCache

    from .cache import StampedeProtectionMixin

    messages: list[checks.CheckMessage] = []
    for alias, config in settings.CACHES.items():
        backend = _cache_backend(config)
        if backend is None or not issubclass(backend, StampedeProtectionMixin):
            continue
        per_process = [
            c for c in (LocMemCache, DummyCache, FileBasedCache) if issubclass(backend, c)
        ]
        if per_process:
            messages.append(
                checks.Warning(
                    f"The stampede-protected cache {alias!r} is built on "
                    f"{per_process[0].__name__}, whose add() is per process or not atomic: "
                    "each process computes a missing value once, but several processes or "
                    "servers each compute it.",
                    hint="Build the protection on a shared cache (Redis, memcached), or accept "
                    "one compute per process.",
                    obj=f"CACHES[{alias!r}]",
                    id="django_stability.W042",
                )
            )
    return messages


# Background jobs: E050-E059, W050-W059 ------------------------------------------------

#: Pools that run a task in the worker's own process or thread and so cannot
#: stop it: Celery ignores time limits there without a word.
POOLS_WITHOUT_TIME_LIMITS = {"solo", "threads", "thread"}


def _job_app() -> Any | None:
    from .jobs.broker import celery_app

    try:
        return celery_app()
    except Exception:
        return None


def _job_specs() -> tuple[Any, ...]:
    from .jobs.policy import JobSpec
    from .policies import registry

    return registry.all(JobSpec)


def check_job_app(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E052: ``JOBS_CELERY_APP`` must name an importable Celery app."""
    from .jobs.broker import celery_app

    try:
        celery_app()
    except Exception as exc:
        return [
            checks.Error(
                f"STABILITY['JOBS_CELERY_APP'] = {settings.JOBS_CELERY_APP!r} cannot be "
                f"imported: {exc}",
                hint="Give the dotted path of your Celery app, e.g. 'proj.celery.app', or "
                "None to use Celery's current app.",
                id="django_stability.E052",
            )
        ]
    return []


def visibility_timeout_messages(
    specs: Any, timeout: float | None, transport: str
) -> list[checks.CheckMessage]:
    """E050 for each job whose longest delay plus time limit reaches the visibility timeout."""
    if timeout is None:
        return []
    errors: list[checks.CheckMessage] = []
    for spec in specs:
        if spec.time_limit is None:
            continue
        total = spec.jitter + spec.time_limit
        if total >= timeout:
            errors.append(
                checks.Error(
                    f"Job {spec.name!r}: its longest start delay (jitter {spec.jitter:g} s) plus "
                    f"its time limit ({spec.time_limit:g} s) is {total:g} s, not shorter than the "
                    f"{transport} broker's visibility timeout ({timeout:g} s): the broker would "
                    "deliver the job to a second worker while the first still waits or runs.",
                    hint=f"Lower the job's jitter or time_limit, or raise "
                    f"broker_transport_options['visibility_timeout'] above {total:g} s.",
                    obj=f"job {spec.name}",
                    id="django_stability.E050",
                )
            )
    return errors


def check_job_visibility_timeout(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E050: countdown plus time limit longer than the broker's visibility timeout."""
    from .jobs import broker

    app = _job_app()
    if app is None:
        return []
    return visibility_timeout_messages(
        _job_specs(), broker.visibility_timeout(app), broker.transport(app)
    )


def time_limit_pool_messages(pool: str, specs: Any = None) -> list[checks.CheckMessage]:
    """E051 when ``pool`` ignores time limits and a job policy sets one."""
    name = pool.rsplit(".", 1)[-1].rsplit(":", 1)[-1].lower()
    if name not in POOLS_WITHOUT_TIME_LIMITS:
        return []
    limited = [
        spec.name
        for spec in (_job_specs() if specs is None else specs)
        if spec.time_limit is not None or spec.soft_time_limit is not None
    ]
    if not limited:
        return []
    return [
        checks.Error(
            f"The Celery worker pool is {name!r}, which ignores time limits without a word, and "
            f"these jobs have time limits: {', '.join(sorted(limited))}.",
            hint="Run the workers with the prefork pool (celery worker -P prefork), or drop the "
            "time limits from these job policies.",
            id="django_stability.E051",
        )
    ]


def check_job_pool(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E051: time limits on a solo or threads pool (from the app's ``worker_pool``)."""
    app = _job_app()
    if app is None:
        return []
    return time_limit_pool_messages(str(app.conf.worker_pool or "prefork"))


def _running_tests() -> bool:
    # Django's test runner and pytest-django both set up the test environment,
    # which swaps the mail backend for an outbox.
    from django.core import mail

    return hasattr(mail, "outbox")


def check_eager(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W050: ``task_always_eager`` outside tests runs every job on the web thread."""
    app = _job_app()
    if app is None or not app.conf.task_always_eager or _running_tests():
        return []
    return [
        checks.Warning(
            "Celery's task_always_eager is on: every background job runs inside the request "
            "that asked for it, on the web thread, which is what background jobs exist to avoid.",
            hint="Turn task_always_eager off outside tests (CELERY_TASK_ALWAYS_EAGER = False).",
            id="django_stability.W050",
        )
    ]


def check_job_prefetch(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W051: a prefetch multiplier above 1 lets one worker hoard long jobs."""
    app = _job_app()
    specs = _job_specs()
    if app is None or not specs:
        return []
    multiplier = int(app.conf.worker_prefetch_multiplier or 0)
    if multiplier <= 1:
        return []
    queues = sorted({spec.queue or str(app.conf.task_default_queue) for spec in specs})
    return [
        checks.Warning(
            f"worker_prefetch_multiplier is {multiplier}: a worker on the job queues "
            f"({', '.join(queues)}) reserves {multiplier} long jobs per process while other "
            "workers stay idle, and those jobs wait behind the one running.",
            hint="Set worker_prefetch_multiplier = 1 for the workers of job (export) queues.",
            id="django_stability.W051",
        )
    ]


def check_acks_late_bound(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W052: acks_late with requeue on a lost worker, and nothing bounding the redeliveries."""
    app = _job_app()
    if app is None:
        return []
    conf = app.conf
    if not (conf.task_acks_late and conf.task_reject_on_worker_lost):
        return []
    return [
        checks.Warning(
            "task_acks_late with task_reject_on_worker_lost requeues a task whose worker process "
            "died, without any bound: a task that kills its worker (out of memory, a crash in C "
            "code) is delivered again and again and takes down worker after worker.",
            hint="Drop task_reject_on_worker_lost (background jobs bound their own redeliveries "
            "with max_redeliveries), or count deliveries in the task and give up after a few.",
            id="django_stability.W052",
        )
    ]


def check_job_urls(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W053: background jobs are defined but their status URLs are not included."""
    import uuid

    from django.urls import NoReverseMatch, reverse

    if not _job_specs():
        return []
    try:
        reverse("django_stability:job-status", args=[uuid.uuid4()])
    except NoReverseMatch:
        return [
            checks.Warning(
                "Background jobs are defined but the job status URLs are not in the URLconf: "
                "accepting a job will fail because its status URL cannot be built.",
                hint='Add path("stability/", include("django_stability.urls")) to your URLconf.',
                id="django_stability.W053",
            )
        ]
    return []


# Integration points (W030-W039) ------------------------------------------------------

_PG_SETTINGS = (
    (
        "statement_timeout",
        "django_stability.W030",
        "a query that hangs (a lock, a runaway plan) holds its worker until it ends",
    ),
    (
        "lock_timeout",
        "django_stability.W031",
        "a query waiting for a lock queues behind it; the queue fills the connection pool and "
        "every worker waits (the book's 'database lock' cascade)",
    ),
)


def postgresql_missing_timeouts(config: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Which of statement_timeout, lock_timeout and connect_timeout a PostgreSQL DATABASES
    entry leaves unset (in OPTIONS, or in PGOPTIONS / PGCONNECT_TIMEOUT)."""
    options = config.get("OPTIONS") or {}
    server_options = f"{options.get('options', '')} {environ.get('PGOPTIONS', '')}"
    missing = [name for name, _, _ in _PG_SETTINGS if name not in server_options]
    if options.get("connect_timeout") in (None, "", 0) and not environ.get("PGCONNECT_TIMEOUT"):
        missing.append("connect_timeout")
    return missing


def check_database_timeouts(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W030-W032: PostgreSQL connections without statement, lock or connect timeouts."""
    import os

    return database_timeout_messages(settings.DATABASES, os.environ)


def database_timeout_messages(
    databases: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str]
) -> list[checks.CheckMessage]:
    found: list[checks.CheckMessage] = []
    for alias, config in databases.items():
        if "postgresql" not in str(config.get("ENGINE", "")):
            continue
        missing = postgresql_missing_timeouts(config, environ)
        for name, check_id, why in _PG_SETTINGS:
            if name in missing:
                found.append(
                    checks.Warning(
                        f"The PostgreSQL database {alias!r} sets no {name}: {why}.",
                        hint=f"Add '-c {name}=5000' (milliseconds; pick yours) to "
                        f"DATABASES[{alias!r}]['OPTIONS']['options']. If the server or the role "
                        f"sets it already, silence {check_id}.",
                        obj=f"DATABASES[{alias!r}]",
                        id=check_id,
                    )
                )
        if "connect_timeout" in missing:
            found.append(
                checks.Warning(
                    f"The PostgreSQL database {alias!r} sets no connect_timeout: while the "
                    "server cannot be reached, each new connection waits for the operating "
                    "system to give up (minutes).",
                    hint=f"Set DATABASES[{alias!r}]['OPTIONS']['connect_timeout'] = 3 (seconds).",
                    obj=f"DATABASES[{alias!r}]",
                    id="django_stability.W032",
                )
            )
    return found


_REQUESTS_VERBS = frozenset({"get", "post", "put", "patch", "delete", "head", "options", "request"})


def requests_calls_without_timeout(function: Any) -> list[tuple[int, str]]:
    """``(line, verb)`` of each ``requests.<verb>(...)`` in ``function`` with no timeout."""
    import ast
    import inspect
    import textwrap

    try:
        source = textwrap.dedent(inspect.getsource(function))
        first_line = inspect.getsourcelines(function)[1]
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return []
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        target = node.func.value
        if not (isinstance(target, ast.Name) and target.id == "requests"):
            continue
        if node.func.attr not in _REQUESTS_VERBS:
            continue
        names = {keyword.arg for keyword in node.keywords}
        if "timeout" in names or None in names:  # None: **kwargs may carry one
            continue
        found.append((first_line + node.lineno - 1, node.func.attr))
    return found


def check_requests_without_timeout(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W033: code under a breaker or a guard calls requests without a timeout."""
    from .breaker import guarded_functions

    found: list[checks.CheckMessage] = []
    for function in guarded_functions():
        for line, verb in requests_calls_without_timeout(function):
            where = f"{function.__module__}.{function.__qualname__}"
            found.append(
                checks.Warning(
                    f"{where} (line {line}) calls requests.{verb}() without a timeout: "
                    "requests waits without end for a server that does not answer, and the "
                    "guard's deadline does not reach it.",
                    hint="Pass timeout=(connect, read), or use django_stability.outbound."
                    "session(), whose calls always have timeouts and follow the deadline.",
                    obj=where,
                    id="django_stability.W033",
                )
            )
    return found


def check_cluster_scope_on_a_local_store(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W034: cluster-scope breakers or bulkheads while the store lives in each process."""
    from .breaker import BreakerSpec
    from .bulkhead import BulkheadSpec
    from .policies import registry

    try:
        if settings.STORE != "local":
            return []
    except ImproperlyConfigured:
        return []  # E001 reports it
    specs: list[BreakerSpec | BulkheadSpec] = [
        *registry.all(BreakerSpec),
        *registry.all(BulkheadSpec),
    ]
    names = [f"{spec.kind} {spec.name!r}" for spec in specs if spec.scope == "cluster"]
    if not names:
        return []
    return [
        checks.Warning(
            f"{', '.join(names)} {'has' if len(names) == 1 else 'have'} cluster scope, but "
            "STABILITY['STORE'] is 'local': each process keeps its own state, so the verdict "
            "and the limits are per process.",
            hint="Configure a Redis store (STORE_URL or a django-redis cache), or use "
            "scope='process'.",
            id="django_stability.W034",
        )
    ]


# Operations: metrics, the status token, guards (E060-E069, W060-W069) ----------------


def check_metrics(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E060, E061, W060: Prometheus metrics that cannot work, or that each process answers alone."""
    import os

    from . import metrics

    try:
        wanted = settings.METRICS_ENABLED
    except ImproperlyConfigured:
        return []  # E001 reports it
    if wanted and not metrics.available():
        return [
            checks.Error(
                "STABILITY['METRICS_ENABLED'] is True but prometheus_client is not installed.",
                hint="pip install 'django-stability[prometheus]', or set METRICS_ENABLED to None "
                "(on when installed) or False.",
                id="django_stability.E060",
            )
        ]
    if not metrics.enabled():
        return []
    directory = metrics.multiprocess_dir()
    if directory is None:
        if settings.DEBUG:
            return []  # runserver: one process
        return [
            checks.Warning(
                "Prometheus metrics are on without PROMETHEUS_MULTIPROC_DIR: under a server "
                "with several worker processes (gunicorn, uvicorn --workers), each scrape is "
                "answered by one worker with its own counts, and the series jump from one "
                "worker to another.",
                hint="Set the environment variable PROMETHEUS_MULTIPROC_DIR to an empty "
                "directory before the server starts, and add child_exit = "
                "django_stability.metrics.child_exit to the gunicorn config. Silence this "
                "check if the site runs one process.",
                id="django_stability.W060",
            )
        ]
    if not (os.path.isdir(directory) and os.access(directory, os.W_OK)):
        return [
            checks.Error(
                f"PROMETHEUS_MULTIPROC_DIR is {directory!r}, which is not a writable directory: "
                "every metric update fails.",
                hint="Create the directory (empty it at each start of the server) and let the "
                "server's user write to it.",
                id="django_stability.E061",
            )
        ]
    return []


#: Shorter tokens can be guessed.
MIN_TOKEN_LENGTH = 24


def check_tokens(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W061: a status or metrics token short enough to guess."""
    try:
        tokens = {
            "DASHBOARD_STATUS_TOKEN": settings.DASHBOARD_STATUS_TOKEN,
            "METRICS_TOKEN": settings.METRICS_TOKEN,
        }
    except ImproperlyConfigured:
        return []
    return [
        checks.Warning(
            f"STABILITY[{key!r}] is shorter than {MIN_TOKEN_LENGTH} characters: it can be "
            "guessed, and it opens the live state of the site.",
            hint="Use a long random value, e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))', kept out of the code (an environment variable).",
            id="django_stability.W061",
        )
        for key, token in tokens.items()
        if token is not None and len(token) < MIN_TOKEN_LENGTH
    ]


def check_guard_timeouts(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W062: a guard with no timeout (neither per attempt nor in total)."""
    from .guard import GuardSpec
    from .policies import registry

    return [
        checks.Warning(
            f"The guard {spec.name!r} has no timeout (timeout and total_timeout are 0): a hung "
            "dependency holds every caller's thread until the operating system gives up.",
            hint=f"Set a timeout on guard({spec.name!r}, timeout=...) or on its policy in the "
            "admin, a little above the dependency's slowest good answer.",
            obj=spec.name,
            id="django_stability.W062",
        )
        for spec in registry.all(GuardSpec)
        if spec.mode != "off" and not spec.timeout and not spec.total_timeout
    ]


ALL_CHECKS = (
    check_settings,
    check_policies,
    check_cache_timeouts,
    check_redis_py_version,
    check_ignore_exceptions_with_sessions,
    check_store_is_shared,
    check_store_timeouts_apply,
    check_login_rate_limited,
    check_forwarded_for_trust,
    check_user_keys_after_auth,
    check_shedding_settings,
    check_middleware_first,
    check_middleware_installed,
    check_policies_can_match,
    check_classes_have_a_limit,
    check_concurrency_keys,
    check_protected_cache_client,
    check_cached_alias,
    check_protected_cache_timeouts,
    check_mixin_backend_is_shared,
    check_job_app,
    check_job_visibility_timeout,
    check_job_pool,
    check_eager,
    check_job_prefetch,
    check_acks_late_bound,
    check_job_urls,
    check_database_timeouts,
    check_requests_without_timeout,
    check_cluster_scope_on_a_local_store,
    check_metrics,
    check_tokens,
    check_guard_timeouts,
)


def register() -> None:
    for check in ALL_CHECKS:
        checks.register(check, "django_stability")
