"""Under real servers: async views behave as sync ones (uvicorn), and sync under gunicorn."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.servers import gunicorn, uvicorn

pytestmark = pytest.mark.slow

SETTINGS = "tests.ratelimit_server_settings"


def run(url: str, path: str, n: int = 5) -> list[tuple[int, str | None, str | None]]:
    with httpx.Client(base_url=url, timeout=5) as client:
        answers = []
        for _ in range(n):
            response = client.get(path, headers={"Accept": "application/json"})
            answers.append(
                (
                    response.status_code,
                    response.headers.get("Retry-After"),
                    (response.headers.get("RateLimit") or "").split(";")[1:2][0]
                    if response.headers.get("RateLimit")
                    else None,
                )
            )
        return answers


EXPECTED = [
    (200, None, "r=2"),
    (200, None, "r=1"),
    (200, None, "r=0"),
    (429, "1200", "r=0"),
    (429, "1200", "r=0"),
]


def normalised(
    answers: list[tuple[int, str | None, str | None]],
) -> list[tuple[int, str | None, str | None]]:
    # Retry-After counts down with the wall clock; 1199 and 1200 are the same answer.
    return [(s, "1200" if r in {"1199", "1200"} else r, h) for s, r, h in answers]


def test_async_views_behave_as_sync_ones_under_uvicorn() -> None:
    with uvicorn(SETTINGS) as url:
        sync_decorated = run(url, "/rl/decorated/")
        async_decorated = run(url, "/rl/decorated-async/")
        sync_routed = run(url, "/rl/plain/")
        async_routed = run(url, "/rl/plain-async/")

        async def concurrent() -> list[int]:
            # Many at once: the decisions run off the event loop, and none is a 500.
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                responses = await asyncio.gather(
                    *[client.get("/rl/decorated-async/") for _ in range(40)]
                )
            return [r.status_code for r in responses]

        burst = asyncio.run(concurrent())
    assert normalised(sync_decorated) == normalised(async_decorated) == EXPECTED
    assert normalised(sync_routed) == normalised(async_routed) == EXPECTED
    assert set(burst) == {429}


def test_sync_views_under_gunicorn_share_one_limit_across_workers() -> None:
    with gunicorn(SETTINGS, workers=2, threads=4) as url:
        # A new connection each time, so that both workers take requests.
        statuses = [httpx.get(f"{url}/rl/plain/", timeout=5).status_code for _ in range(12)]
    assert statuses.count(200) == 3 and statuses.count(429) == 9
