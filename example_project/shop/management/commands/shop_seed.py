"""Seed the shop: products, customers, orders, and the policies an operator tunes.

Idempotent: products and customers are found by slug and username, orders are
added only to a shop that has none, and a policy row that exists (perhaps
edited in the admin since) is left as it is.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from django_stability.models import PROXIES

from ...models import Order, Product

ORIGINS = ["Ethiopia", "Colombia", "Kenya", "Guatemala", "Brazil", "Sumatra", "Rwanda", "Peru"]
ROASTS = ["light", "medium", "espresso"]
TEAS = ["Sencha", "Darjeeling", "Assam", "Oolong", "Earl Grey", "Rooibos", "Jasmine", "Matcha"]
GEAR = [
    ("Brewing gear", ["Pour-over dripper", "French press", "Moka pot", "AeroPress", "Cold brew jar",
                      "Gooseneck kettle", "Paper filters", "Milk frother"]),
    ("Grinders", ["Hand grinder", "Burr grinder", "Travel grinder", "Conical burr set"]),
    ("Mugs", ["Stoneware mug", "Double-wall glass", "Travel cup", "Espresso cups (set of 2)"]),
    ("Books", ["The World Atlas of Coffee", "The Tea Book", "Brewing at Home"]),
]  # fmt: skip

#: (kind, name, why): the policies seeded as admin rows. Their fields stay
#: empty, so the code and settings defaults apply until an operator changes one.
POLICIES: list[tuple[str, str, str]] = [
    ("ratelimit", "search-ip", "Search per address: one client cannot take every thread."),
    ("ratelimit", "search-user", "Search per signed-in customer, whatever their address."),
    ("ratelimit", "login-ip", "Sign-in per address: one address trying many usernames."),
    ("ratelimit", "login-username", "Sign-in per username: many addresses trying one account."),
    ("ratelimit", "admin-login", "The admin's sign-in (routed in settings)."),
    ("admission", "checkout", "Checkout is critical: admitted while everything else is shed."),
    ("admission", "sign-in", "Signing in comes before browsing."),
    ("admission", "search", "Search is shed first when the site is overloaded."),
    ("admission", "exports", "Starting an export can wait."),
    ("admission", "bots", "Crawlers are shed first."),
    ("feature", "recommendations", "Turned off by itself while the site sheds (brownout)."),
    ("guard", "payments", "The payment gateway: timeout, retries, fallback."),
    ("breaker", "payments", "Opens when the gateway fails or is slow on half the calls."),
    ("bulkhead", "payments", "At most two threads wait on the gateway."),
    ("cache", "catalogue", "The product list: an expensive aggregate over every order."),
    ("cache", "bestsellers", "The home page's best sellers."),
    ("job", "export-orders", "Orders export: one per customer, a bounded queue."),
]


class Command(BaseCommand):
    help = "Seed the example shop's products, customers, orders and policies (idempotent)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--orders", type=int, default=3000, help="orders of a new shop")
        parser.add_argument("--customers", type=int, default=40)

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        rng = random.Random(7)  # the same shop on every machine
        products = self.products(rng)
        customers = self.customers(options["customers"])
        added = 0
        if not Order.objects.exists():
            added = self.orders(rng, products, customers, options["orders"])
        policies = self.policies()
        self.stdout.write(
            f"shop seeded: {len(products)} products, {len(customers)} customers, "
            f"{added} orders added, {policies} policies added"
        )

    def products(self, rng: random.Random) -> list[Product]:
        wanted: list[tuple[str, str, str, int]] = []
        for origin in ORIGINS:
            for roast in ROASTS:
                name = f"{origin} {roast} roast"
                text = f"Single-origin beans from {origin}, {roast} roast, 250 g."
                wanted.append((name, "Coffee", text, rng.randrange(890, 1890, 10)))
        for tea in TEAS:
            wanted.append(
                (f"{tea} tea", "Tea", f"Loose-leaf {tea}, 100 g.", rng.randrange(590, 1490, 10))
            )
        for category, names in GEAR:
            for name in names:
                wanted.append(
                    (
                        name,
                        category,
                        f"{name}, for the coffee corner.",
                        rng.randrange(990, 9990, 10),
                    )
                )
        found = []
        for name, category, text, price in wanted:
            product, _ = Product.objects.get_or_create(
                slug=slugify(name),
                defaults={
                    "name": name,
                    "category": category,
                    "description": text,
                    "price_cents": price,
                },
            )
            found.append(product)
        return found

    def customers(self, count: int) -> list[Any]:
        users = get_user_model()
        found = []
        for n in range(1, count + 1):
            user, created = users.objects.get_or_create(
                username=f"customer{n:02d}", defaults={"email": f"customer{n:02d}@example.com"}
            )
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            found.append(user)
        return found

    def orders(
        self, rng: random.Random, products: list[Product], customers: list[Any], count: int
    ) -> int:
        now = timezone.now()
        # A few products sell far more than the rest, as in any shop.
        weights = [1 / (rank + 1) for rank in range(len(products))]
        rows = []
        for _ in range(count):
            product = rng.choices(products, weights)[0]
            quantity = rng.choice((1, 1, 1, 2, 3))
            customer = rng.choice(customers) if rng.random() < 0.85 else None
            rows.append(
                Order(
                    customer=customer,
                    email=customer.email
                    if customer
                    else f"guest{rng.randrange(10**6)}@example.com",
                    product=product,
                    quantity=quantity,
                    amount_cents=product.price_cents * quantity,
                    state=Order.PAID,
                    charge_id=f"ch_seed{rng.randrange(10**9)}",
                )
            )
        created = Order.objects.bulk_create(rows, batch_size=500)
        # auto_now_add stamps them all now; spread them over the last 90 days.
        for order in created:
            order.created = now - timedelta(seconds=rng.randrange(90 * 24 * 3600))
        Order.objects.bulk_update(created, ["created"], batch_size=500)
        return len(created)

    def policies(self) -> int:
        added = 0
        for kind, name, why in POLICIES:
            _, created = PROXIES[kind].objects.get_or_create(
                name=name, defaults={"config": {}, "description": why}
            )
            added += created
        return added
