"""Work the shop does outside the request: the orders export, the nightly report, the newsletter.

* ``export_orders``: "download all my orders" is the innocent-looking request
  that holds a web thread for minutes. It is a background job: the request
  gets 202 and a status page, one job per customer at a time (a second click
  finds the first job), time limits, and a 503 when the queue is full.
* ``nightly_report``: a periodic task at midnight, jittered (see
  ``example_project.celery``), so that twenty servers do not all run it at
  00:00:00.
* ``send_newsletter``: the marketing blast, sent with ``spread()`` over a
  window and under a rate, not all at once.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Sum
from django.utils import timezone

from django_stability import background_job
from django_stability.jobs import RunningJob, spread

from .models import NewsletterDelivery, Order, Report

#: How long a row of the export takes beyond its query: a big export, made visible.
EXPORT_ROW_COST = 0.01


@background_job(
    "export-orders",
    jitter=2,
    soft_time_limit=120,
    time_limit=150,
    max_active_per_owner=1,
    max_queue_depth=50,
    retry_after=30,
)
def export_orders(job: RunningJob) -> None:
    """Every order of the job's owner, as CSV."""
    orders = Order.objects.filter(customer_id=job.owner_id).select_related("product")
    total = orders.count() or 1
    with job.result_file("orders.csv", "text/csv", encoding="utf-8") as out:
        out.write("order,date,product,quantity,amount,state\n")
        for done, order in enumerate(orders.iterator(), start=1):
            out.write(
                f"{order.pk},{order.created:%Y-%m-%d},{order.product.name},"
                f"{order.quantity},{order.amount},{order.state}\n"
            )
            time.sleep(EXPORT_ROW_COST)
            if done % 10 == 0:
                job.progress(done / total, f"{done} of {total} orders")


@shared_task(name="shop.nightly_report", ignore_result=True)
def nightly_report(planned_for: str | None = None) -> int:
    """Sum up the day's sales (every order, in this small shop) into a ``Report``."""
    # The heavy part of a real report, without burning this machine's CPU.
    time.sleep(settings.SHOP_REPORT_COST)
    totals = Order.objects.aggregate(revenue=Sum("amount_cents"))
    best = (
        Order.objects.values("product__name")
        .annotate(units=Sum("quantity"))
        .order_by("-units")
        .first()
    )
    report = Report.objects.create(
        planned_for=datetime.fromisoformat(planned_for) if planned_for else None,
        orders=Order.objects.count(),
        revenue_cents=totals["revenue"] or 0,
        best_seller=best["product__name"] if best else "",
    )
    return report.pk


@shared_task(name="shop.send_newsletter", ignore_result=True)
def send_newsletter(batch: str, email: str, planned_at: str) -> None:
    """ "Send" one newsletter e-mail: recorded, so the page can show when each went out."""
    NewsletterDelivery.objects.create(
        batch=batch, email=email, planned_at=datetime.fromisoformat(planned_at)
    )


def start_newsletter(over: float = 60.0, rate: str = "5/s") -> tuple[str, Any]:
    """Send the newsletter to every customer, spread over ``over`` seconds at most ``rate``."""
    batch = uuid.uuid4().hex[:8]
    now = timezone.now().isoformat()
    emails = (
        get_user_model().objects.exclude(email="").order_by("pk").values_list("email", flat=True)
    )
    result = spread(
        (
            send_newsletter.s(batch, email, now).set(queue=settings.CELERY_TASK_DEFAULT_QUEUE)
            for email in emails
        ),
        over=over,
        rate=rate,
    )
    return batch, result
