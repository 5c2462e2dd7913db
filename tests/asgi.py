"""The ASGI application the server tests run under uvicorn."""

from django.core.asgi import get_asgi_application

application = get_asgi_application()
