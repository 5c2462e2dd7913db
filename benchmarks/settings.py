"""Settings for `make bench`: the test settings, on the shared Redis, with a bench prefix."""

from tests.settings import *  # noqa: F403
from tests.settings import STABILITY

STABILITY = {**STABILITY, "STORE_KEY_PREFIX": "stabbench"}
