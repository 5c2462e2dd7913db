"""The Stability page in a real browser: sign in, watch the state, act, and who may not.

The site is Django's live server (a real HTTP server in a thread of the test
process, on the test database); the browser is Debian's Chromium, headless.
Set ``STABILITY_SCREENSHOTS=<dir>`` to save the screenshots the docs use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User

from django_stability import bulkhead, circuit_breaker
from django_stability.breaker import get_breaker
from django_stability.models import BreakerPolicy, Job
from django_stability.policies import registry
from django_stability.ratelimit import RateLimitSpec, check
from tests.browser import chromium, log_in, sign_in_as

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PAGE = "/admin/django_stability/stabilitydashboard/"
#: Long enough for a loaded 2-core machine; the page polls every second here.
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Playwright's sync API keeps an event loop in this thread while the browser is
    # open; Django takes that for async code and refuses the (synchronous) queries
    # the tests make, unless told it is safe.
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with chromium() as launched:
            yield launched
    finally:
        if before is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


@pytest.fixture
def fast_refresh(settings: Any) -> None:
    settings.STABILITY = {**settings.STABILITY, "DASHBOARD_REFRESH": 1.0}


def staff(username: str, *perms: str, superuser: bool = False) -> User:
    user = User.objects.create_user(username, password="pw-" + username, is_staff=True)
    user.is_superuser = superuser
    user.save()
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def shoot(page: Any, name: str) -> None:
    folder = os.environ.get("STABILITY_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def state_of(page: Any, breaker: str) -> Any:
    return page.locator(f'tr[data-breaker="{breaker}"] .stability-state')


def test_an_operator_forces_a_breaker_open_sees_it_and_resets_it(
    page: Any, live_server: Any, fast_refresh: None
) -> None:
    circuit_breaker("payments", window_size=4, minimum_calls=4)
    circuit_breaker("inventory")
    bulkhead("reports", max_concurrent=4)
    staff("operator", "view_dashboard", "change_breakerpolicy")
    log_in(page, live_server.url, "operator", "pw-operator")
    page.goto(f"{live_server.url}{PAGE}")
    page.wait_for_selector("#stability-dashboard[data-ready]")
    assert state_of(page, "payments").get_attribute("data-state") == "closed"
    shoot(page, "dashboard")

    page.click('tr[data-breaker="payments"] button[data-action="forced_open"]')
    page.wait_for_selector(
        'tr[data-breaker="payments"] [data-state="forced_open"]', timeout=WAIT_MS
    )
    assert "set to forced_open" in page.inner_text("#stability-message")
    assert BreakerPolicy.objects.get(name="payments").config["mode"] == "forced_open"
    shoot(page, "dashboard-forced-open")

    page.click('tr[data-breaker="payments"] button[data-action="automatic"]')
    page.wait_for_selector('tr[data-breaker="payments"] [data-state="closed"]', timeout=WAIT_MS)
    # Opened by its failures, elsewhere than on the page: the page sees it by itself.
    get_breaker("payments").trip("failures seen by the test")
    page.wait_for_selector('tr[data-breaker="payments"] [data-state="open"]', timeout=WAIT_MS)
    page.click('tr[data-breaker="payments"] button[data-action="reset"]')
    page.wait_for_selector('tr[data-breaker="payments"] [data-state="closed"]', timeout=WAIT_MS)
    assert "reset" in page.inner_text("#stability-message")
    assert get_breaker("payments").state == "closed"


def test_charts_are_drawn_and_a_limited_key_is_reset_from_the_page(
    page: Any, live_server: Any, fast_refresh: None
) -> None:
    registry.register(RateLimitSpec(name="login", rate="1/h"))
    check("login", "203.0.113.7")
    assert not check("login", "203.0.113.7").allowed
    staff("operator", "view_dashboard", "change_ratelimitpolicy")
    log_in(page, live_server.url, "operator", "pw-operator")
    page.goto(f"{live_server.url}{PAGE}")
    page.wait_for_selector("#stability-dashboard[data-ready]")
    # Four charts, each a line per series over the window.
    assert page.locator("svg.stability-chart").count() == 4
    assert page.locator("svg.stability-chart polyline").count() == 12
    assert "requests: " in page.inner_text("#stability-charts")
    row = page.locator('tr[data-ratelimit="login"]')
    assert "203.0.113.7" in row.inner_text()
    row.locator('button[data-action="reset_key"]').click()
    page.wait_for_function(
        """() => !document.querySelector('tr[data-ratelimit="login"]')
                   .innerText.includes('203.0.113.7')""",
        timeout=WAIT_MS,
    )
    assert "(it had counters)" in page.inner_text("#stability-message")
    assert check("login", "203.0.113.7").allowed
    # No button for what this operator may not change.
    assert page.locator('button[data-target="breaker"]').count() == 0


def test_a_viewer_without_change_permission_sees_no_buttons(page: Any, live_server: Any) -> None:
    circuit_breaker("payments")
    staff("viewer", "view_dashboard")
    log_in(page, live_server.url, "viewer", "pw-viewer")
    page.goto(f"{live_server.url}{PAGE}")
    page.wait_for_selector("#stability-dashboard[data-ready]")
    assert state_of(page, "payments").count() == 1
    assert page.locator("button.stability-action").count() == 0


def test_a_non_staff_user_gets_no_access(page: Any, live_server: Any) -> None:
    customer = User.objects.create_user("customer", password="pw-customer")
    sign_in_as(page, live_server.url, customer)
    assert page.goto(f"{live_server.url}/stability/health/live/").status == 200
    page.goto(f"{live_server.url}{PAGE}")
    # The admin sends whoever is not staff to its login page.
    assert "/admin/login/" in page.url
    assert page.locator("#stability-dashboard").count() == 0
    response = page.goto(f"{live_server.url}/stability/status/")
    assert response.status == 403


def test_staff_without_the_permission_get_403(page: Any, live_server: Any) -> None:
    staff("clerk")
    log_in(page, live_server.url, "clerk", "pw-clerk")
    response = page.goto(f"{live_server.url}{PAGE}")
    assert response.status == 403
    assert page.locator("#stability-dashboard").count() == 0


def test_a_page_never_shows_another_users_jobs(page: Any, live_server: Any) -> None:
    alice = User.objects.create_user("alice", password="pw-alice")
    bob = User.objects.create_user("bob", password="pw-bob")
    mine = Job.objects.create(name="export", owner=alice, parameters={"year": 2024})
    theirs = Job.objects.create(
        name="export", owner=bob, parameters={"secret": "bob-private-parameter"}
    )
    sign_in_as(page, live_server.url, alice)
    response = page.goto(f"{live_server.url}/stability/jobs/{mine.id}/")
    assert response.status == 200
    assert str(mine.id) in page.content()
    response = page.goto(f"{live_server.url}/stability/jobs/{theirs.id}/")
    assert response.status == 404
    assert str(theirs.id) not in page.content()
    # The Stability page counts jobs by name; it shows no job's id, owner or parameters.
    staff("operator", "view_dashboard")
    log_in(page, live_server.url, "operator", "pw-operator")
    page.goto(f"{live_server.url}{PAGE}")
    page.wait_for_selector("#stability-dashboard[data-ready]")
    text = page.content()
    assert "export" in page.inner_text("#stability-jobs")
    for leak in (str(mine.id), str(theirs.id), "bob-private-parameter", "alice", "bob"):
        assert leak not in text
