"""``manage.py stability_audit``: probes of TLS, DNS and connect times, guard timeouts, exit status.

Every server probed is on 127.0.0.1, started by the test (a TLS server with a
certificate made here) or the machine's own PostgreSQL and Redis.
"""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta, timezone
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_stability import audit, guard
from django_stability.concurrency import ConcurrencySpec
from django_stability.policies import registry
from tests.redis_servers import free_port
from tests.tls_server import TLSServer, certificates

pytestmark = pytest.mark.django_db


def tls_target(port: int, name: str = "payments", guard_name: str | None = None) -> audit.Target:
    return audit.Target(name, "AUDIT_ENDPOINTS", "https", "localhost", port, guard_name)


@pytest.fixture
def trusted(settings: Any, tmp_path: Path) -> Any:
    def serve(days: float) -> TLSServer:
        ca, certificate, key = certificates(tmp_path, days=days)
        settings.STABILITY = {**settings.STABILITY, "AUDIT_CA_FILE": str(ca)}
        return TLSServer(certificate, key)

    return serve


def test_a_healthy_endpoint_reports_dns_connect_and_certificate_days(trusted: Any) -> None:
    guard("payments", timeout=2)
    with trusted(days=90) as server:
        found = audit.probe(tls_target(server.port, guard_name="payments"))
    assert found.level == audit.OK, found.findings
    assert found.dns_seconds is not None and found.connect_seconds is not None
    assert found.tls_days_left is not None and 89 < found.tls_days_left <= 90
    assert found.timeout == "2 s per attempt"


def test_a_certificate_expiring_within_14_days_warns(trusted: Any) -> None:
    guard("payments", timeout=2)
    with trusted(days=5) as server:
        found = audit.probe(tls_target(server.port, guard_name="payments"))
    assert found.level == audit.WARNING
    assert found.tls_days_left is not None and 4 < found.tls_days_left <= 5
    assert any("expires in 5.0 day(s)" in text for _, text in found.findings), found.findings


def test_an_expired_certificate_is_an_error_with_its_days(trusted: Any) -> None:
    guard("payments", timeout=2)
    with trusted(days=-3) as server:
        found = audit.probe(tls_target(server.port, guard_name="payments"))
    assert found.level == audit.ERROR
    assert found.tls_days_left is not None and -4 < found.tls_days_left <= -3
    assert any("expired" in text for _, text in found.findings), found.findings


def test_an_untrusted_certificate_is_an_error(settings: Any, tmp_path: Path) -> None:
    _, certificate, key = certificates(tmp_path, days=90)  # its CA is not trusted
    with TLSServer(certificate, key) as server:
        found = audit.probe(tls_target(server.port))
    assert found.level == audit.ERROR
    assert any("TLS certificate refused" in text for _, text in found.findings)
    assert found.tls_days_left is not None and 89 < found.tls_days_left <= 90


def test_a_closed_port_is_an_error() -> None:
    port = free_port()
    found = audit.probe(audit.Target("gone", "AUDIT_ENDPOINTS", "http", "127.0.0.1", port))
    assert found.level == audit.ERROR
    assert found.connect_seconds is None
    assert any(f"127.0.0.1:{port} failed" in text for _, text in found.findings)


def test_a_name_that_does_not_resolve_is_an_error(monkeypatch: Any) -> None:
    def no_answer(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_answer)
    found = audit.probe(audit.Target("api", "AUDIT_ENDPOINTS", "https", "api.internal", 443))
    assert found.level == audit.ERROR
    assert any("Resolving api.internal failed" in text for _, text in found.findings)


def test_a_hung_resolver_is_bounded_by_the_audit_timeout(monkeypatch: Any, settings: Any) -> None:
    import threading

    release = threading.Event()

    def hang(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        raise socket.gaierror(socket.EAI_AGAIN, "late")

    settings.STABILITY = {**settings.STABILITY, "AUDIT_TIMEOUT": 0.2}
    monkeypatch.setattr(socket, "getaddrinfo", hang)
    try:
        found = audit.probe(audit.Target("api", "AUDIT_ENDPOINTS", "https", "api.internal", 443))
    finally:
        release.set()
    assert any("no answer within 0.2 s" in text for _, text in found.findings)


def test_guards_without_a_timeout_and_endpoints_without_a_guard() -> None:
    guard("ledger", timeout=0)
    guard("search", mode="off")
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        none = audit.probe(
            audit.Target("ledger", "AUDIT_ENDPOINTS", "http", "127.0.0.1", port, "ledger")
        )
        off = audit.probe(
            audit.Target("search", "AUDIT_ENDPOINTS", "http", "127.0.0.1", port, "search")
        )
        bare = audit.probe(audit.Target("crm", "AUDIT_ENDPOINTS", "http", "127.0.0.1", port))
    assert none.level == audit.ERROR and none.timeout == "none"
    assert off.level == audit.ERROR and off.timeout == "guard off"
    assert bare.level == audit.WARNING and bare.timeout == "no guard"


def test_the_targets_come_from_the_settings(settings: Any) -> None:
    guard("http:api.example.com", timeout=2)
    settings.STABILITY = {
        **settings.STABILITY,
        "AUDIT_ENDPOINTS": {
            "payments": "https://payments.example.com/v1",
            "crm": "http://crm:8080",
        },
    }
    found = {t.name: t for t in audit.targets()}
    payments = found["payments"]
    assert (payments.scheme, payments.host, payments.port, payments.tls) == (
        "https",
        "payments.example.com",
        443,
        True,
    )
    assert found["crm"].port == 8080 and not found["crm"].tls
    assert found["database default"].port == 5432
    assert found["cache default"].port == 6379
    # A guarded host with no URL is resolved, with nothing to connect to.
    assert found["http:api.example.com"].port is None
    assert found["http:api.example.com"].guard == "http:api.example.com"


def test_certificate_days_are_counted_from_the_expiry_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    days, expires = audit.certificate_days_left("Jan 15 00:00:00 2026 GMT", now)
    assert days == 14 and expires.startswith("2026-01-15")
    assert audit.certificate_days_left("Dec 31 00:00:00 2025 GMT", now + timedelta(0))[0] == -1


def run(*args: str) -> tuple[str, int]:
    out = StringIO()
    try:
        call_command("stability_audit", *args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), exc.returncode
    return out.getvalue(), 0


def test_the_command_exits_0_when_all_is_well_and_1_on_errors(
    monkeypatch: Any, trusted: Any, settings: Any
) -> None:
    from django_stability.management.commands import stability_audit

    guard("payments", timeout=2)
    with trusted(days=90) as server:
        healthy = [tls_target(server.port, guard_name="payments")]
        monkeypatch.setattr(stability_audit, "targets", lambda: healthy)
        out, code = run()
        assert code == 0, out
        assert "payments" in out and "https://localhost" in out
        out, code = run("--json")
        report = json.loads(out)
        assert report["probes"][0]["tls_days_left"] > 89
        assert report["probes"][0]["level"] == "ok"
        assert run("--skip-checks-run", "--fail-level", "warning")[1] == 0

    with trusted(days=5) as server:
        expiring = [tls_target(server.port, guard_name="payments")]
        monkeypatch.setattr(stability_audit, "targets", lambda: expiring)
        # A warning does not fail the deploy, unless asked to.
        assert run("--skip-checks-run")[1] == 0
        assert run("--skip-checks-run", "--fail-level", "warning")[1] == 1

    monkeypatch.setattr(stability_audit, "targets", list)
    registry.register(ConcurrencySpec(name="per-user", path_prefixes=("/api/",), key="user"))
    out, code = run()
    assert code == 1  # a system check error (E021) fails the audit
    assert "django_stability.E021" in out
    assert run("--skip-checks-run")[1] == 0
