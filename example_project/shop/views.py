"""The shop's pages. Each one walks into an anti-pattern of *Release It!* and says which
defence of django-stability holds it (the ``lesson`` in its context).
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import requests
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.db.models import Count, Q
from django.db.models.functions import TruncSecond
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from django_stability import StabilityError, feature_enabled, rate_limit
from django_stability.breaker import get_breaker
from django_stability.jobs import JITTER_HEADER
from django_stability.models import Job
from django_stability.pagination import page_guard
from django_stability.responses import refusal
from django_stability.store import get_store

from . import catalogue, jobs, payments, recommendations
from .models import NewsletterDelivery, Order, Product, Report

#: Each page's anti-pattern and defence, shown in a box on the page.
LESSONS: dict[str, dict[str, str]] = {
    "home": {
        "antipattern": "all eight, one page each",
        "defence": "StabilityMiddleware first in MIDDLEWARE, policies tuned in the admin",
        "doc": "index.md",
    },
    "products": {
        "antipattern": "Self-denial attacks: a cache stampede",
        "defence": "the stampede-protected cache: one recompute per expiry, stale values "
        "served meanwhile, TTL jitter",
        "doc": "anti-patterns/self-denial.md",
    },
    "product": {
        "antipattern": "Blocked threads and unbalanced capacities: optional work under load",
        "defence": 'brownout: feature_enabled("recommendations") is off while the process sheds',
        "doc": "parts/shedding.md",
    },
    "search": {
        "antipattern": "Users: scrapers, refresh storms, requests for everything",
        "defence": "rate limits per IP and per user, limit/offset guards, search shed first "
        "under overload",
        "doc": "anti-patterns/users.md",
    },
    "login": {
        "antipattern": "Users: credential stuffing",
        "defence": "rate limits per IP and per username, refused (closed) while Redis is down",
        "doc": "anti-patterns/users.md",
    },
    "checkout": {
        "antipattern": "Integration points and cascading failures: the payment gateway",
        "defence": "guard(): timeout, bulkhead, circuit breaker, fallback; checkout admitted "
        "first (critical)",
        "doc": "anti-patterns/integration-points.md",
    },
    "orders": {
        "antipattern": "Users and unbalanced capacities: the export of everything",
        "defence": "a background job: 202 Accepted, one per customer, time limits, a bounded queue",
        "doc": "parts/jobs.md",
    },
    "ops": {
        "antipattern": "Self-denial attacks: midnight cron, the marketing blast",
        "defence": "jittered periodic tasks and spread() fan-out",
        "doc": "parts/schedules.md",
    },
}


def _page(request: HttpRequest, template: str, lesson: str, **context: Any) -> HttpResponse:
    return render(request, template, {"lesson": LESSONS[lesson], **context})


def home(request: HttpRequest) -> HttpResponse:
    return _page(
        request,
        "shop/home.html",
        "home",
        store=get_store().kind,
        bestsellers=catalogue.bestsellers(),
        pages=[(name, LESSONS[name]) for name in LESSONS if name != "home"],
    )


def product_list(request: HttpRequest) -> HttpResponse:
    started = time.monotonic()
    listing = catalogue.catalogue()
    return _page(
        request,
        "shop/products.html",
        "products",
        listing=listing,
        served_in=round((time.monotonic() - started) * 1000),
    )


def product_detail(request: HttpRequest, slug: str) -> HttpResponse:
    product = get_object_or_404(Product, slug=slug)
    show = feature_enabled("recommendations")
    return _page(
        request,
        "shop/product.html",
        "product",
        product=product,
        recommendations_on=show,
        recommended=recommendations.also_bought(product) if show else [],
    )


@rate_limit("search-ip", rate="60/m", burst=20, key="ip")
@rate_limit("search-user", rate="120/m", burst=30, key="user_or_ip")
@page_guard(default_limit=20, max_limit=50, max_offset=200)
def search(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()[:100]
    window = request.page_window  # type: ignore[attr-defined]
    results: list[Product] = []
    if query:
        matching = Product.objects.filter(
            Q(name__icontains=query) | Q(description__icontains=query) | Q(category__iexact=query)
        ).order_by("name", "pk")
        results = list(window.apply(matching))
        # What a search engine or an unindexed LIKE costs; see SHOP_SEARCH_COST.
        time.sleep(settings.SHOP_SEARCH_COST)
    return _page(
        request,
        "shop/search.html",
        "search",
        query=query,
        results=results,
        window=window,
        next_offset=window.offset + window.limit if len(results) == window.limit else None,
    )


class LoginView(auth_views.LoginView):
    template_name = "shop/login.html"
    extra_context = {"lesson": LESSONS["login"]}


# Credential stuffing comes from many addresses a few tries each (per username
# stops it) or from one address trying many names (per IP stops it). Both refuse
# while Redis is unreachable: per-process limits would multiply the attempts.
login = rate_limit("login-ip", rate="10/m", key="ip", methods=["POST"], on_store_failure="closed")(
    rate_limit(
        "login-username",
        rate="5/m",
        key="post:username",
        methods=["POST"],
        on_store_failure="closed",
    )(LoginView.as_view())
)


class CheckoutForm(forms.Form):
    email = forms.EmailField()
    quantity = forms.IntegerField(min_value=1, max_value=10, initial=1)


def checkout(request: HttpRequest, slug: str) -> HttpResponse:
    product = get_object_or_404(Product, slug=slug)
    form = CheckoutForm(request.POST or None, initial={"email": _email_of(request)})
    if request.method == "POST" and form.is_valid():
        quantity = form.cleaned_data["quantity"]
        order = Order.objects.create(
            customer=request.user if request.user.is_authenticated else None,
            email=form.cleaned_data["email"],
            product=product,
            quantity=quantity,
            amount_cents=product.price_cents * quantity,
        )
        started = time.monotonic()
        result = payments.pay(order.pk, order.amount_cents)
        order.state = {"paid": Order.PAID, "pending": Order.PENDING}.get(
            result.get("status", ""), Order.DECLINED
        )
        order.charge_id = result.get("charge_id", "")
        order.save(update_fields=["state", "charge_id"])
        token = signing.dumps(order.pk, salt="shop.order")
        response = redirect("shop:order", token=token)
        response["X-Payment-Seconds"] = f"{time.monotonic() - started:.3f}"
        response["X-Order-State"] = order.state
        return response
    return _page(request, "shop/checkout.html", "checkout", product=product, form=form)


def _email_of(request: HttpRequest) -> str:
    return str(getattr(request.user, "email", "") or "")


def order_done(request: HttpRequest, token: str) -> HttpResponse:
    try:
        pk = signing.loads(token, salt="shop.order", max_age=7 * 24 * 3600)
    except signing.BadSignature:
        raise Http404("No such order") from None
    order = get_object_or_404(Order.objects.select_related("product"), pk=pk)
    return _page(request, "shop/order.html", "checkout", order=order)


@login_required
def orders(request: HttpRequest) -> HttpResponse:
    mine = Order.objects.filter(customer=request.user).select_related("product")
    exports = Job.objects.filter(owner=request.user, name="export-orders")[:5]
    return _page(
        request,
        "shop/orders.html",
        "orders",
        orders=mine[:50],
        order_count=mine.count(),
        exports=exports,
    )


@login_required
@require_POST
def export_orders(request: HttpRequest) -> HttpResponseBase:
    if "application/json" in request.headers.get("Accept", ""):
        return jobs.export_orders.accept(request)  # 202 + Location, for API clients
    try:
        submission = jobs.export_orders.submit(request.user)
    except StabilityError as refused:
        return refusal(request, refused)  # 429 (one at a time) or 503 (queue full)
    if not submission.created:
        messages.info(request, "Your export is already on its way: here it is.")
    return redirect("shop:export-status", job_id=submission.job.id)


@login_required
def export_status(request: HttpRequest, job_id: UUID) -> HttpResponse:
    job = Job.objects.filter(pk=job_id, owner=request.user).first()
    if job is None:
        raise Http404("No such export")
    return _page(
        request,
        "shop/export.html",
        "orders",
        job=job,
        status_url=reverse("django_stability:job-status", args=[job.id]),
        download_url=reverse("django_stability:job-download", args=[job.id]),
    )


# Operations: what an operator (or a curious visitor of the demo) changes at run time.

GATEWAY_PRESETS = {
    "healthy": {"latency": 0.05, "failure_rate": 0},
    "slow": {"latency": 3, "failure_rate": 0},
    "failing": {"latency": 0.05, "failure_rate": 0.5},
    "down": {"latency": 0.05, "failure_rate": 1},
    "hung": {"hang": True, "failure_rate": 0},
}


def _gateway(method: str, path: str, data: dict[str, Any] | None = None) -> dict[str, Any] | None:
    try:
        response = requests.request(
            method, f"{settings.SHOP_GATEWAY_URL}{path}", json=data, timeout=1
        )
        result: dict[str, Any] = response.json()
    except (requests.RequestException, ValueError):
        return None
    return result


@staff_member_required
def ops(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        action = request.POST.get("action", "")
        if action == "gateway":
            preset = GATEWAY_PRESETS.get(request.POST.get("preset", ""))
            values = preset or {
                "latency": request.POST.get("latency"),
                "failure_rate": request.POST.get("failure_rate"),
            }
            answer = _gateway("POST", "/control", values)
            if answer is None or "error" in answer:
                messages.error(request, f"The gateway refused: {answer or 'unreachable'}")
            else:
                messages.success(request, "The gateway now behaves as asked.")
        elif action == "report":
            jobs.nightly_report.apply_async(
                kwargs={"planned_for": timezone.now().isoformat()},
                headers={JITTER_HEADER: 30},
            )
            messages.success(request, "The nightly report is queued; it starts within 30 s.")
        elif action == "newsletter":
            batch, result = jobs.start_newsletter(over=60, rate="5/s")
            messages.success(
                request,
                f"Newsletter {batch}: {result.sent + result.relayed} e-mails spread over "
                f"{result.window:.0f} s.",
            )
        return redirect("shop:ops")
    latest = NewsletterDelivery.objects.order_by("-sent_at").first()
    timeline: list[dict[str, Any]] = []
    if latest is not None:
        timeline = list(
            NewsletterDelivery.objects.filter(batch=latest.batch)
            .annotate(second=TruncSecond("sent_at"))
            .values("second")
            .annotate(sent=Count("pk"))
            .order_by("second")
        )
    breaker = get_breaker("payments")
    return _page(
        request,
        "shop/ops.html",
        "ops",
        gateway=_gateway("GET", "/control"),
        gateway_url=settings.SHOP_GATEWAY_URL,
        presets=list(GATEWAY_PRESETS),
        breaker_state=breaker.state,
        recommendations_on=feature_enabled("recommendations"),
        reports=Report.objects.all()[:5],
        batch=latest.batch if latest else "",
        timeline=timeline,
        most_per_second=max((row["sent"] for row in timeline), default=0),
    )
