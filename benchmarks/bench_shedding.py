"""Load shedding under overload, against a real gunicorn, side by side with the alternatives.

One gunicorn worker (gthread, 4 threads) serves a sheddable view that takes
0.25 s, so it can serve 16 requests per second. It is flooded at 1x, 2x and 3x
that, open loop, while a trickle of critical requests (40 per second) asks for
a fast view. Three set-ups, each on a fresh server:

- none: no protection;
- django-request-queue-timeout (what a Django user would otherwise add): drops
  requests whose X-Request-Start (stamped by the load generator as a proxy
  would) is older than 1 s;
- django-stability: admission with priority classes, an in-flight limit of 4
  (the threads) and the same 1 s queue-time target.

Then the middleware's own cost per request, in process, as a ratio to no
middleware at all.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from typing import Any

from benchmarks.harness import line, median_seconds, per_call_seconds
from tests.load import Result, Stream, run_load
from tests.servers import Server

THREADS = 4
SERVICE = 0.25
CAPACITY = THREADS / SERVICE
CRITICAL_RATE = 40
DURATION = 4.0

CLASSES = {
    "slow": {"url_names": ["slow"], "priority": "sheddable"},
    "critical": {"url_names": ["critical", "ping", "stats"], "priority": "critical"},
}
SETUPS: dict[str, dict[str, Any]] = {
    "none": {"middleware": "none"},
    "request-queue-timeout": {"middleware": "rqto", "env": {"SHEDDING_SITE_RQTO": "1"}},
    "django-stability": {
        "stability": {
            "POLICIES": {"admission": CLASSES},
            "SHEDDING_MAX_IN_FLIGHT": THREADS,
            "SHEDDING_QUEUE_TIME_TARGET": 1.0,
        }
    },
}


def stamp() -> dict[str, str]:
    # Milliseconds since the epoch: the format both middlewares read.
    return {"X-Request-Start": str(int(time.time() * 1000))}


def load(server: Server, factor: float) -> Result:
    # A fresh server pays for its first requests (imports, URL patterns); not
    # the figure this measures.
    for path in ("/critical/", "/slow/?s=0") * 10:
        server.get(path)
    streams = [Stream("critical", "/critical/", CRITICAL_RATE, timeout=5.0, headers=stamp)]
    if factor:
        streams.append(
            Stream(
                "sheddable", f"/slow/?s={SERVICE}", factor * CAPACITY, timeout=5.0, headers=stamp
            )
        )
    return run_load(server.port, streams, DURATION)


def ms(value: float | None) -> str:
    return "    -   " if value is None else f"{value * 1000:7.1f} ms"


def overload() -> tuple[float, dict[tuple[str, int], Result]]:
    print(
        f"overload (gunicorn gthread, 1 worker x {THREADS} threads, sheddable view {SERVICE} s "
        f"= capacity {CAPACITY:.0f}/s; critical {CRITICAL_RATE}/s; {DURATION:.0f} s per run; "
        "client timeout 5 s):"
    )
    results: dict[tuple[str, int], Result] = {}
    baselines: list[float] = []
    for factor in (1, 2, 3):
        # The unloaded figure is measured again before each level, on a fresh
        # server: the machine is shared, and one quiet or noisy run says little.
        with Server("gunicorn", threads=THREADS, **SETUPS["django-stability"]) as server:
            unloaded = load(server, 0)
        baselines.append(unloaded.percentile("critical", 99) or 0.0)
        base_p99 = statistics.median(baselines)
        line(
            f"unloaded (before {factor}x): critical p50 / p99",
            f"{ms(unloaded.percentile('critical', 50))} / {ms(baselines[-1])}"
            f"   (median p99 so far {ms(base_p99).strip()})",
        )
        for name, setup in SETUPS.items():
            with Server("gunicorn", threads=THREADS, **setup) as server:
                result = load(server, factor)
            results[(name, factor)] = result
            shed = result.statuses("sheddable")
            sent = result.sent("sheddable")
            p99 = result.percentile("critical", 99)
            line(
                f"{factor}x {name}: critical ok, p50 / p99",
                f"{result.success_rate('critical') * 100:5.1f} %  "
                f"{ms(result.percentile('critical', 50))} / {ms(p99)}"
                + (f" = {p99 / base_p99:5.1f} x unloaded" if p99 and base_p99 else ""),
            )
            line(
                f"{factor}x {name}: sheddable 503 / ok / no answer",
                f"{shed[503] / sent * 100:5.1f} % / {shed[200] / sent * 100:5.1f} % / "
                f"{shed[None] / sent * 100:5.1f} %  (of {sent})",
            )
    return statistics.median(baselines), results


def overhead() -> None:
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import RequestFactory, override_settings

    from django_stability.policies import registry
    from django_stability.shedding import controller

    print("middleware cost per request (in process, WSGI handler, a view that does nothing):")
    # django-request-queue-timeout logs a line per request it reads the header of.
    logging.getLogger("rqto").setLevel(logging.ERROR)
    environ = RequestFactory()._base_environ(PATH_INFO="/critical/", REQUEST_METHOD="GET")  # type: ignore[attr-defined]
    statuses: Counter[str] = Counter()

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        statuses[status[:3]] += 1

    def handler_for(middleware: list[str], stability: dict[str, Any] | None = None) -> Any:
        settings: dict[str, Any] = {
            "MIDDLEWARE": middleware,
            "ROOT_URLCONF": "tests.shedding_site.urls",
        }
        if stability is not None:
            settings["STABILITY"] = {"STORE_KEY_PREFIX": "stabbench", **stability}
        override = override_settings(**settings)
        override.enable()
        handler = WSGIHandler()
        registry.reload()

        def call() -> None:
            # Stamped as a proxy would, just now (milliseconds, read by both middlewares).
            request = {**environ, "HTTP_X_REQUEST_START": str(int(time.time() * 1000))}
            handler(request, start_response).close()

        return override, call

    stability = {
        "POLICIES": {"admission": CLASSES},
        "SHEDDING_MAX_IN_FLIGHT": 8,
        "SHEDDING_QUEUE_TIME_TARGET": 1.0,
    }
    leased = {
        **stability,
        "POLICIES": {
            "admission": CLASSES,
            "concurrency": {"c": {"url_names": ["critical"], "limit": 1000}},
        },
    }
    setups = {
        "no middleware": ([], None),
        "django-request-queue-timeout": (["rqto.middleware.RequestQueueTimeoutMiddleware"], None),
        "django-stability admission (classes, in-flight, queue time)": (
            ["django_stability.middleware.StabilityMiddleware"],
            stability,
        ),
        "  ... plus a cluster concurrency limit (2 Redis round trips)": (
            ["django_stability.middleware.StabilityMiddleware"],
            leased,
        ),
    }
    # Interleaved rounds, each set-up under its own settings, so that the
    # machine's noise falls on every set-up alike; the median of the rounds.
    samples: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(5):
        for name, (middleware, config) in setups.items():
            override, call = handler_for(middleware, config)
            try:
                statuses.clear()
                samples[name].append(median_seconds(call, rounds=600, warmup=100))
                assert set(statuses) == {"200"}, statuses  # every request reached the view
            finally:
                override.disable()
    controller.reset()
    bare = statistics.median(samples["no middleware"])
    for name, values in samples.items():
        value = statistics.median(values)
        ratio = "" if value is bare else f" = {value / bare:4.2f} x no middleware"
        line(name, f"{value * 1e6:7.1f} us{ratio}")
    gate_alone(stability)


def gate_alone(stability: dict[str, Any]) -> None:
    """The admission gate's own work, timed in a loop (steadier than whole requests)."""
    from django.test import RequestFactory, override_settings

    from django_stability.shedding import AdmissionGate, controller

    gate = AdmissionGate()
    by_prefix = {
        "slow": {"path_prefixes": ["/slow/"], "priority": "sheddable"},
        "critical": {"path_prefixes": ["/critical/", "/ping/"], "priority": "critical"},
    }
    for label, classes in (("URL names", CLASSES), ("path prefixes", by_prefix)):
        config = {**stability, "POLICIES": {"admission": classes}, "STORE_KEY_PREFIX": "stabbench"}
        with override_settings(STABILITY=config, ROOT_URLCONF="tests.shedding_site.urls"):
            # Stamped a minute ahead (a proxy clock ahead counts as no wait), so
            # the header is read and parsed on every call and never goes stale.
            request = RequestFactory().get(
                "/critical/", HTTP_X_REQUEST_START=str(int((time.time() + 60) * 1000))
            )

            def decide(request: Any = request) -> None:
                assert gate.enter(request) is None
                gate.leave(request, None)

            seconds = per_call_seconds(decide, number=20_000)
        controller.reset()
        line(
            f"admission decision alone (enter + leave), by {label}",
            f"{seconds * 1e6:7.1f} us",
        )


def main() -> None:
    base_p99, results = overload()
    ours = results[("django-stability", 3)]
    p99 = ours.percentile("critical", 99) or float("inf")
    rate = ours.success_rate("critical") * 100
    ratio = p99 / base_p99 if base_p99 else float("inf")
    verdict = "met" if rate >= 99 and ratio <= 2 else "NOT met"
    line(
        "goal at 3x: critical >= 99 % ok, p99 <= 2 x unloaded (median)",
        f"{rate:5.1f} %, {ratio:4.1f} x: {verdict}",
    )
    print()
    overhead()
