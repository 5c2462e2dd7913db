"""The waiting room, in process: arrival order, the waiting page, forged and expired tickets."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.core import signing
from django.test import Client

from django_stability import waiting_room
from django_stability.concurrency import ConcurrencySpec
from django_stability.policies import registry

pytestmark = pytest.mark.urls("tests.shedding_site.urls")

ROOM = ConcurrencySpec(
    name="sale",
    url_names=("room",),
    waiting_room=True,
    limit=2,
    refresh=2,
    queue_timeout=30,
    visitor_timeout=60,
)
COOKIE = waiting_room.cookie_name(ROOM)


def place(response: Any) -> int:
    return int(response["Waiting-Room-Place"]) if response.status_code == 503 else 0


def test_ten_visitors_are_admitted_in_arrival_order() -> None:
    registry.register(ROOM)
    visitors = [Client(HTTP_ACCEPT="application/json") for _ in range(10)]
    first = [visitor.get("/room/") for visitor in visitors]
    assert [r.status_code for r in first] == [200] * 2 + [503] * 8
    assert [place(r) for r in first] == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert all(r["Retry-After"] == "2" for r in first[2:])
    assert json.loads(first[2].content)["type"].endswith("temporary-reduced-capacity")
    inside = [0, 1]
    order = [0, 1]
    while len(order) < 10:
        # The visitor in longest leaves; everyone waiting refreshes, the last arrived first.
        assert visitors[inside.pop(0)].get("/room/leave/").content == b"left"
        admitted_now = [
            i
            for i in reversed(range(10))
            if i not in order and visitors[i].get("/room/").status_code == 200
        ]
        assert len(admitted_now) == 1
        order += admitted_now
        inside += admitted_now
    assert order == list(range(10))


def test_browsers_get_a_waiting_page_that_refreshes_itself() -> None:
    registry.register(ROOM)
    for _ in range(2):
        assert Client().get("/room/").status_code == 200
    response = Client().get("/room/", HTTP_ACCEPT="text/html")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert b'<meta http-equiv="refresh" content="2">' in response.content
    assert b"You are number 1 in line" in response.content
    cookie = response.cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"


def test_an_admitted_visitor_keeps_the_place_and_a_fresh_ticket() -> None:
    registry.register(ROOM)
    visitor = Client()
    first = visitor.get("/room/")
    again = visitor.get("/room/")
    assert first.status_code == again.status_code == 200
    assert again.cookies[COOKIE].value  # re-signed on every visit (sliding expiry)
    assert waiting_room.status(ROOM).active == 1


def ticket_of(client: Client) -> str:
    value = client.cookies[COOKIE].value
    data = signing.loads(value, salt=f"{waiting_room.SALT}:sale")
    return str(data["t"])


def test_forged_and_expired_tickets_get_no_priority() -> None:
    registry.register(ROOM)
    for _ in range(2):
        Client().get("/room/")
    early = Client()
    assert place(early.get("/room/")) == 1
    for _ in range(3):
        Client().get("/room/")  # places 2, 3, 4
    stolen = ticket_of(early)

    # Forged: the first visitor's ticket id, signed with another key.
    forger = Client()
    forger.cookies[COOKIE] = signing.dumps(
        {"t": stolen}, key="not-the-secret", salt=f"{waiting_room.SALT}:sale"
    )
    assert place(forger.get("/room/")) == 5
    assert ticket_of(forger) != stolen  # given a ticket of its own, at the back

    # Altered: a valid cookie with one character changed.
    valid = early.cookies[COOKIE].value
    altered = Client()
    altered.cookies[COOKIE] = valid[:-1] + ("A" if valid[-1] != "A" else "B")
    assert place(altered.get("/room/")) == 6

    # Expired: a genuine signature, older than the room's timeouts.
    class SignedAnHourAgo(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - 3600)

    old = SignedAnHourAgo(salt=f"{waiting_room.SALT}:sale").sign_object({"t": stolen})
    late = Client()
    late.cookies[COOKIE] = old
    assert place(late.get("/room/")) == 7

    # The rightful holder still has place 1.
    assert place(early.get("/room/")) == 1


def test_release_without_a_ticket_does_nothing() -> None:
    registry.register(ROOM)
    assert Client().get("/room/leave/").content == b"not in"
