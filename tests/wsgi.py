"""The WSGI application the server tests run under gunicorn."""

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
