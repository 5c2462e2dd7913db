"""Screenshots of the Stability page for the docs, taken in Chromium by Playwright.

    .venv/bin/python scripts/dashboard_screenshots.py docs/img

A staged site in trouble, in this process: a payments API failing (its breaker
opens on real failures), a login rate limit refusing real attempts, a PDF
renderer's bulkhead full, the process shedding its sheddable requests, some
jobs, cache counters, and two more processes reporting (copies of this one's
report, a little changed). The per-minute history of the last half hour is
made up (a real one takes half an hour to fill); everything else on the page
is what the parts really decided. Runs on the test database and a key prefix
of its own, on this machine's PostgreSQL and Redis; serves on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
# Playwright's sync API runs an event loop in this thread; the ORM calls here are synchronous.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"


def stage() -> None:
    """Make the parts decide what the page will show."""
    from django.test import RequestFactory
    from django.utils import timezone

    from django_stability import bulkhead, circuit_breaker, history
    from django_stability.brownout import register_feature
    from django_stability.cache import counters
    from django_stability.concurrency import ConcurrencySpec, lease_key
    from django_stability.exceptions import BulkheadFull
    from django_stability.jobs import JobSpec
    from django_stability.models import Job
    from django_stability.policies import registry
    from django_stability.ratelimit import RateLimitSpec, check
    from django_stability.reporter import DIRECTORY_KEY, report_key
    from django_stability.shedding import controller, report_shed
    from django_stability.status import process_report
    from django_stability.store import get_store
    from django_stability.waiting_room import room_key

    def fail() -> None:
        raise ConnectionError("payments API: connection reset")

    payments = circuit_breaker("payments", window_size=20, minimum_calls=10, wait_in_open=30)
    for i in range(20):
        try:
            payments.call(fail if i % 3 else (lambda: None))
        except (ConnectionError, Exception):
            pass
    inventory = circuit_breaker("inventory")
    for _ in range(40):
        inventory.call(lambda: None)
    circuit_breaker("recommendations", mode="metrics_only")
    circuit_breaker("ledger", scope="cluster")

    registry.register(RateLimitSpec(name="login", rate="5/m", key="ip"))
    registry.register(RateLimitSpec(name="api", rate="600/m", key="header:x-api-key"))
    registry.register(RateLimitSpec(name="search", rate="60/m", key="ip", mode="shadow"))
    for address, attempts in (("203.0.113.7", 40), ("198.51.100.23", 12), ("192.0.2.99", 7)):
        for _ in range(attempts):
            check("login", address)
    for i in range(120):
        check("api", f"key-{i % 9}")
        check("search", f"10.0.0.{i % 4}")

    bulkhead("reports", max_concurrent=4)
    renderer = bulkhead("pdf-renderer", max_concurrent=2, max_wait=0)
    held = [renderer.acquire(), renderer.acquire(), bulkhead("reports").acquire()]
    for _ in range(3):
        try:
            renderer.acquire()
        except BulkheadFull:
            pass
    del held  # the slots stay taken: the renderer is busy

    register_feature("recommendations")
    register_feature("live-stock-counter")
    register_feature("holiday-banner", enabled=False, brownout=False)
    registry.register(ConcurrencySpec(name="exports", limit=4))
    registry.register(
        ConcurrencySpec(name="flash-sale", limit=2, waiting_room=True, url_names=("sale",))
    )
    store = get_store()
    exports = registry.get(ConcurrencySpec, "exports")
    sale = registry.get(ConcurrencySpec, "flash-sale")
    assert exports is not None and sale is not None
    for holder in ("a", "b"):
        store.acquire_lease(lease_key(exports), holder, 4, 600)
    for ticket in range(6):
        store.wait_in_line(room_key(sale), f"t{ticket}", 2, 600, 600)

    counters.add("catalogue", "hits", 1840)
    counters.add("catalogue", "stale", 35)
    counters.add("catalogue", "waits", 21)
    counters.add("catalogue", "recomputes", 12)
    counters.add("product-page", "hits", 962)
    counters.add("product-page", "recomputes", 40)
    counters.add("product-page", "errors", 2)

    now = timezone.now()
    for _ in range(3):
        Job.objects.create(name="export-orders")
    Job.objects.create(name="export-orders", state=Job.RUNNING, started_at=now)
    Job.objects.create(name="export-orders", state=Job.FAILED, finished_at=now)
    for _ in range(14):
        Job.objects.create(name="export-orders", state=Job.SUCCEEDED, finished_at=now)
    for _ in range(40):
        Job.objects.create(name="thumbnails", state=Job.SUCCEEDED, finished_at=now)

    registry.register(JobSpec(name="export-orders", queue="exports", max_queue_depth=500))
    registry.register(JobSpec(name="thumbnails", queue="media"))

    # The process is busy: ten normal requests in flight, the sheddable ones refused
    # (as the middleware's admission gate reports them).
    for _ in range(10):
        controller.try_enter("default")
    request = RequestFactory().get("/search/?q=shoes")
    for _ in range(4):
        verdict = controller.try_enter("sheddable")
        report_shed(
            request,
            reason="capacity",
            priority="sheddable",
            policy="search",
            retry_after=2.0,
            in_flight=verdict.in_flight,
            limit=verdict.limit,
        )

    # Two more processes, as their reporters would write them.
    report = process_report()
    entries = {}
    for n, (in_flight, payments_state) in enumerate(((7, "closed"), (12, "open")), start=2):
        other = json.loads(json.dumps(report))
        process = f"web-{n}:{4100 + n}:{uuid.uuid4().hex[:6]}"
        other.update(id=process, host=f"web-{n}", pid=4100 + n, started=time.time() - 3600 * n)
        other["admission"]["by_class"]["default"] = in_flight
        other["admission"]["in_flight"] = in_flight
        other["breakers"]["payments"]["state"] = payments_state
        store.set(report_key(process), json.dumps(other), 600)
        entries[process] = time.time() + 600
    store.set(DIRECTORY_KEY, json.dumps(entries), 1200)

    # The last half hour, made up: steady traffic, a login attack, then overload.
    wall = time.time()
    for ago in range(1, 30):
        minute = wall - 60 * ago
        wave = 1 + 0.15 * math.sin(ago / 3)
        history.record(
            {
                "requests": int(1800 * wave) + (900 if ago < 4 else 0),
                "rate_limited": 140 if 8 <= ago <= 14 else 3,
                "shed": 60 * (4 - ago) if ago < 4 else 0,
                "breaker_opened": 1 if ago == 2 else 0,
                "bulkhead_full": 9 if ago < 4 else 0,
                "cache_hits": int(1500 * wave),
                "cache_stale": 25 if ago < 4 else 2,
                "cache_recomputes": 8,
                "cache_errors": 1 if ago == 3 else 0,
                "jobs_succeeded": 2 if ago % 3 else 1,
                "jobs_failed": 1 if ago == 6 else 0,
                "jobs_refused": 0,
            },
            now=minute,
        )


def urls() -> list[object]:
    """The site's URLs: the admin and the app's, nothing of the test suite's."""
    from django.contrib import admin
    from django.urls import include, path

    return [
        path("admin/", admin.site.urls),
        path("stability/", include("django_stability.urls")),
    ]


def main(folder: Path) -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.test.testcases import LiveServerThread
    from django.test.utils import override_settings, setup_databases, teardown_databases

    from tests.browser import chromium, log_in

    folder.mkdir(parents=True, exist_ok=True)
    old = setup_databases(verbosity=0, interactive=False)
    from django.conf import settings

    stability = {
        **settings.STABILITY,
        "STORE_KEY_PREFIX": f"stabshots:{uuid.uuid4().hex[:8]}",
        "SHEDDING_MAX_IN_FLIGHT": 16,
        "DASHBOARD_REFRESH": 2.0,
    }
    server = None
    try:
        # This module is the URLconf (``urlpatterns`` is set below, before any request).
        with override_settings(STABILITY=stability, ROOT_URLCONF=__name__):
            global urlpatterns
            urlpatterns = urls()
            get_user_model().objects.create_superuser("operator", "", "a-password")
            stage()
            server = LiveServerThread("127.0.0.1", StaticFilesHandler)
            server.daemon = True
            server.start()
            server.is_ready.wait()
            if server.error:
                raise server.error
            base = f"http://127.0.0.1:{server.port}"
            with chromium() as browser:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                log_in(page, base, "operator", "a-password")
                page.goto(f"{base}/admin/django_stability/stabilitydashboard/")
                page.wait_for_selector("#stability-dashboard[data-ready]")
                page.screenshot(path=str(folder / "dashboard.png"), full_page=True)
                page.click('tr[data-breaker="inventory"] button[data-action="forced_open"]')
                page.wait_for_selector('tr[data-breaker="inventory"] [data-state="forced_open"]')
                box = page.locator("#stability-breakers").bounding_box()
                top = page.locator("#stability-message").bounding_box()
                assert box is not None and top is not None
                page.screenshot(
                    path=str(folder / "dashboard-forced-open.png"),
                    full_page=True,
                    clip={
                        "x": 0,
                        "y": top["y"] - 10,
                        "width": 1400,
                        "height": box["y"] + box["height"] - top["y"] + 20,
                    },
                )
            print(f"wrote {folder / 'dashboard.png'} and {folder / 'dashboard-forced-open.png'}")
    finally:
        if server is not None:
            server.terminate()
        teardown_databases(old, verbosity=0)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img"))
