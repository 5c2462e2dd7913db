"""Charging an order at the payment gateway: the shop's integration point.

The gateway (``example_project.gateway``) can be made slow, failing or hung
at run time. Guarded, a call to it:

* waits at most ``timeout`` seconds (passed down to the HTTP client's read timeout);
* is one of at most ``max_concurrent`` calls waiting on the gateway (the
  bulkhead), so a hung gateway holds two threads, not all of them;
* is refused at once while the breaker is open (too many failures or slow calls);
* falls back, whatever went wrong, to accepting the order with its payment
  pending: the customer is told the charge will follow, and the shop keeps
  selling while the gateway is down.

``SHOP_PROTECTION=off`` (the drill's control run) calls the gateway the way
most code does: ``requests.post`` without a timeout.
"""

from __future__ import annotations

from typing import Any

import requests
from django.conf import settings

from django_stability import guard
from django_stability.outbound import session


class PaymentDeclined(Exception):
    """The gateway refused the card: an answer, not a failure of the gateway."""


def pending(order_id: int, amount_cents: int) -> dict[str, Any]:
    """The fallback: the order stands, its payment is taken later."""
    return {"status": "pending", "charge_id": ""}


payments = guard(
    "payments",
    timeout=1.5,
    fallback=pending,
    breaker={
        "failure_rate_threshold": 50,
        "slow_call_duration": 1.0,
        "slow_call_rate_threshold": 50,
        "window_size": 20,
        "minimum_calls": 4,
        "wait_in_open": 10,
        "ignore_exceptions": ("example_project.shop.payments.PaymentDeclined",),
    },
    bulkhead={"max_concurrent": 2, "max_wait": 0},
)

# Timeouts, the deadline and bounded DNS; the guard above is the only guard.
_http = session(per_host_guards=False)


@payments
def charge(order_id: int, amount_cents: int) -> dict[str, Any]:
    """Charge an order; the gateway's answer, or the fallback's."""
    response = _http.post(
        f"{settings.SHOP_GATEWAY_URL}/charge",
        json={"order": order_id, "amount_cents": amount_cents},
    )
    if response.status_code == 402:
        raise PaymentDeclined(order_id)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def charge_without_protection(order_id: int, amount_cents: int) -> dict[str, Any]:
    """The control run's call: no timeout, no bulkhead, no breaker, no fallback."""
    try:
        response = requests.post(
            f"{settings.SHOP_GATEWAY_URL}/charge",
            json={"order": order_id, "amount_cents": amount_cents},
        )
        response.raise_for_status()
    except requests.RequestException:
        return {"status": "failed", "charge_id": ""}
    result: dict[str, Any] = response.json()
    return result


def pay(order_id: int, amount_cents: int) -> dict[str, Any]:
    """Charge through the guard, or without protection in the drill's control run."""
    if settings.SHOP_PROTECTED:
        return charge(order_id, amount_cents)
    return charge_without_protection(order_id, amount_cents)
