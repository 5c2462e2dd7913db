"""WSGI entry of the gunicorn test of integration points."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration_settings")
application = get_wsgi_application()
