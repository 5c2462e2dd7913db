"""``StabilityMiddleware``: the protections that apply to every request.

One decision path, two thin entry points: ``__call__`` for WSGI and
``__acall__`` for ASGI run the same synchronous gates, in this order:

1. the policy snapshot is refreshed when due (no I/O until then);
2. each gate may refuse the request before the view runs; a gate that admits
   may need to hear how the request ended (to give back a slot).

A ``StabilityError`` escaping the view (an open breaker, a full bulkhead, a
rate limit raised by a decorator) becomes the matching 429 or 503 response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase

from . import responses
from .exceptions import StabilityError
from .policies import registry


class Gate(Protocol):
    """A protection applied by the middleware to every request."""

    def enter(self, request: HttpRequest) -> HttpResponseBase | None:
        """Refuse the request (return a response) or admit it (return None).

        A gate that may wait on I/O for a request also has ``may_block(request)``
        answering True for it; the async entry point then runs the gates in a
        worker thread, so that the event loop never waits on the store.
        """

    def leave(self, request: HttpRequest, response: HttpResponseBase | None) -> None:
        """The admitted request is over (``response`` is None when the view raised)."""


def default_gates() -> Sequence[Gate]:
    """The gates of the middleware, in the order they decide.

    Admission comes first: it does no I/O and refuses before anything else is
    spent on a request the process cannot take. Rate limits (one store round
    trip for all of them) come next, and cluster-wide concurrency limits (a
    lease that must be given back) last, after the cheaper refusals.
    """
    from .concurrency import ConcurrencyGate
    from .ratelimit import RateLimitGate
    from .shedding import AdmissionGate

    return (AdmissionGate(), RateLimitGate(), ConcurrencyGate())


def _never(request: HttpRequest) -> bool:
    return False


class StabilityMiddleware:
    """Admission and rate limits before the view; refusals from the view made into 429/503."""

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.gates = tuple(default_gates())
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        registry.refresh_if_due()
        entered, refusal = self._enter(request)
        if refusal is not None:
            return refusal
        response: HttpResponseBase | None = None
        try:
            response = self.get_response(request)  # type: ignore[assignment]
        finally:
            self._leave(entered, request, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if registry.refresh_due():
            # The refresh may read the database, which async code must not do.
            await sync_to_async(registry.refresh_if_due, thread_sensitive=True)()
        blocking = self._may_block(request)
        if blocking:
            # The store call must not hold the event loop; the decision path is the same.
            entered, refusal = await sync_to_async(self._enter, thread_sensitive=False)(request)
        else:
            entered, refusal = self._enter(request)
        if refusal is not None:
            return refusal
        response: HttpResponseBase | None = None
        try:
            response = await self.get_response(request)  # type: ignore[misc]
        finally:
            if blocking:
                # Giving back a lease is a store call too.
                await sync_to_async(self._leave, thread_sensitive=False)(entered, request, response)
            else:
                self._leave(entered, request, response)
        assert response is not None
        return response

    def _may_block(self, request: HttpRequest) -> bool:
        return any(getattr(gate, "may_block", _never)(request) for gate in self.gates)

    def _enter(self, request: HttpRequest) -> tuple[list[Gate], HttpResponseBase | None]:
        entered: list[Gate] = []
        for gate in self.gates:
            refusal = gate.enter(request)
            if refusal is not None:
                self._leave(entered, request, refusal)
                return [], refusal
            entered.append(gate)
        return entered, None

    @staticmethod
    def _leave(
        entered: list[Gate], request: HttpRequest, response: HttpResponseBase | None
    ) -> None:
        for gate in reversed(entered):
            gate.leave(request, response)

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponseBase | None:
        if isinstance(exception, StabilityError):
            return responses.refusal(request, exception)
        return None
