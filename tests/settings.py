"""Settings for the test suite: real PostgreSQL, real Redis, nothing mocked.

Each run gets its own id (inherited by the processes it starts), so that its
database and its Redis keys never meet those of another run on the same machine.
"""

from __future__ import annotations

import os
import uuid

RUN_ID = os.environ.setdefault("STABILITY_TEST_RUN", uuid.uuid4().hex[:10])
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

SECRET_KEY = "django-stability-tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_stability",
    "tests.testapp",
]

MIDDLEWARE = [
    "django_stability.middleware.StabilityMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "NAME": os.environ.get("STABILITY_TEST_DB_NAME", "postgres"),
        "TEST": {"NAME": f"test_stability_{RUN_ID}"},
    }
}

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"stabtest:{RUN_ID}",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    },
    # The stampede-protected cache on the same Redis (tests/test_cache_*.py); its
    # timeouts are the protection's defaults (CACHE_SOCKET_TIMEOUT ...).
    "protected": {
        "BACKEND": "django_stability.cache.StampedeProtectedRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"stabtest:{RUN_ID}-protected",
    },
    # The same protection on other backends, through the mixin (tests/test_cache_mixin.py).
    "protected-locmem": {
        "BACKEND": "django_stability.cache.StampedeProtectedLocMemCache",
        "LOCATION": "protected-locmem",
    },
    "protected-django-redis": {
        "BACKEND": "django_stability.cache.StampedeProtectedDjangoRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"stabtest:{RUN_ID}-django",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    },
}

STABILITY = {
    "STORE_KEY_PREFIX": os.environ.get("STABILITY_TEST_PREFIX", f"stabtest:{RUN_ID}"),
    # @cached uses the stampede-protected cache unless told otherwise.
    "CACHE_ALIAS": "protected",
    # No reporter thread writing into every test's key prefix in the background
    # (tests of the Stability page turn it on, or call the reporter themselves).
    "DASHBOARD_REPORT_INTERVAL": None,
}

STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"django_stability": {"handlers": ["null"], "propagate": True}},
}

# Background jobs: a real Celery app (tests/celery_app.py) on the real Redis
# broker. Every key kombu writes carries this run's prefix and the queues
# carry its id, so parallel runs sharing the Redis never see each other's
# messages; result files go to a directory of this run.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"stabtest:{RUN_ID}:celery:"}
CELERY_TASK_DEFAULT_QUEUE = f"stabtest-{RUN_ID}"
CELERY_TASK_DEFAULT_EXCHANGE = f"stabtest-{RUN_ID}"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
MEDIA_ROOT = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"stabtest-{RUN_ID}-media")
STABILITY["JOBS_CELERY_APP"] = "tests.celery_app.app"
