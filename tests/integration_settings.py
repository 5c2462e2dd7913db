"""Settings of the gunicorn test of integration points: the test settings and its URLs."""

from tests.settings import *  # noqa: F403
from tests.settings import STABILITY as BASE

ROOT_URLCONF = "tests.integration_urls"

STABILITY = {
    **BASE,
    "POLICIES": {
        # The hung dependency's host: at most 2 calls at once, 0.5 s each, no retries;
        # its breaker is off, so that only the bulkhead and the timeout protect the site.
        "guard": {"http:127.0.0.1": {"timeout": 0.5, "retries": 0, "use_breaker": False}},
        "bulkhead": {"http:127.0.0.1": {"max_concurrent": 2}},
    },
}
