"""Settings of the servers the load-shedding tests start (gunicorn, uvicorn).

The test settings, with this site's URLs, no database (the policy registry
then serves the code and settings layers), and what the test passes in the
environment: ``SHEDDING_SITE_STABILITY`` (JSON merged into ``STABILITY``) and
``SHEDDING_SITE_MIDDLEWARE`` ("stability", "none" or "rqto" for
django-request-queue-timeout in its place).
"""

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import MIDDLEWARE, STABILITY

ROOT_URLCONF = "tests.shedding_site.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
STABILITY = {**STABILITY, **json.loads(os.environ.get("SHEDDING_SITE_STABILITY", "{}"))}

_others = [m for m in MIDDLEWARE if not m.startswith("django_stability.")]
_choice = os.environ.get("SHEDDING_SITE_MIDDLEWARE", "stability")
if _choice == "none":
    MIDDLEWARE = _others
elif _choice == "rqto":
    MIDDLEWARE = ["rqto.middleware.RequestQueueTimeoutMiddleware", *_others]
    REQUEST_QUEUE_TIMEOUT_IN_SECONDS = float(os.environ.get("SHEDDING_SITE_RQTO", "1"))
