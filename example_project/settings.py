"""Settings of the example shop.

Two modes, chosen by ``REDIS_URL`` (``make demo`` sets it when a Redis answers):

* with Redis: the store, the cache and the Celery broker live in Redis, shared
  by every process;
* embedded: no Redis; the in-process store, a local-memory cache with the same
  stampede protection, and Celery on kombu's filesystem transport.

``SHOP_PROTECTION=off`` builds the same shop as a project without this app
would be: no middleware, a plain cache without timeouts, rate limits and
shedding off, the payment gateway called with ``requests`` and no timeout. The
drill runs every scenario against both, in the same run.

Everything the demo and the drill vary comes from the environment (``SHOP_*``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("REDIS_URL", "")
DEMO_MODE = "redis" if REDIS_URL else "embedded"
SHOP_PROTECTED = os.environ.get("SHOP_PROTECTION", "on") != "off"
#: Every key the shop writes in Redis starts with this (store, cache, Celery broker).
SHOP_KEY_PREFIX = os.environ.get("SHOP_KEY_PREFIX", "shop")
#: The simulated payment gateway (``python -m example_project.gateway``).
SHOP_GATEWAY_URL = os.environ.get("SHOP_GATEWAY_URL", "http://127.0.0.1:8001")
#: What the expensive catalogue query and a search cost, in seconds. The delay
#: stands for a slow query (the database waits, the thread holds), so that the
#: drill measures the defences and not this machine's CPU.
SHOP_CATALOGUE_COST = float(os.environ.get("SHOP_CATALOGUE_COST", "0.3"))
SHOP_SEARCH_COST = float(os.environ.get("SHOP_SEARCH_COST", "0.1"))
#: What the heavy part of the nightly report costs, in seconds (likewise).
SHOP_REPORT_COST = float(os.environ.get("SHOP_REPORT_COST", "0.5"))
#: Requests one web process serves at once: gunicorn's --threads.
SHOP_THREADS = int(os.environ.get("SHOP_THREADS", "4"))
#: When set, each web process writes its in-flight requests there (the drill reads them).
SHOP_STATS_DIR = os.environ.get("SHOP_STATS_DIR", "")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-shop-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_stability",
    "example_project.shop",
]

MIDDLEWARE = [
    # First: shedding and rate limits decide before any session or auth work.
    "django_stability.middleware.StabilityMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
if not SHOP_PROTECTED:
    MIDDLEWARE.remove("django_stability.middleware.StabilityMiddleware")
if SHOP_STATS_DIR:
    # Outermost, so that it sees every request that holds a thread, refused or not.
    MIDDLEWARE.insert(0, "example_project.shop.inflight.InFlightMiddleware")

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"
ASGI_APPLICATION = "example_project.asgi.application"

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
                "example_project.shop.context.shop",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DB", str(BASE_DIR / "db.sqlite3")),
        "OPTIONS": {"timeout": 20},
    }
}

CACHES: dict[str, Any]
if SHOP_PROTECTED and REDIS_URL:
    # The drop-in for django-redis: one recompute per expired key, stale values
    # served meanwhile, short timeouts and a breaker of its own.
    CACHES = {
        "default": {
            "BACKEND": "django_stability.cache.StampedeProtectedRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": SHOP_KEY_PREFIX,
        }
    }
elif SHOP_PROTECTED:
    CACHES = {
        "default": {
            "BACKEND": "django_stability.cache.StampedeProtectedLocMemCache",
            "LOCATION": "shop",
        }
    }
elif REDIS_URL:
    # What most projects have: django-redis, as its README shows it, without socket timeouts.
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": SHOP_KEY_PREFIX,
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

STABILITY: dict[str, Any] = {
    "STORE": "redis" if SHOP_PROTECTED and REDIS_URL else "local",
    "STORE_URL": REDIS_URL or None,
    "STORE_KEY_PREFIX": SHOP_KEY_PREFIX,
    # One gunicorn gthread worker runs SHOP_THREADS requests at once.
    "SHEDDING_MAX_IN_FLIGHT": SHOP_THREADS,
    "JOBS_CELERY_APP": "example_project.celery.app",
    # Routed policies: applied by the middleware, no view touched. The
    # decorators in views.py, payments.py and jobs.py carry the others.
    "POLICIES": {
        "admission": {
            "checkout": {
                "url_names": ["shop:checkout"],
                "priority": "critical",
            },
            "sign-in": {"url_names": ["shop:login", "admin:login"], "priority": "high"},
            "search": {"url_names": ["shop:search"], "priority": "sheddable"},
            "exports": {"url_names": ["shop:export-orders"], "priority": "sheddable"},
            "bots": {"user_agents": ["bot|crawler|spider"], "priority": "sheddable"},
        },
        "cache": {
            # The product list: served stale for up to 5 minutes while one caller
            # recomputes it in a background thread.
            "catalogue": {"key_prefixes": ["catalogue:"], "grace": 300, "refresh": "thread"},
        },
        "ratelimit": {
            "admin-login": {
                "url_names": ["admin:login"],
                "methods": ["POST"],
                "rate": "10/m",
                "key": "ip",
                "on_store_failure": "closed",
            },
        },
    },
}
if not SHOP_PROTECTED:
    STABILITY.update({"RATELIMIT_ENABLED": False, "SHEDDING_MODE": "off"})

SILENCED_SYSTEM_CHECKS = []
if not REDIS_URL:
    # Embedded on purpose: one web process, its state in memory (W004, W042 say so).
    SILENCED_SYSTEM_CHECKS += ["django_stability.W004", "django_stability.W042"]
if not SHOP_PROTECTED:
    # The drill's control run: no middleware and a cache without timeouts are what it shows.
    SILENCED_SYSTEM_CHECKS += [
        "django_stability.W001",
        "django_stability.W021",
        "django_stability.W043",
    ]

# Celery: the shop's worker runs the export job, the nightly report and the newsletter.
CELERY_TASK_DEFAULT_QUEUE = SHOP_KEY_PREFIX
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
        "global_keyprefix": f"{SHOP_KEY_PREFIX}:celery:"
    }
else:
    # kombu's filesystem transport: messages are files in a directory the demo creates.
    _celery_dir = Path(os.environ.get("SHOP_CELERY_DIR", BASE_DIR.parent / "build" / "celery"))
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_celery_dir / "messages"),
        "data_folder_out": str(_celery_dir / "messages"),
        "control_folder": str(_celery_dir / "control"),
        "store_processed": False,
    }
    # The filesystem transport has no broadcast: no remote control.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "static"
MEDIA_ROOT = os.environ.get("SHOP_MEDIA", str(BASE_DIR.parent / "build" / "media"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
LOGIN_URL = "shop:login"
LOGIN_REDIRECT_URL = "shop:orders"
LOGOUT_REDIRECT_URL = "shop:home"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_stability": {"handlers": ["console"], "level": "INFO"}},
}
