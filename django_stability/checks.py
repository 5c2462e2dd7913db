"""The stability audit: Django system checks with stable IDs.

Each check is a small function of the settings; ``docs/checks.md`` documents
every ID with its reason and its fix, and IDs are never reused.
"""

from __future__ import annotations

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
        if timeouts is None:
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


ALL_CHECKS = (
    check_settings,
    check_policies,
    check_cache_timeouts,
    check_redis_py_version,
    check_ignore_exceptions_with_sessions,
    check_store_is_shared,
    check_store_timeouts_apply,
    check_database_timeouts,
    check_requests_without_timeout,
    check_cluster_scope_on_a_local_store,
)


def register() -> None:
    for check in ALL_CHECKS:
        checks.register(check, "django_stability")
