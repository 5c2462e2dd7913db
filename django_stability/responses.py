"""The one place that builds a refusal: 429 for rate limits, 503 for capacity.

JSON clients get an RFC 9457 ``application/problem+json`` body; browsers get the
``django_stability/refused.html`` template (override it in your project). Both
carry ``Retry-After`` in whole seconds, never earlier than the truth, and are
never cached.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus

from django.http import HttpRequest, HttpResponse
from django.template import TemplateDoesNotExist
from django.template.loader import render_to_string
from django.utils.html import escape

from .exceptions import StabilityError


def wants_html(request: HttpRequest) -> bool:
    """True for browsers (they ask for text/html); API clients get problem+json."""
    return "text/html" in request.headers.get("Accept", "")


def refusal(
    request: HttpRequest,
    error: StabilityError,
    *,
    headers: Mapping[str, str] | None = None,
) -> HttpResponse:
    """The response for a refused request, built from the exception that refused it."""
    status = error.status_code
    title = HTTPStatus(status).phrase
    response: HttpResponse
    if wants_html(request):
        context = {
            "status": status,
            "title": title,
            "message": error.message,
            "retry_after": error.retry_after_header,
            "policy": error.policy,
        }
        try:
            body: str = render_to_string("django_stability/refused.html", context, request=request)
        except TemplateDoesNotExist:
            body = (
                f"<!doctype html><title>{status} {title}</title><h1>{escape(title)}</h1>"
                f"<p>{escape(error.message)}</p>"
            )
        response = HttpResponse(body, status=status, content_type="text/html; charset=utf-8")
    else:
        problem: dict[str, object] = {
            "type": error.problem_type,
            "title": title,
            "status": status,
            "detail": error.message,
        }
        if error.policy:
            problem["policy"] = error.policy
        if error.retry_after is not None:
            problem["retry_after"] = int(error.retry_after_header or 1)
        response = HttpResponse(
            json.dumps(problem), status=status, content_type="application/problem+json"
        )
    if error.retry_after_header is not None:
        response["Retry-After"] = error.retry_after_header
    response["Cache-Control"] = "no-store"
    # Django logs every 4xx/5xx response on django.request (an error per 503,
    # a Sentry event each in many set-ups): a storm of refusals would become a
    # storm of log lines. Refusals are logged by their part, rate-limited.
    response._has_been_logged = True  # type: ignore[attr-defined]
    for name, value in {**error.headers, **(headers or {})}.items():
        response[name] = value
    return response
