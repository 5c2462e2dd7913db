"""What every page shows: the mode the shop runs in, and whether it is protected."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest


def shop(request: HttpRequest) -> dict[str, Any]:
    redis_at = urlsplit(settings.REDIS_URL).netloc if settings.REDIS_URL else ""
    return {
        "demo_mode": settings.DEMO_MODE,
        "redis_at": redis_at,
        "protected": settings.SHOP_PROTECTED,
    }
