"""Settings of the gunicorn site the Stability page's multi-process tests start.

The test settings (the run's test database and key prefix come from the
environment, as for every child process), with this site's URLs and what the
test passes in ``DASHBOARD_SITE_STABILITY`` (JSON merged into ``STABILITY``).
"""

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import STABILITY

ROOT_URLCONF = "tests.dashboard_urls"
STABILITY = {**STABILITY, **json.loads(os.environ.get("DASHBOARD_SITE_STABILITY", "{}"))}
