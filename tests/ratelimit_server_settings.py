"""Settings for the servers the rate-limit tests start (uvicorn, gunicorn): routed policies."""

from tests.settings import *  # noqa: F403
from tests.settings import STABILITY as _BASE

STABILITY = {
    **_BASE,
    "POLICIES": {
        "ratelimit": {
            "srv-plain": {"path_prefixes": ["/rl/plain/"], "rate": "3/h"},
            "srv-plain-async": {"path_prefixes": ["/rl/plain-async/"], "rate": "3/h"},
        }
    },
}
