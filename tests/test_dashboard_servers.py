"""The status and the metrics of a real multi-process site: gunicorn with two workers.

Each worker counts its own events and has its own breakers; whichever worker
answers, the JSON status (through the reports in the store) and the metrics
(through prometheus_client's multiprocess mode) show the sum of both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import Server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TOKEN = "status-token-for-the-multi-process-test"
METRICS_TOKEN = "metrics-token-for-the-multi-process-test"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
#: Generous: two gunicorn workers on a shared, loaded 2-core machine.
SETTLE = 20.0


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Server]:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    stability = {
        "DASHBOARD_REPORT_INTERVAL": 0.3,
        "DASHBOARD_STATUS_TOKEN": TOKEN,
        "METRICS_TOKEN": METRICS_TOKEN,
    }
    server = Server(
        settings_module="tests.dashboard_settings",
        wsgi="tests.wsgi:application",
        ready_path="/stability/health/live/",
        workers=2,
        threads=1,
        env={
            "DASHBOARD_SITE_STABILITY": json.dumps(stability),
            "PROMETHEUS_MULTIPROC_DIR": str(directory),
            # A worker busy with one connection leaves the next ones to the other.
            "GUNICORN_CMD_ARGS": "--worker-connections 1",
        },
    )
    with server:
        yield server


def get_json(server: Server, path: str, headers: dict[str, str] | None = None) -> Any:
    status, _, body = server.get(path, headers)
    assert status == 200, (path, status, body[:500])
    return json.loads(body)


def both_workers(server: Server, path: str) -> set[int]:
    """Call ``path`` from several threads until two worker pids answered (bounded)."""
    seen: set[int] = set()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(20):
            seen |= set(pool.map(lambda _: get_json(server, path)["pid"], range(8)))
            if len(seen) >= 2:
                return seen
    raise AssertionError(f"only worker(s) {seen} answered")


def eventually(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + SETTLE
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: still {last!r} after {SETTLE} s")


def metric(text: str, family: str, **labels: str) -> float:
    total = 0.0
    for found in text_string_to_metric_families(text):
        if found.name != family:
            continue
        for sample in found.samples:
            if sample.name.endswith("_created"):
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_status_and_metrics_sum_every_worker(site: Server) -> None:
    pids = both_workers(site, "/ops/pid/")
    assert len(pids) == 2

    # Refusals spread over both workers; the limit is shared through Redis.
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: site.get("/ops/limited/")[0], range(24)))
    assert statuses.count(200) == 3
    refused = statuses.count(429)
    assert refused == 21

    tripped = get_json(site, "/ops/trip/")["pid"]

    def status_settled() -> Any:
        data = get_json(site, "/stability/status/", AUTH)
        limited = next(r for r in data["ratelimits"] if r["name"] == "ops-limited")
        breaker = next(r for r in data["breakers"] if r["name"] == "ops-dependency")
        ok = (
            len(data["processes"]) == 2
            and limited["refusals"] == refused
            and breaker["processes"] == {"open": 1, "closed": 1}
        )
        return data if ok else None

    data = eventually(status_settled, "the JSON status of both workers")
    assert {row["pid"] for row in data["processes"]} == pids
    breaker = next(r for r in data["breakers"] if r["name"] == "ops-dependency")
    assert breaker["state"] == "open"  # open somewhere: the page shows the worst
    limited = next(r for r in data["ratelimits"] if r["name"] == "ops-limited")
    assert limited["decisions"] == 24
    assert limited["limited_count"] == 1  # this client's address, for the rest of the hour
    assert limited["limited"][0]["retry_in"] > 1000  # 3/h: the next unit in 20 minutes

    def metrics_settled() -> Any:
        status, _, body = site.get("/stability/metrics/", METRICS_AUTH)
        assert status == 200
        text = body.decode()
        counted = metric(
            text, "django_stability_rate_limit_refusals", policy="ops-limited", shadow="false"
        )
        return text if counted == refused else None

    eventually(metrics_settled, "the refusals in the metrics")
    # Whichever worker answers the scrape, it reports the sum of both.
    for _ in range(6):
        status, _, body = site.get("/stability/metrics/", METRICS_AUTH)
        assert status == 200
        text = body.decode()
        assert (
            metric(
                text, "django_stability_rate_limit_refusals", policy="ops-limited", shadow="false"
            )
            == refused
        )
        # One process has the breaker open, the other closed (livesum gauges).
        assert (
            metric(text, "django_stability_breaker_state", breaker="ops-dependency", state="open")
            == 1
        )
        assert (
            metric(
                text, "django_stability_breaker_transitions", breaker="ops-dependency", state="open"
            )
            == 1
        )
        assert metric(text, "django_stability_processes_reporting") == 2
    assert tripped in pids

    # Nobody else reads them.
    assert site.get("/stability/status/")[0] == 401
    assert site.get("/stability/metrics/")[0] == 401
    assert site.get("/stability/metrics/", AUTH)[0] == 403  # the status token is not the metrics'
