"""The product list: an expensive query, cached.

The list ranks every product by what it sold, an aggregate over every order:
the kind of query that is fine once a minute and ruinous sixty-four times at
once. It is computed through ``cache.get_or_set``: on the stampede-protected
backend (the shop's ``CACHES``), one caller recomputes an expired list while
the others get the stale one; on a plain backend (the drill's control run),
every caller that finds it expired runs the query.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from django_stability import cached

from .models import Product

#: Keys under this prefix follow the "catalogue" cache policy (see settings.STABILITY).
CATALOGUE_KEY = "catalogue:products"
#: Seconds the list stays fresh (a cache policy set in the admin wins over it).
CATALOGUE_TTL = 30


class ComputeCounter:
    """How many times this process ran the expensive query (the drill reads it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def add(self) -> None:
        with self.lock:
            self.count += 1

    def reset(self) -> int:
        with self.lock:
            count, self.count = self.count, 0
        return count


computes = ComputeCounter()


def compute_catalogue() -> dict[str, Any]:
    """Every product with its units sold, best sellers first. Slow on purpose."""
    computes.add()
    started = time.monotonic()
    rows = list(
        Product.objects.annotate(
            sold=Coalesce(Sum("orders__quantity"), 0),
            buyers=Count("orders__customer", distinct=True),
        )
        .order_by("-sold", "name")
        .values("slug", "name", "category", "price_cents", "sold", "buyers")
    )
    # The slow part of a real query on a real table, without burning this machine's CPU.
    time.sleep(settings.SHOP_CATALOGUE_COST)
    return {
        "products": rows,
        "computed_at": timezone.now().isoformat(),
        "took": round(time.monotonic() - started, 3),
    }


def catalogue() -> dict[str, Any]:
    """The product list, from the cache (computed by one caller when it expires)."""
    value: dict[str, Any] = cache.get_or_set(CATALOGUE_KEY, compute_catalogue, CATALOGUE_TTL)
    return value


@cached("bestsellers", ttl=60)
def bestsellers(count: int = 4) -> list[dict[str, Any]]:
    """The home page's best sellers: a smaller aggregate, cached with ``@cached``."""
    return list(
        Product.objects.annotate(sold=Coalesce(Sum("orders__quantity"), 0))
        .order_by("-sold", "name")
        .values("slug", "name", "price_cents", "sold")[:count]
    )
