"""The example shop's pages. Each later part of django-stability adds one here."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from django_stability.store import get_store


def home(request: HttpRequest) -> HttpResponse:
    store = get_store()
    return render(
        request,
        "shop/home.html",
        {"mode": settings.DEMO_MODE, "store": store.kind},
    )
