"""The cache's own guard around its server: a breaker, and this process as the fallback.

The cache server is an integration point like any other. Each protected call
runs in a ``Session``: it uses the server while the breaker lets it and the
server answers; after the first failure (an error, or the socket timeout) the
rest of the call is answered by the in-process ``LocalHome``, so one call waits
at most one socket timeout. After ``CACHE_BREAKER_THRESHOLD`` failures in a row
the breaker stops calling the server for ``CACHE_BREAKER_COOLDOWN`` seconds and
then lets one call probe it; calls meanwhile cost no network I/O, and each
process computes a key at most once per fresh period.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from ..store import StoreBreaker
from .home import Backoff, Home, Keys, LocalHome, Reading, Watcher

logger = logging.getLogger("django_stability.cache")

T = TypeVar("T")


class FailsafeHome:
    """``primary`` while it answers, ``fallback`` (this process) while it does not."""

    def __init__(
        self,
        primary: Home,
        fallback: LocalHome,
        breaker: StoreBreaker,
        failures: tuple[type[BaseException], ...],
        name: str = "",
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker
        self.failures = failures
        self.name = name
        if breaker.on_change is None:
            breaker.on_change = self._announce

    def _announce(self, state: str, previous: str, error: BaseException | None) -> None:
        from .. import signals

        if state == "open":
            logger.warning(
                "Cache %s unreachable (%s: %s); protected calls are answered by each process "
                "alone until it answers again.",
                self.name,
                type(error).__name__ if error else "error",
                error,
            )
        elif state == "closed":
            logger.warning("Cache %s reachable again.", self.name)
        signals.cache_state_changed.send(
            sender=FailsafeHome, cache=self.name, state=state, previous=previous, error=error
        )

    @property
    def degraded(self) -> bool:
        return self.breaker.state != "closed"

    def session(self) -> Session:
        return Session(self)


class Session:
    """The homes one protected call uses: the primary until it fails, then the fallback."""

    def __init__(self, guard: FailsafeHome) -> None:
        self.guard = guard
        self.degraded = False

    def _run(self, call: Callable[[Home], T]) -> T:
        guard = self.guard
        if not self.degraded and guard.breaker.allow():
            try:
                result = call(guard.primary)
            except guard.failures as exc:
                guard.breaker.record_failure(exc)
            else:
                guard.breaker.record_success()
                return result
        self.degraded = True
        return call(guard.fallback)

    def read(self, keys: Keys, **kwargs: Any) -> Reading:
        return self._run(lambda home: home.read(keys, **kwargs))

    def land(self, keys: Keys, **kwargs: Any) -> bool:
        return self._run(lambda home: home.land(keys, **kwargs))

    def release(self, keys: Keys, *, token: str, backoff: Backoff | None) -> None:
        self._run(lambda home: home.release(keys, token=token, backoff=backoff))

    def renew(self, keys: Keys, *, token: str, lease: float) -> bool:
        return self._run(lambda home: home.renew(keys, token=token, lease=lease))

    def watch(self, keys: Keys) -> Watcher:
        """A watcher woken by whichever home the value lands in."""
        watcher = Watcher()
        self.guard.fallback.add_watcher(keys, watcher)
        if not self.degraded and not self.guard.degraded:
            try:
                self.guard.primary.add_watcher(keys, watcher)
            except self.guard.failures:
                pass  # the waiter also looks again on its own
        return watcher
