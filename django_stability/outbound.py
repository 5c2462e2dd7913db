"""Outbound HTTP with the defences on by default: timeouts, a guard per host, bounded DNS.

``session()`` is a ``requests.Session`` and ``httpx_client()`` /
``async_httpx_client()`` are httpx clients (when httpx is installed) that:

* always have connect and read timeouts (``GUARD_CONNECT_TIMEOUT``,
  ``GUARD_READ_TIMEOUT``, or the call's own ``timeout``), capped by the
  deadline in force (a guard's, a ``timeout()`` block's);
* call each host through the guard ``http:<host>`` (its breaker, bulkhead,
  timeout and retry policies can be tuned in the admin under that name):
  responses 5xx and 429 count as failures; GET, HEAD, OPTIONS, PUT and DELETE
  are retried (they are idempotent), POST and PATCH are not;
* resolve host names within the connect timeout: ``getaddrinfo`` ignores
  socket timeouts, so a hung resolver would hold the caller without end. The
  lookup runs in a worker thread the caller can leave behind (at most
  ``DNS_LOOKUPS`` at once), answers are kept ``GUARD_DNS_CACHE_TTL`` seconds,
  and a stale answer is used when a fresh one cannot be had in time.

A read timeout bounds each wait for data, not the whole response: a server
that drips bytes can take longer than it. ``timeout_mode="thread"`` on the
host's guard bounds the whole call.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError

from .bulkhead import get_bulkhead
from .bulkhead import register_spec as register_bulkhead
from .conf import settings
from .exceptions import BulkheadFull, DeadlineExceeded
from .guard import Guard, guard
from .timeouts import bounded, run_in_thread

logger = logging.getLogger("django_stability.outbound")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
#: Name lookups allowed to run at once per process (a hung resolver holds at most these threads).
DNS_LOOKUPS = 4
#: How much longer than its TTL a stale answer may stand in for a fresh one.
STALE_FACTOR = 60
#: Host names whose answers are kept, at most.
DNS_CACHE_SIZE = 1024


def http_failure(response: Any) -> bool:
    """A response that says the dependency is failing or overloaded: 5xx, or 429."""
    status = int(getattr(response, "status_code", 0))
    return status >= 500 or status == 429


def guard_name(host: str, prefix: str = "http:") -> str:
    """The guard (and breaker and bulkhead) policy name of calls to ``host``."""
    return f"{prefix}{host.lower()}"


# Name resolution within a deadline ---------------------------------------------------


class Resolver:
    """``getaddrinfo`` within a time bound, with a cache that serves stale answers in need."""

    def __init__(
        self,
        lookup: Callable[..., list[Any]] = socket.getaddrinfo,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.clock = clock
        self._lock = threading.Lock()
        self._answers: OrderedDict[tuple[str, int], tuple[float, float, str]] = OrderedDict()

    def address(self, host: str, port: int, timeout: float | None = None) -> str:
        """An address to connect to for ``host``, found within ``timeout`` (and the deadline).

        Raises ``socket.gaierror`` when no answer, fresh or stale, is had in time.
        """
        try:
            ipaddress.ip_address(host.strip("[]"))
            return host
        except ValueError:
            pass
        key = (host.lower(), port)
        now = self.clock()
        with self._lock:
            cached = self._answers.get(key)
        if cached is not None and now < cached[0]:
            return cached[2]
        limit = settings.GUARD_DNS_TIMEOUT
        if timeout is not None:
            limit = min(limit, timeout)
        limit = bounded(limit) or 0.0
        try:
            if limit <= 0:
                raise DeadlineExceeded("no time left to resolve the name")
            address = self._lookup(host, port, limit)
        except (OSError, DeadlineExceeded, BulkheadFull) as error:
            if cached is not None and now < cached[1]:
                logger.warning(
                    "Resolving %s failed (%s); using the last answer, %s.", host, error, cached[2]
                )
                return cached[2]
            if isinstance(error, socket.gaierror):
                raise
            raise socket.gaierror(
                socket.EAI_AGAIN, f"Could not resolve {host} within {limit:.3g} s ({error})"
            ) from error
        ttl = settings.GUARD_DNS_CACHE_TTL
        with self._lock:
            self._answers[key] = (now + ttl, now + ttl * STALE_FACTOR, address)
            self._answers.move_to_end(key)
            while len(self._answers) > DNS_CACHE_SIZE:
                self._answers.popitem(last=False)
        return address

    def _lookup(self, host: str, port: int, limit: float) -> str:
        register_bulkhead("dns", {"max_concurrent": DNS_LOOKUPS})
        slots = get_bulkhead("dns")
        slot = slots.acquire(wait=0)
        answers = run_in_thread(
            self.lookup,
            (host, port, 0, socket.SOCK_STREAM),
            {},
            limit,
            name=f"resolving {host}",
            on_end=lambda: slots.release(slot),
        )
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        return str(answers[0][4][0])

    def forget(self) -> None:
        with self._lock:
            self._answers.clear()


#: The resolver of this process.
resolver = Resolver()


def _connect_timeout(timeout: Any) -> float | None:
    return float(timeout) if isinstance(timeout, (int, float)) else None


def _new_conn_resolved(
    connection: HTTPConnection, new_conn: Callable[[], socket.socket]
) -> socket.socket:
    name = connection._dns_host
    try:
        address = resolver.address(name, connection.port, _connect_timeout(connection.timeout))
    except socket.gaierror as error:
        raise NameResolutionError(connection.host, connection, error) from error
    # Connect to the address; the host name stays for the Host header, SNI and the
    # certificate check, which read it after this returns.
    connection._dns_host = address
    try:
        return new_conn()
    finally:
        connection._dns_host = name


class BoundedDNSHTTPConnection(HTTPConnection):
    """urllib3's connection, resolving its host with ``resolver`` (within the connect timeout)."""

    def _new_conn(self) -> socket.socket:
        return _new_conn_resolved(self, super()._new_conn)


class BoundedDNSHTTPSConnection(HTTPSConnection):
    """The HTTPS twin of ``BoundedDNSHTTPConnection``."""

    def _new_conn(self) -> socket.socket:
        return _new_conn_resolved(self, super()._new_conn)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = BoundedDNSHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = BoundedDNSHTTPSConnection


class BoundedDNSAdapter(HTTPAdapter):
    """A requests adapter whose connections resolve host names within the connect timeout."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


# requests -------------------------------------------------------------------------------


class GuardedSession(requests.Session):
    """A ``requests.Session`` with timeouts by default and a guard per host.

    ``timeout`` is the default ``(connect, read)``; ``guards`` gives code
    defaults per host, e.g. ``{"api.example.com": {"timeout": 2, "breaker":
    {"failure_rate_threshold": 25}}}`` (the fields of ``guard()``); ``prefix``
    starts every guard name. With ``per_host_guards=False`` calls keep their
    timeouts, the deadline and bounded DNS but go through no guard: for code
    that already runs under a guard of its own (guards should not nest, or
    their retries multiply).
    """

    def __init__(
        self,
        *,
        timeout: tuple[float, float] | None = None,
        guards: dict[str, dict[str, Any]] | None = None,
        prefix: str = "http:",
        per_host_guards: bool = True,
    ) -> None:
        super().__init__()
        self.per_host_guards = per_host_guards
        self.default_timeout = timeout
        self.guard_options = {host.lower(): options for host, options in (guards or {}).items()}
        self.prefix = prefix
        self._guards: dict[tuple[str, bool], Guard] = {}
        adapter = BoundedDNSAdapter()
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def guard_for(self, host: str, method: str) -> Guard:
        """The guard of calls to ``host`` with ``method``."""
        idempotent = method.upper() in IDEMPOTENT_METHODS
        key = (host.lower(), idempotent)
        found = self._guards.get(key)
        if found is None:
            options = dict(self.guard_options.get(key[0], {}))
            found = guard(
                guard_name(key[0], self.prefix),
                idempotent=idempotent,
                failure_result=http_failure,
                **options,
            )
            self._guards[key] = found
        return found

    def timeouts(self, given: Any = None) -> tuple[float | None, float | None]:
        """(connect, read) for one attempt: the call's or the default, capped by the deadline."""
        if given is None:
            given = self.default_timeout or (
                settings.GUARD_CONNECT_TIMEOUT,
                settings.GUARD_READ_TIMEOUT,
            )
        if isinstance(given, tuple):
            connect, read = given
        else:
            connect = read = given
        return bounded(connect), bounded(read)

    def request(self, method: str | bytes, url: str | bytes, **kwargs: Any) -> Any:  # type: ignore[override]
        text_url = url.decode() if isinstance(url, bytes) else str(url)
        text_method = method.decode() if isinstance(method, bytes) else str(method)
        host = urlsplit(text_url).hostname
        given = kwargs.pop("timeout", None)

        def attempt() -> requests.Response:
            return requests.Session.request(
                self, text_method, text_url, timeout=self.timeouts(given), **kwargs
            )

        if not host or not self.per_host_guards:
            return attempt()
        return self.guard_for(host, text_method).call(attempt)


def session(**kwargs: Any) -> GuardedSession:
    """A new ``GuardedSession`` (see its docstring for the arguments)."""
    return GuardedSession(**kwargs)


# httpx ----------------------------------------------------------------------------------

try:
    import httpcore
    import httpx
except ImportError:  # pragma: no cover - httpx is optional
    httpx = None  # type: ignore[assignment]


def _require_httpx() -> None:
    if httpx is None:  # pragma: no cover - httpx is optional
        raise ImportError("httpx_client() needs httpx: pip install httpx")


def _attempt_timeouts(request: Any, default: Any) -> dict[str, float | None]:
    """The request's timeouts (or the client's), capped by the deadline in force."""
    given = request.extensions.get("timeout") or default.as_dict()
    return {key: bounded(value) for key, value in given.items()}


def _guard_of(guards: dict[tuple[str, bool], Guard], host: str, method: str, prefix: str) -> Guard:
    idempotent = method.upper() in IDEMPOTENT_METHODS
    key = (host.lower(), idempotent)
    found = guards.get(key)
    if found is None:
        found = guards[key] = guard(
            guard_name(key[0], prefix), idempotent=idempotent, failure_result=http_failure
        )
    return found


if httpx is not None:

    class BoundedDNSBackend(httpcore.SyncBackend):
        """httpcore's network backend, resolving host names with ``resolver``."""

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> httpcore.NetworkStream:
            try:
                address = resolver.address(host, port, timeout)
            except socket.gaierror as error:
                raise httpcore.ConnectError(str(error)) from error
            return super().connect_tcp(address, port, timeout, local_address, socket_options)

    class GuardedTransport(httpx.BaseTransport):
        """A httpx transport that calls each host through its guard, within the deadline."""

        def __init__(self, default_timeout: httpx.Timeout, prefix: str = "http:") -> None:
            self.inner = httpx.HTTPTransport()
            self.default_timeout = default_timeout
            self.prefix = prefix
            self.guards: dict[tuple[str, bool], Guard] = {}
            # httpx takes no network backend; this reaches into its pool, and leaves name
            # resolution as it is should that layout change.
            pool = getattr(self.inner, "_pool", None)
            if isinstance(pool, httpcore.ConnectionPool) and hasattr(pool, "_network_backend"):
                pool._network_backend = BoundedDNSBackend()

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            def attempt() -> httpx.Response:
                request.extensions["timeout"] = _attempt_timeouts(request, self.default_timeout)
                return self.inner.handle_request(request)

            chosen = _guard_of(self.guards, request.url.host, request.method, self.prefix)
            return chosen.call(attempt)

        def close(self) -> None:
            self.inner.close()

    class GuardedAsyncTransport(httpx.AsyncBaseTransport):
        """The async twin of ``GuardedTransport`` (httpx's async backends already resolve
        names within the connect timeout)."""

        def __init__(self, default_timeout: httpx.Timeout, prefix: str = "http:") -> None:
            self.inner = httpx.AsyncHTTPTransport()
            self.default_timeout = default_timeout
            self.prefix = prefix
            self.guards: dict[tuple[str, bool], Guard] = {}

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            async def attempt() -> httpx.Response:
                request.extensions["timeout"] = _attempt_timeouts(request, self.default_timeout)
                return await self.inner.handle_async_request(request)

            chosen = _guard_of(self.guards, request.url.host, request.method, self.prefix)
            return await chosen.acall(attempt)

        async def aclose(self) -> None:
            await self.inner.aclose()


def _default_httpx_timeout(given: Any) -> Any:
    if given is not None:
        return given if isinstance(given, httpx.Timeout) else httpx.Timeout(given)
    return httpx.Timeout(settings.GUARD_READ_TIMEOUT, connect=settings.GUARD_CONNECT_TIMEOUT)


def httpx_client(*, prefix: str = "http:", **kwargs: Any) -> Any:
    """An ``httpx.Client`` with default timeouts, a guard per host and bounded DNS."""
    _require_httpx()
    timeout = _default_httpx_timeout(kwargs.pop("timeout", None))
    transport = GuardedTransport(timeout, prefix)
    return httpx.Client(transport=transport, timeout=timeout, **kwargs)


def async_httpx_client(*, prefix: str = "http:", **kwargs: Any) -> Any:
    """An ``httpx.AsyncClient`` with default timeouts and a guard per host."""
    _require_httpx()
    timeout = _default_httpx_timeout(kwargs.pop("timeout", None))
    transport = GuardedAsyncTransport(timeout, prefix)
    return httpx.AsyncClient(transport=transport, timeout=timeout, **kwargs)
