"""DRF views throttled by rate-limit policies (only imported when DRF is installed)."""

from __future__ import annotations

from typing import Any

from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from django_stability.throttling import PolicyThrottle


class Reports(APIView):
    renderer_classes = [JSONRenderer]
    throttle_classes = [PolicyThrottle]
    throttle_policy = "drf-reports"
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    def get(self, request: Any) -> Response:
        return Response({"ok": True})


class Scoped(Reports):
    throttle_policy = None
    throttle_scope = "drf-scoped"
