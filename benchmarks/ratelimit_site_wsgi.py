"""The WSGI application of the rate-limit throughput benchmark."""

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
