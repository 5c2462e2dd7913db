"""User guards: limit clamped, deep offsets refused toward cursors, cursor pages, body size."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User

from django_stability.exceptions import PaginationRefused
from django_stability.pagination import cursor_page


@pytest.mark.parametrize(
    ("query", "status", "answer"),
    [
        ("", 200, {"limit": 10, "offset": 0}),
        ("?limit=5&offset=20", 200, {"limit": 5, "offset": 20}),
        ("?limit=1000000", 200, {"limit": 50, "offset": 0}),  # clamped, not refused
        ("?offset=100", 200, {"limit": 10, "offset": 100}),
        ("?offset=101", 400, None),
        ("?offset=99999999999999999999", 400, None),
        ("?limit=-1", 400, None),
        ("?limit=ten", 400, None),
    ],
)
def test_page_guard(client: Any, query: str, status: int, answer: Any) -> None:
    response = client.get(f"/rl/items/{query}", HTTP_ACCEPT="application/json")
    assert response.status_code == status
    if answer is not None:
        assert response.json() == answer
    else:
        assert response["Content-Type"] == "application/problem+json"


def test_a_deep_offset_points_to_cursor_pagination(client: Any) -> None:
    response = client.get("/rl/items/?offset=5000", HTTP_ACCEPT="application/json")
    body = json.loads(response.content)
    assert body["status"] == 400
    assert "at most 100" in body["detail"] and "cursor" in body["detail"]


async def test_page_guard_on_an_async_view(async_client: Any) -> None:
    assert (await async_client.get("/rl/items-async/?offset=10")).status_code == 200
    assert (await async_client.get("/rl/items-async/?offset=11")).status_code == 400


@pytest.mark.django_db
def test_cursor_pages_walk_every_row_once() -> None:
    User.objects.bulk_create(
        [User(username=f"user{i:02d}", last_name=str(i % 3)) for i in range(25)]
    )
    ordering = ("-last_name", "pk")
    seen: list[int] = []
    cursor = None
    sizes = []
    while True:
        page = cursor_page(User.objects.all(), ordering=ordering, cursor=cursor, limit=10)
        sizes.append(len(page.items))
        seen += [user.pk for user in page.items]
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert sizes == [10, 10, 5]
    expected = list(User.objects.order_by(*ordering).values_list("pk", flat=True))
    assert seen == expected


@pytest.mark.django_db
def test_a_tampered_or_foreign_cursor_is_refused() -> None:
    User.objects.bulk_create([User(username=f"u{i}") for i in range(5)])
    page = cursor_page(User.objects.all(), ordering=("pk",), limit=2)
    assert page.next_cursor
    for bad in [page.next_cursor[:-2] + "xx", "garbage", "e30:1:abc"]:
        with pytest.raises(PaginationRefused):
            cursor_page(User.objects.all(), ordering=("pk",), cursor=bad, limit=2)
    with pytest.raises(PaginationRefused):  # a cursor of another ordering
        cursor_page(User.objects.all(), ordering=("username", "pk"), cursor=page.next_cursor)


def test_an_ordering_without_a_unique_last_field_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unique"):
        cursor_page(User.objects.all(), ordering=("last_name",))


def test_max_body_size(client: Any) -> None:
    small = client.post("/rl/upload/", data=b"x" * 100, content_type="application/octet-stream")
    assert small.status_code == 200 and small.content == b"got 100"
    big = client.post(
        "/rl/upload/",
        data=b"x" * 101,
        content_type="application/octet-stream",
        HTTP_ACCEPT="application/json",
    )
    assert big.status_code == 413
    assert "at most 100 bytes" in json.loads(big.content)["detail"]
    lying = client.post("/rl/upload/", data=b"", content_type="text/plain", CONTENT_LENGTH="lots")
    assert lying.status_code == 413


async def test_max_body_size_async(async_client: Any) -> None:
    big = await async_client.post(
        "/rl/upload-async/", data=b"x" * 5000, content_type="application/octet-stream"
    )
    assert big.status_code == 413
