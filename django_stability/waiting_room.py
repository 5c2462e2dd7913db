"""The waiting room: when a route is full, visitors wait in line and come in in arrival order.

For the book's marketing events (a sale at nine, a newsletter to a million
addresses): rather than serve everyone slowly or refuse at random, a route
with a waiting room (a concurrency limit with ``waiting_room`` on) admits up to
``limit`` visitors at once. Others get a page that refreshes itself every
``refresh`` seconds and tells them their place in line; API clients get a 503
with ``Retry-After``. As places free, visitors come in in the order they
arrived.

- A visitor is known by a **ticket**: a random id in a cookie signed with the
  project's ``SECRET_KEY`` (``django.core.signing``, salted per room). A
  forged or altered cookie fails the signature; a cookie older than the
  room's timeouts has expired. Either way it counts as no ticket: the visitor
  joins at the back, and gains nothing.
- The **line** is kept in the shared store, in arrival order on the Redis
  server's clock, so every process and server agrees on it.
- A waiting visitor who stops refreshing for ``queue_timeout`` seconds loses
  the place; an admitted visitor keeps the place while they make requests,
  and frees it ``visitor_timeout`` seconds after the last one (or at once, by
  ``release()``, e.g. after checkout).

Each visit is one store round trip.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from django.core import signing
from django.http import HttpRequest, HttpResponseBase

from . import responses
from .exceptions import Overloaded, StabilityError, StoreUnavailable
from .shedding import report_shed
from .store import QueueResult, get_store

if TYPE_CHECKING:
    from .concurrency import ConcurrencySpec

SALT = "django_stability.waiting_room"


def room_key(spec: ConcurrencySpec) -> str:
    """The store key of the room (its admitted visitors are leases under it)."""
    return f"waiting_room:{spec.name}"


def cookie_name(spec: ConcurrencySpec) -> str:
    return "stability_wr_" + re.sub(r"[^A-Za-z0-9_]", "_", spec.name)


def max_age(spec: ConcurrencySpec) -> float:
    """How long a ticket's signature stays valid without being renewed."""
    return max(spec.queue_timeout, spec.visitor_timeout)


def read_ticket(request: HttpRequest, spec: ConcurrencySpec) -> str | None:
    """The visitor's ticket id, or None when absent, forged, altered or expired."""
    raw = request.COOKIES.get(cookie_name(spec))
    if not raw:
        return None
    try:
        age = timedelta(seconds=max_age(spec))
        data = signing.loads(raw, salt=f"{SALT}:{spec.name}", max_age=age)
    except signing.BadSignature:  # SignatureExpired is a BadSignature too
        return None
    ticket = data.get("t") if isinstance(data, dict) else None
    return ticket if isinstance(ticket, str) and re.fullmatch(r"[0-9a-f]{32}", ticket) else None


def sign_ticket(spec: ConcurrencySpec, ticket: str) -> str:
    """The cookie value for ``ticket`` in the room of ``spec``, signed and timestamped now."""
    return signing.dumps({"t": ticket}, salt=f"{SALT}:{spec.name}", compress=False)


def issue(
    response: HttpResponseBase, request: HttpRequest, spec: ConcurrencySpec, ticket: str
) -> None:
    """Set (or refresh) the ticket cookie on ``response``."""
    response.set_cookie(
        cookie_name(spec),
        sign_ticket(spec, ticket),
        max_age=int(max_age(spec)) + 1,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure(),
    )


@dataclass(frozen=True)
class Visit:
    """One visit: the ticket (new if the visitor had none valid) and the store's answer."""

    ticket: str
    result: QueueResult
    error: StabilityError | None

    @property
    def admitted(self) -> bool:
        return self.error is None


def visit(request: HttpRequest, spec: ConcurrencySpec) -> Visit:
    """Come to the room: admitted, or given a place in line."""
    ticket = read_ticket(request, spec) or uuid.uuid4().hex
    result = get_store().wait_in_line(
        room_key(spec), ticket, spec.limit, spec.visitor_timeout, spec.queue_timeout
    )
    error: StabilityError | None = None
    if result.degraded and spec.on_store_failure == "closed":
        error = StoreUnavailable(policy=spec.name, retry_after=spec.refresh)
    elif not result.admitted:
        error = Overloaded(
            f"We are busy and let visitors in in the order they arrived. You are number "
            f"{result.place} in line; this page refreshes by itself, please keep it open.",
            policy=spec.name,
            retry_after=spec.refresh,
            headers={"Waiting-Room-Place": str(result.place)},
        )
    return Visit(ticket, result, error)


def refusal(request: HttpRequest, spec: ConcurrencySpec, visit: Visit) -> HttpResponseBase:
    """The waiting page (browsers) or the 503 (API clients), with the ticket cookie."""
    assert visit.error is not None
    response = responses.refusal(request, visit.error)
    issue(response, request, spec, visit.ticket)
    return response


def report(request: HttpRequest, spec: ConcurrencySpec, visit: Visit, *, shadow: bool) -> None:
    report_shed(
        request,
        reason="store_unavailable" if visit.result.degraded else "waiting_room",
        priority=getattr(request, "stability_priority", None),
        policy=spec.name,
        retry_after=spec.refresh,
        shadow=shadow,
        place=visit.result.place,
        waiting=visit.result.waiting,
        limit=spec.limit,
    )


def release(request: HttpRequest, name: str) -> bool:
    """Free the visitor's place in the room ``name`` now (e.g. once the order is placed)."""
    from .concurrency import policy

    spec = policy(name)
    ticket = read_ticket(request, spec)
    return bool(ticket) and get_store().release_lease(room_key(spec), ticket or "")


def status(spec: ConcurrencySpec) -> QueueResult:
    """How many visitors are in and how many wait, without joining."""
    return get_store().wait_in_line(
        room_key(spec), "", spec.limit, spec.visitor_timeout, spec.queue_timeout
    )
