"""Create (or reset) the demo admin user, give it a few orders, and print its login."""

from __future__ import annotations

import random
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from ...models import Order, Product


class Command(BaseCommand):
    help = "Create or reset the demo admin user with a fresh password, and print the login."

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        user, _ = user_model.objects.get_or_create(username="admin")
        password = secrets.token_urlsafe(9)
        user.is_staff = True
        user.is_superuser = True
        user.email = user.email or "admin@example.com"
        user.set_password(password)
        user.save()
        products = list(Product.objects.order_by("pk")[:20])
        if products and not Order.objects.filter(customer=user).exists():
            # Something to export from "My orders".
            rng = random.Random(11)
            Order.objects.bulk_create(
                Order(
                    customer=user,
                    email=user.email,
                    product=product,
                    quantity=1,
                    amount_cents=product.price_cents,
                    state=Order.PAID,
                )
                for product in rng.choices(products, k=40)
            )
        self.stdout.write(f"admin login: admin / {password}")
