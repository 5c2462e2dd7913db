"""A small site for the rate-limit throughput benchmark, served by gunicorn.

``BENCH_LIMITER`` chooses what guards the view: ``none``, ``django-ratelimit``
(its decorator) or ``stability`` (a routed policy applied by the middleware).
The limits are far above the load, so the cost measured is the limiter's own.
"""

import os

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django_ratelimit.decorators import ratelimit

from benchmarks.settings import *  # noqa: F403
from benchmarks.settings import MIDDLEWARE as _MIDDLEWARE

LIMITER = os.environ.get("BENCH_LIMITER", "none")
ROOT_URLCONF = "benchmarks.ratelimit_site"
DEBUG = False
MIDDLEWARE = [m for m in _MIDDLEWARE if LIMITER == "stability" or "StabilityMiddleware" not in m]
STABILITY = {
    "STORE_KEY_PREFIX": "stabbench",
    "POLICIES": {
        "ratelimit": {
            "bench-site": {"path_prefixes": ["/hello/"], "rate": "1000000/s", "key": "ip"}
        }
    },
}
RATELIMIT_USE_CACHE = "default"


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("hello")


if LIMITER == "django-ratelimit":
    hello = ratelimit(key="ip", rate="1000000/s", block=True)(hello)

urlpatterns = [path("hello/", hello)]
