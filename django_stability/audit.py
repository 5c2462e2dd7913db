"""Live probes of the integration points, for ``manage.py stability_audit``.

The system checks read the settings; these probes go and look. For each
integration point the settings name, they measure how long the name takes to
resolve and the connection to open, read how many days the TLS certificate
has left (an expired certificate is one of the book's cascade triggers: every
call fails at once, on the day nobody watched), and say whether the guard in
front of it has a timeout.

The integration points come from:

* ``STABILITY["AUDIT_ENDPOINTS"]``: name -> URL, for the HTTP APIs and any
  other service (the name, or ``http:<host>``, is the guard in front of it);
* ``DATABASES``, ``CACHES`` (Redis), ``STABILITY["STORE_URL"]`` and the
  Celery broker of the background jobs;
* guards named ``http:<host>`` (made by ``outbound.session()``): their host is
  resolved, with no port to connect to.

Every probe is bounded by ``AUDIT_TIMEOUT``; nothing here runs on a request.
"""

from __future__ import annotations

import concurrent.futures
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from .conf import settings

OK, WARNING, ERROR = "ok", "warning", "error"
LEVELS = (OK, WARNING, ERROR)

DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "redis": 6379,
    "rediss": 6379,
    "amqp": 5672,
    "amqps": 5671,
    "postgres": 5432,
    "postgresql": 5432,
    "mysql": 3306,
    "oracle": 1521,
}
TLS_SCHEMES = frozenset({"https", "rediss", "amqps"})


@dataclass(frozen=True)
class Target:
    """One integration point to probe."""

    name: str
    source: str
    scheme: str
    host: str
    port: int | None
    guard: str | None = None

    @property
    def tls(self) -> bool:
        return self.scheme in TLS_SCHEMES

    @property
    def address(self) -> str:
        return f"{self.scheme}://{self.host}" + (f":{self.port}" if self.port else "")


@dataclass
class Probe:
    """What probing one target found."""

    target: Target
    dns_seconds: float | None = None
    connect_seconds: float | None = None
    tls_days_left: float | None = None
    tls_expires: str | None = None
    timeout: str = ""
    findings: list[tuple[str, str]] = field(default_factory=list)

    def add(self, level: str, message: str) -> None:
        self.findings.append((level, message))

    @property
    def level(self) -> str:
        """The worst finding: "error", "warning" or "ok"."""
        found = {level for level, _ in self.findings}
        return next((level for level in (ERROR, WARNING) if level in found), OK)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.target.name,
            "source": self.target.source,
            "address": self.target.address,
            "guard": self.target.guard,
            "dns_ms": None if self.dns_seconds is None else round(self.dns_seconds * 1000, 2),
            "connect_ms": None
            if self.connect_seconds is None
            else round(self.connect_seconds * 1000, 2),
            "tls_days_left": None if self.tls_days_left is None else round(self.tls_days_left, 1),
            "tls_expires": self.tls_expires,
            "timeout": self.timeout,
            "level": self.level,
            "findings": [{"level": level, "message": text} for level, text in self.findings],
        }


# Finding the targets ---------------------------------------------------------------------


def target_from_url(name: str, url: str, source: str, guard: str | None = None) -> Target | None:
    """A target for ``url``, or None when it has no host to probe (a unix socket, a file)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower().split("+")[0]
    if not parts.hostname:
        return None
    return Target(name, source, scheme, parts.hostname, port or DEFAULT_PORTS.get(scheme), guard)


def _guard_for(name: str, host: str | None) -> str | None:
    from .guard import GuardSpec
    from .policies import registry

    for candidate in (name, f"http:{host.lower()}" if host else None):
        if candidate and registry.get(GuardSpec, candidate) is not None:
            return candidate
    return None


def _redis_locations(config: Any) -> list[str]:
    location = config.get("LOCATION")
    items = location if isinstance(location, (list, tuple)) else str(location or "").split(",")
    return [str(item).strip() for item in items if "://" in str(item)]


def targets() -> list[Target]:
    """Every integration point the settings name, each once."""
    from .guard import GuardSpec
    from .policies import registry
    from .store import cache_kind

    found: list[Target] = []
    for name, url in settings.AUDIT_ENDPOINTS.items():
        host = urlsplit(url).hostname
        target = target_from_url(name, url, "AUDIT_ENDPOINTS", _guard_for(name, host))
        if target is not None:
            found.append(target)
    for alias, config in settings.DATABASES.items():
        engine = str(config.get("ENGINE", "")).rsplit(".", 1)[-1]
        host = str(config.get("HOST") or "")
        if not host or host.startswith("/") or engine not in DEFAULT_PORTS:
            continue
        port = int(config.get("PORT") or DEFAULT_PORTS[engine])
        found.append(Target(f"database {alias}", f"DATABASES[{alias!r}]", engine, host, port))
    for alias, config in settings.CACHES.items():
        if (
            cache_kind(config) not in ("django-redis", "django")
            and "redis" not in str(config.get("BACKEND", "")).lower()
        ):
            continue
        for url in _redis_locations(config):
            target = target_from_url(f"cache {alias}", url, f"CACHES[{alias!r}]")
            if target is not None:
                found.append(target)
    if settings.STORE_URL:
        target = target_from_url("store", settings.STORE_URL, "STORE_URL")
        if target is not None:
            found.append(target)
    found.extend(_broker_targets())
    probed = {t.host.lower() for t in found}
    for spec in registry.all(GuardSpec):
        host = spec.name.removeprefix("http:")
        if spec.name.startswith("http:") and host and host.lower() not in probed:
            found.append(Target(spec.name, "guard", "http", host, None, spec.name))
    unique: dict[tuple[str, int | None, str], Target] = {}
    for target in found:
        unique.setdefault((target.host.lower(), target.port, target.scheme), target)
    return list(unique.values())


def _broker_targets() -> list[Target]:
    from .jobs import JobSpec, broker
    from .policies import registry

    if not registry.all(JobSpec) and not settings.JOBS_CELERY_APP:
        return []
    try:
        url = broker.broker_url(broker.celery_app())
    except Exception:
        return []
    target = target_from_url("job broker", url, "Celery broker_url") if url else None
    return [target] if target is not None else []


# Probing ---------------------------------------------------------------------------------


def resolve(host: str, port: int | None, timeout: float) -> tuple[str, float]:
    """The first address of ``host`` and the seconds the lookup took.

    ``getaddrinfo`` ignores socket timeouts, so it runs in a thread the probe
    can leave behind; raises ``TimeoutError`` or ``socket.gaierror``.
    """
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    started = time.perf_counter()
    future = pool.submit(socket.getaddrinfo, host, port or 0, 0, socket.SOCK_STREAM)
    try:
        answers = future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"no answer within {timeout:g} s") from None
    finally:
        pool.shutdown(wait=False)
    if not answers:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
    return str(answers[0][4][0]), time.perf_counter() - started


def certificate_days_left(not_after: str, now: datetime) -> tuple[float, str]:
    """Days from ``now`` to a certificate's ``notAfter`` (as ``ssl`` gives it), and the date."""
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), timezone.utc)
    return (expires - now).total_seconds() / 86400, expires.isoformat()


def _unverified_expiry(address: str, target: Target, timeout: float) -> datetime | None:
    """The expiry of a certificate that failed verification (needs ``cryptography``)."""
    try:
        from cryptography import x509
    except ImportError:
        return None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((address, target.port or 443), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=target.host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    if not der:
        return None
    return x509.load_der_x509_certificate(der).not_valid_after_utc


def _check_tls(probe: Probe, address: str, timeout: float, now: datetime) -> None:
    target = probe.target
    context = ssl.create_default_context()
    if settings.AUDIT_CA_FILE:
        context.load_verify_locations(cafile=settings.AUDIT_CA_FILE)
    warn_days = settings.AUDIT_CERT_WARN_DAYS
    try:
        with (
            socket.create_connection((address, target.port or 443), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=target.host) as tls,
        ):
            certificate = tls.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        expiry = _unverified_expiry(address, target, timeout)
        if expiry is not None:
            probe.tls_days_left = (expiry - now).total_seconds() / 86400
            probe.tls_expires = expiry.isoformat()
        probe.add(ERROR, f"TLS certificate refused: {exc.verify_message or exc}")
        return
    except (OSError, ssl.SSLError) as exc:
        probe.add(ERROR, f"TLS handshake failed: {exc}")
        return
    not_after = (certificate or {}).get("notAfter")
    if not not_after:
        probe.add(WARNING, "The server's certificate carries no expiry date.")
        return
    probe.tls_days_left, probe.tls_expires = certificate_days_left(str(not_after), now)
    days = probe.tls_days_left
    if days < 0:
        probe.add(ERROR, f"The TLS certificate expired {-days:.0f} day(s) ago.")
    elif days < warn_days:
        probe.add(
            WARNING,
            f"The TLS certificate expires in {days:.1f} day(s) ({probe.tls_expires}); "
            f"renew it before it does (warning under {warn_days} days).",
        )


def _check_timeout(probe: Probe) -> None:
    from .guard import GuardSpec
    from .policies import registry

    target = probe.target
    if target.source.startswith(("DATABASES", "CACHES", "STORE_URL", "Celery")):
        probe.timeout = "see the system checks"
        return
    if target.guard is None:
        probe.timeout = "no guard"
        probe.add(
            WARNING,
            f"No guard protects {target.name!r}: name a guard() after it (or call it through "
            "django_stability.outbound), so that its calls have a timeout and a breaker.",
        )
        return
    spec = registry.get(GuardSpec, target.guard)
    if spec is None or spec.mode == "off":
        probe.timeout = "guard off"
        probe.add(ERROR, f"The guard {target.guard!r} is off: calls have no timeout.")
    elif not spec.timeout and not spec.total_timeout:
        probe.timeout = "none"
        probe.add(
            ERROR,
            f"The guard {target.guard!r} has no timeout (timeout and total_timeout are 0): "
            "a hung dependency holds every caller's thread.",
        )
    else:
        probe.timeout = (
            f"{spec.timeout:g} s per attempt" if spec.timeout else f"{spec.total_timeout:g} s"
        )


def probe(target: Target, *, now: datetime | None = None) -> Probe:
    """Probe one target: DNS, connect, TLS, and its guard's timeout."""
    timeout = settings.AUDIT_TIMEOUT
    now = now or datetime.now(timezone.utc)
    result = Probe(target)
    _check_timeout(result)
    try:
        address, result.dns_seconds = resolve(target.host, target.port, timeout)
    except (OSError, TimeoutError) as exc:
        result.add(ERROR, f"Resolving {target.host} failed: {exc}")
        return result
    if result.dns_seconds > settings.GUARD_DNS_TIMEOUT:
        result.add(
            WARNING,
            f"Resolving {target.host} took {result.dns_seconds:.2f} s, longer than "
            f"GUARD_DNS_TIMEOUT ({settings.GUARD_DNS_TIMEOUT:g} s).",
        )
    if target.port is None:
        return result
    started = time.perf_counter()
    try:
        with socket.create_connection((address, target.port), timeout=timeout):
            result.connect_seconds = time.perf_counter() - started
    except OSError as exc:
        result.add(ERROR, f"Connecting to {address}:{target.port} failed: {exc or 'timed out'}")
        return result
    if result.connect_seconds > settings.GUARD_CONNECT_TIMEOUT:
        result.add(
            WARNING,
            f"Connecting took {result.connect_seconds:.2f} s, longer than "
            f"GUARD_CONNECT_TIMEOUT ({settings.GUARD_CONNECT_TIMEOUT:g} s).",
        )
    if target.tls:
        _check_tls(result, address, timeout, now)
    return result


def probe_all(
    found: Iterable[Target] | None = None, *, run: Callable[[Target], Probe] = probe
) -> list[Probe]:
    """Probe every target, several at once (each is bounded by ``AUDIT_TIMEOUT``)."""
    chosen = list(targets() if found is None else found)
    if not chosen:
        return []

    def in_thread(target: Target) -> Probe:
        from django.db import connections

        try:
            return run(target)
        finally:
            connections.close_all()  # a policy reload in this thread opened one

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(chosen))) as pool:
        return list(pool.map(in_thread, chosen))
