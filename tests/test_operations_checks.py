"""Checks E060-E061/W060-W062, the settings of the operations part, and ``stability_status``."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings

from django_stability import checks, circuit_breaker, guard, metrics
from django_stability.conf import merge
from django_stability.policies import registry
from django_stability.ratelimit import RateLimitSpec, check
from tests.operations import fresh_counts, other_process, publish_as

__all__ = ["fresh_counts"]


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


def test_e060_metrics_required_without_prometheus_client(settings: Any, monkeypatch: Any) -> None:
    settings.STABILITY = {**settings.STABILITY, "METRICS_ENABLED": True}
    monkeypatch.setattr(metrics, "available", lambda: False)
    assert ids(checks.check_metrics()) == ["django_stability.E060"]
    settings.STABILITY = {**settings.STABILITY, "METRICS_ENABLED": None}
    assert checks.check_metrics() == []  # off by itself when not installed
    assert not metrics.enabled()


def test_w060_metrics_without_the_multiprocess_directory(settings: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)
    assert ids(checks.check_metrics()) == ["django_stability.W060"]
    settings.DEBUG = True  # runserver: one process
    assert checks.check_metrics() == []
    settings.DEBUG = False
    settings.STABILITY = {**settings.STABILITY, "METRICS_ENABLED": False}
    assert checks.check_metrics() == []


def test_e061_multiprocess_directory_that_cannot_be_written(
    monkeypatch: Any, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    assert ids(checks.check_metrics()) == ["django_stability.E061"]
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert checks.check_metrics() == []


def test_w061_short_tokens(settings: Any) -> None:
    assert checks.check_tokens() == []
    settings.STABILITY = {
        **settings.STABILITY,
        "DASHBOARD_STATUS_TOKEN": "short",
        "METRICS_TOKEN": "x" * 40,
    }
    messages = checks.check_tokens()
    assert ids(messages) == ["django_stability.W061"]
    assert "DASHBOARD_STATUS_TOKEN" in messages[0].msg


def test_w062_guards_without_a_timeout() -> None:
    guard("payments", timeout=2)
    guard("ledger", timeout=0, total_timeout=5)
    assert checks.check_guard_timeouts() == []
    guard("crm", timeout=0)
    messages = checks.check_guard_timeouts()
    assert ids(messages) == ["django_stability.W062"]
    assert messages[0].obj == "crm"
    guard("crm", timeout=0, mode="off")  # off on purpose: no layer at all, no warning
    assert checks.check_guard_timeouts() == []


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"AUDIT_ENDPOINTS": {"api": "not a url"}}, "must be a URL with a scheme and a host"),
        ({"AUDIT_ENDPOINTS": {"api": "https://h:99999/"}}, "must be a URL"),
        ({"DASHBOARD_STATUS_TOKEN": "  "}, "non-empty secret"),
        ({"DASHBOARD_HISTORY_MINUTES": 5000}, "at most 1440"),
        ({"DASHBOARD_REPORT_INTERVAL": 0}, "greater than 0"),
        ({"HEALTH_NOT_READY_WHEN_SHEDDING": "urgent"}, "must be one of"),
        ({"METRICS_ENABLED": "yes"}, "must be bool or None"),
    ],
)
def test_bad_operations_settings_are_refused(values: dict[str, Any], says: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=says):
        merge(values)


def test_good_operations_settings_are_accepted() -> None:
    merged = merge(
        {
            "AUDIT_ENDPOINTS": {"payments": "https://api.payments.example/v1"},
            "DASHBOARD_REPORT_INTERVAL": None,
            "METRICS_ENABLED": True,
            "HEALTH_NOT_READY_WHEN_SHEDDING": "high",
        }
    )
    assert merged["DASHBOARD_REPORT_INTERVAL"] is None


# manage.py stability_status ------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_counts")
def test_stability_status_prints_the_processes_state_as_tables() -> None:
    circuit_breaker("payments")
    registry.register(RateLimitSpec(name="login", rate="1/h"))
    check("login", "203.0.113.7")
    check("login", "203.0.113.7")
    other = other_process(
        counts=[
            [["ratelimit_decisions", "login"], 9],
            [["ratelimit_refusals", "login", "false"], 4],
        ]
    )
    other["admission"]["by_class"]["default"] = 3
    other["admission"]["in_flight"] = 3
    publish_as("web-7:99:abc", other)
    out = StringIO()
    call_command("stability_status", stdout=out)
    text = out.getvalue()
    assert "web-7:99:abc" in text
    assert "Circuit breakers" in text and "payments" in text
    login = next(line for line in text.splitlines() if line.startswith("login"))
    # This command's own process is left out: the other's counts only.
    assert login.split()[:6] == ["login", "1/h", "enforce", "9", "4", "0"]
    assert "203.0.113.7" in login  # limited now, in the store for everyone
    assert "in flight 3" in text


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_counts")
def test_stability_status_as_json_and_by_section() -> None:
    circuit_breaker("payments")
    out = StringIO()
    call_command("stability_status", "--json", "--section", "breakers", stdout=out)
    data = json.loads(out.getvalue())
    assert "payments" in [row["name"] for row in data["breakers"]]
    assert "ratelimits" not in data


def test_metrics_child_exit_drops_a_dead_workers_gauges(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "gauge_livesum_4242.db").write_bytes(b"")
    (tmp_path / "counter_4242.db").write_bytes(b"")

    class Worker:
        pid = 4242

    with override_settings():
        metrics.child_exit(None, Worker())
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["counter_4242.db"]  # counters stay: they are totals
