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


ALL_CHECKS = (
    check_settings,
    check_policies,
    check_cache_timeouts,
    check_redis_py_version,
    check_ignore_exceptions_with_sessions,
    check_store_is_shared,
    check_store_timeouts_apply,
    check_job_app,
    check_job_visibility_timeout,
    check_job_pool,
    check_eager,
    check_job_prefetch,
    check_acks_late_bound,
    check_job_urls,
)


def register() -> None:
    for check in ALL_CHECKS:
        checks.register(check, "django_stability")
