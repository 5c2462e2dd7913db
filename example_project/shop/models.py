"""The shop's data: products, orders, reports and newsletter deliveries.

Plain models, as a small shop has them; what the stability parts protect is
the way they are read (an expensive catalogue query, searches, exports) and
the calls made around them (the payment gateway).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Product(models.Model):
    """Something the shop sells."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=100, db_index=True)
    price_cents = models.PositiveIntegerField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    @property
    def price(self) -> str:
        return f"{self.price_cents / 100:.2f}"


class Order(models.Model):
    """A customer's order of one product; paid through the payment gateway."""

    PAID = "paid"
    PENDING = "pending"
    DECLINED = "declined"
    STATES = ((PAID, "paid"), (PENDING, "payment pending"), (DECLINED, "declined"))

    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    email = models.EmailField()
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="orders")
    quantity = models.PositiveIntegerField(default=1)
    amount_cents = models.PositiveIntegerField()
    state = models.CharField(max_length=10, choices=STATES, default=PENDING)
    charge_id = models.CharField(max_length=100, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ("-created", "-pk")

    def __str__(self) -> str:
        return f"order {self.pk} ({self.state})"

    @property
    def amount(self) -> str:
        return f"{self.amount_cents / 100:.2f}"


class Report(models.Model):
    """The nightly sales report, written by a jittered periodic task."""

    created = models.DateTimeField(auto_now_add=True)
    planned_for = models.DateTimeField(null=True, blank=True)
    orders = models.PositiveIntegerField()
    revenue_cents = models.PositiveBigIntegerField()
    best_seller = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ("-created",)

    def __str__(self) -> str:
        return f"report of {self.created:%Y-%m-%d %H:%M:%S}"


class NewsletterDelivery(models.Model):
    """One newsletter e-mail "sent" (recorded, not sent) to one customer, by a spread batch."""

    batch = models.CharField(max_length=40, db_index=True)
    email = models.EmailField()
    planned_at = models.DateTimeField()
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-sent_at",)

    def __str__(self) -> str:
        return f"{self.email} ({self.batch})"
