""" "Customers who bought this also bought": worth a query, not worth a thread under load.

The view asks ``feature_enabled("recommendations")`` first: the feature is off
when an operator turns its switch off in the admin, and by itself while the
process sheds load (brownout), so that each request it still takes is cheaper.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count

from .models import Order, Product


def also_bought(product: Product, count: int = 4) -> list[dict[str, Any]]:
    """Products most often bought by the customers who bought ``product``."""
    buyers = Order.objects.filter(product=product, customer__isnull=False).values("customer")
    return list(
        Product.objects.filter(orders__customer__in=buyers)
        .exclude(pk=product.pk)
        .annotate(together=Count("orders"))
        .order_by("-together", "name")
        .values("slug", "name", "price_cents", "together")[:count]
    )
