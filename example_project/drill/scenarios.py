"""The drill's scenarios: one per anti-pattern, each run without and with protection.

A scenario puts a real fault or a real load on the example shop for a few
seconds and returns its measures. The run without protection is the same
shop as a project without this app would be (``SHOP_PROTECTION=off``: no
middleware, django-redis without timeouts, ``requests`` without a timeout,
rate limits and shedding off); the run with protection is the shop as it
ships. Both run in the same drill, one after the other, on servers started
for the scenario.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import load
from .load import Recorder, checkout, closed_loop, get, join, open_loop, percentile, share, sources
from .processes import Gateway, RedisServer, ShopServer, child_env, run_python

#: gunicorn threads of each shop server in the drill (and its in-flight limit).
THREADS = 8
#: A search's cost in the drill: 8 threads serve 32 searches a second.
SEARCH_COST = 0.25
SEARCH_CAPACITY = THREADS / SEARCH_COST
TERMS = ("coffee", "tea", "roast", "grinder", "kenya", "mug", "press", "sencha")
PRODUCT = "kenya-light-roast"


@dataclass(frozen=True)
class Measure:
    """What a scenario measures; ``judged`` measures decide its verdict."""

    key: str
    label: str
    unit: str  # "share", "s", "us", "count", "MB"
    better: str = "higher"  # or "lower"
    judged: bool = True

    def format(self, value: float | None) -> str:
        if value is None:
            return "-"
        if self.unit == "share":
            return f"{value * 100:.0f}%"
        if self.unit == "s":
            return f"{value:.2f} s"
        if self.unit == "us":
            return f"{value:.0f} µs"
        if self.unit == "MB":
            return f"{value:.1f} MB"
        if self.unit == "ratio":
            return f"{value:.2f}x"
        return f"{value:.0f}"

    def beats(self, protected: float, unprotected: float) -> bool:
        """Is ``protected`` strictly better than ``unprotected`` on this measure?"""
        return protected > unprotected if self.better == "higher" else protected < unprotected


@dataclass
class Drill:
    """What every scenario shares: the private Redis, the gateway, the database, the pace."""

    workdir: Path
    quick: bool
    redis: RedisServer
    gateway: Gateway
    database: Path
    log: Callable[[str], None] = print
    runs: int = field(default=0)

    @property
    def duration(self) -> float:
        """Seconds of load per run."""
        return 1.5 if self.quick else 6.0

    @property
    def build_up(self) -> float:
        """Seconds a fault or a flood runs before the measured clients start."""
        return 0.7 if self.quick else 1.0

    def shop_env(self, prefix: str) -> dict[str, str]:
        return {
            "REDIS_URL": self.redis.url,
            "SHOP_DB": str(self.database),
            "SHOP_GATEWAY_URL": self.gateway.url,
            "SHOP_KEY_PREFIX": prefix,
            "SHOP_SEARCH_COST": str(SEARCH_COST),
            "SHOP_MEDIA": str(self.workdir / "media"),
        }

    def servers(self, name: str) -> tuple[ShopServer, ShopServer]:
        """An unprotected and a protected shop for one scenario, started together."""
        self.runs += 1
        pair = tuple(
            ShopServer(
                self.workdir,
                protected=protected,
                threads=THREADS,
                env=self.shop_env(f"drill{self.runs}-{name}-{'on' if protected else 'off'}"),
            ).launch()
            for protected in (False, True)
        )
        try:
            for server in pair:
                server.ready()
        except BaseException:
            for server in pair:
                server.stop()
            raise
        return pair[0], pair[1]

    def inproc(self, name: str, protected: bool) -> dict[str, float]:
        """Run an in-process scenario in a child of its own; its measures."""
        self.runs += 1
        env = child_env(
            **self.shop_env(f"drill{self.runs}-{name}"),
            SHOP_PROTECTION="on" if protected or name == "scaling" else "off",
        )
        args = ["-m", "example_project.drill.inproc", name, "on" if protected else "off"]
        if self.quick:
            args.append("--quick")
        output = run_python(args, env, timeout=240, log=self.workdir / "inproc.log")
        result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
        return result


@dataclass(frozen=True)
class Scenario:
    name: str
    antipattern: str
    title: str
    what: str
    measures: tuple[Measure, ...]
    run: Callable[[Drill], tuple[dict[str, float], dict[str, float]]]


def _latency(outcome: load.Outcome, timeout: float) -> float:
    # No answer counts as the client's whole patience.
    return outcome.seconds if outcome.status else timeout


def _warm(server: ShopServer, paths: list[str], with_checkout: bool = False) -> None:
    for path in paths:
        load.fetch(server.port, get(path), source="127.0.0.1", timeout=20, label="warm")
    if with_checkout:
        load.fetch(server.port, checkout(PRODUCT), source="127.0.0.1", timeout=20, label="warm")


def _both(
    drill: Drill, name: str, run: Callable[[Drill, ShopServer], dict[str, float]]
) -> tuple[dict[str, float], dict[str, float]]:
    started = time.monotonic()
    unprotected, protected = drill.servers(name)
    drill.log(f"    two shop servers up in {time.monotonic() - started:.1f} s")
    try:
        off = _timed(drill, "without protection", lambda: run(drill, unprotected))
        on = _timed(drill, "with protection", lambda: run(drill, protected))
    finally:
        unprotected.stop()
        protected.stop()
    return off, on


def _timed(drill: Drill, what: str, run: Callable[[], dict[str, float]]) -> dict[str, float]:
    started = time.monotonic()
    result = run()
    drill.log(f"    {what}: {time.monotonic() - started:.1f} s")
    return result


# Integration points ---------------------------------------------------------------------

PAGES = ["/", "/products/", f"/products/{PRODUCT}/"]


def integration_points(drill: Drill) -> tuple[dict[str, float], dict[str, float]]:
    def run(drill: Drill, server: ShopServer) -> dict[str, float]:
        drill.gateway.control(latency=0.05, failure_rate=0)
        _warm(server, PAGES, with_checkout=True)
        drill.gateway.control(hang=True)
        recorder = Recorder()
        build_up = drill.build_up
        until = time.monotonic() + build_up + drill.duration
        # A busy checkout: 8 a second, each customer waiting up to 3 s.
        threads = open_loop(
            recorder, "checkout", server.port, [checkout(PRODUCT)], rate=8,
            sources=sources("127.0.2.1", 8), pool=24, timeout=3.0, until=until,
        )  # fmt: skip
        time.sleep(build_up)
        # Visitors on pages that never call the gateway.
        threads += open_loop(
            recorder, "pages", server.port, [get(p) for p in PAGES], rate=8,
            sources=sources("127.0.3.1", 4), pool=16, timeout=2.0, until=until,
        )  # fmt: skip
        join(threads, until + 3.5)
        time.sleep(0.3)  # the worker writes its counts ten times a second
        stuck = server.stats()["most_stuck"]
        drill.gateway.control(latency=0.05, failure_rate=0)  # heal: stuck calls end
        checkouts = recorder.of("checkout")
        pages = recorder.of("pages")
        return {
            "pages_ok": share(pages, lambda o: o.status == 200),
            "checkout_p99": percentile([_latency(o, 3.0) for o in checkouts], 99),
            "checkout_taken": share(checkouts, lambda o: o.status == 302),
            "stuck": stuck,
        }

    return _both(drill, "integration", run)


# Blocked threads -------------------------------------------------------------------------


def blocked_threads(drill: Drill) -> tuple[dict[str, float], dict[str, float]]:
    paths = [*PAGES, "/search/?q=tea"]

    def run(drill: Drill, server: ShopServer) -> dict[str, float]:
        _warm(server, paths)
        drill.redis.hang()
        try:
            recorder = Recorder()
            until = time.monotonic() + drill.duration
            # Ten visitors a second, on pages that read the cache and pages that do not.
            threads = open_loop(
                recorder, "pages", server.port, [get(p) for p in paths], rate=10,
                sources=sources("127.0.4.1", 8), pool=32, timeout=2.0, until=until,
            )  # fmt: skip
            join(threads, until + 2.5)
            time.sleep(0.3)  # the worker writes its counts ten times a second
            stats = server.stats()
        finally:
            drill.redis.resume()
        pages = recorder.of("pages")
        return {
            "available": share(pages, lambda o: o.status == 200),
            "stuck": stats["most_stuck"],
        }

    return _both(drill, "blocked", run)


# Users -------------------------------------------------------------------------------------


def users(drill: Drill) -> tuple[dict[str, float], dict[str, float]]:
    searches = [get(f"/search/?q={term}") for term in TERMS]

    def run(drill: Drill, server: ShopServer) -> dict[str, float]:
        _warm(server, ["/search/?q=tea"])
        recorder = Recorder()
        build_up = drill.build_up + 0.5  # the scraper's first burst is spent by then
        until = time.monotonic() + drill.duration + build_up
        # One scraper: a hundred searches a second on 96 connections, from one address.
        threads = open_loop(
            recorder, "abuser", server.port, searches, rate=100, sources=["127.0.0.66"],
            pool=96, timeout=2.0, until=until,
        )  # fmt: skip
        time.sleep(build_up)
        # Ten people searching, each from their own address.
        threads += closed_loop(
            recorder, "normal", server.port, searches, sources=sources("127.0.5.1", 10),
            timeout=2.0, think=1.0 if drill.quick else 2.0, until=until,
        )  # fmt: skip
        join(threads, until + 2.5)
        normal = recorder.of("normal")
        abuser = recorder.of("abuser")
        return {
            "normal_ok": share(normal, lambda o: o.status == 200),
            "abuser_refused": share(abuser, lambda o: o.status == 429),
            "normal_requests": len(normal),
        }

    return _both(drill, "users", run)


# Unbalanced capacities -------------------------------------------------------------------


def unbalanced_capacities(drill: Drill) -> tuple[dict[str, float], dict[str, float]]:
    searches = [get(f"/search/?q={term}") for term in TERMS]

    def run(drill: Drill, server: ShopServer) -> dict[str, float]:
        drill.gateway.control(latency=0.05, failure_rate=0)
        _warm(server, ["/search/?q=tea"], with_checkout=True)
        recorder = Recorder()
        build_up = drill.build_up
        until = time.monotonic() + drill.duration + build_up
        # Search at three times what the threads can serve, from 200 addresses
        # (each under its rate limit: this is a crowd, not an abuser).
        threads = open_loop(
            recorder, "search", server.port, searches, rate=3 * SEARCH_CAPACITY,
            sources=load.sources("127.0.6.1", 200), pool=128, timeout=3.0, until=until,
        )  # fmt: skip
        time.sleep(build_up)
        threads += open_loop(
            recorder, "checkout", server.port, [checkout(PRODUCT)], rate=2,
            sources=load.sources("127.0.7.1", 4), pool=8, timeout=2.0, until=until,
        )  # fmt: skip
        join(threads, until + 3.5)
        checkouts = recorder.of("checkout")
        searched = recorder.of("search")
        return {
            "checkout_ok": share(checkouts, lambda o: o.status == 302),
            "checkout_p99": percentile([_latency(o, 2.0) for o in checkouts], 99),
            "search_shed": share(searched, lambda o: o.status == 503),
        }

    return _both(drill, "unbalanced", run)


# In-process scenarios (see inproc.py) ----------------------------------------------------


def _inproc(name: str) -> Callable[[Drill], tuple[dict[str, float], dict[str, float]]]:
    def run(drill: Drill) -> tuple[dict[str, float], dict[str, float]]:
        off = _timed(drill, "without protection", lambda: drill.inproc(name, False))
        on = _timed(drill, "with protection", lambda: drill.inproc(name, True))
        return off, on

    return run


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "integration-points",
        "Integration points",
        "the payment gateway hangs",
        "the gateway never answers; 8 checkouts/s (3 s patience), then 8 page views/s (2 s)",
        (
            Measure("pages_ok", "other pages answered", "share"),
            Measure("checkout_p99", "checkout p99", "s", "lower"),
            Measure("checkout_taken", "orders taken", "share", judged=False),
            Measure("stuck", "threads stuck > 1 s", "count", "lower", judged=False),
        ),
        integration_points,
    ),
    Scenario(
        "blocked-threads",
        "Blocked threads",
        "Redis hangs (SIGSTOP)",
        "10 page views/s (2 s patience), half of them on pages that read the cache",
        (
            Measure("available", "pages answered in 2 s", "share"),
            Measure("stuck", "threads stuck > 1 s", "count", "lower"),
        ),
        blocked_threads,
    ),
    Scenario(
        "users",
        "Users",
        "one scraper and ten people search",
        "a scraper: 100 searches/s on 96 connections; 10 people search, each from their address",
        (
            Measure("normal_ok", "people's searches answered", "share"),
            Measure("abuser_refused", "scraper's searches refused (429)", "share", judged=False),
        ),
        users,
    ),
    Scenario(
        "self-denial-cache",
        "Self-denial attacks",
        "a hot cache key expires under 64 requests",
        "64 callers at once on the expired product list (a 0.3 s aggregate)",
        (
            Measure("computes", "computes of the query", "count", "lower"),
            Measure("p99", "callers' p99", "s", "lower", judged=False),
        ),
        _inproc("stampede"),
    ),
    Scenario(
        "self-denial-cron",
        "Self-denial attacks",
        "a cron job on 20 servers at 00:00:00",
        "20 servers publish the nightly report in the same second (0.5 s of work each)",
        (
            Measure("most_at_once", "most reports running at once", "count", "lower"),
            Measure("spread", "first to last start", "s", "higher", judged=False),
        ),
        _inproc("cron"),
    ),
    Scenario(
        "unbalanced-capacities",
        "Unbalanced capacities",
        "search flooded at 3x capacity",
        "200 addresses search at 3x what 8 threads serve; 2 checkouts/s (2 s patience)",
        (
            Measure("checkout_ok", "checkouts answered", "share"),
            Measure("checkout_p99", "checkout p99", "s", "lower"),
            Measure("search_shed", "searches shed (503)", "share", judged=False),
        ),
        unbalanced_capacities,
    ),
    Scenario(
        "scaling-effects",
        "Scaling effects",
        "10 then 1000 policies; 100,000 clients",
        "per-request cost as policies grow; what a burst of distinct clients leaves in Redis",
        (
            Measure("growth", "cost with 1000 policies / with 10", "ratio", "lower"),
            Measure("us_10", "per request, 10 policies", "us", "lower", judged=False),
            Measure("us_1000", "per request, 1000 policies", "us", "lower", judged=False),
            Measure("us_10000", "per request, 10,000 policies", "us", "lower", judged=False),
            Measure("clients", "distinct clients in the burst", "count", judged=False),
            Measure("keys_left", "keys left after the burst", "count", "lower"),
            Measure("mb_left", "memory left after the burst", "MB", "lower", judged=False),
            Measure("keys_peak", "keys at the peak", "count", "lower", judged=False),
        ),
        _inproc("scaling"),
    ),
)


def verdict(scenario: Scenario, off: dict[str, Any], on: dict[str, Any]) -> bool:
    """True when the protected run beats the unprotected one on every judged measure."""
    return all(
        measure.beats(float(on[measure.key]), float(off[measure.key]))
        for measure in scenario.measures
        if measure.judged
    )
