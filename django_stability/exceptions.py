"""Exceptions raised by the protections.

Each carries what a caller needs to answer well: the name of the policy that
refused and, where waiting helps, ``retry_after`` in seconds. When one escapes a
view, ``StabilityMiddleware`` turns it into the matching response (429 or 503
with ``Retry-After``); without the middleware, ``RateLimited`` still falls back
on Django's 403 handling because it is a ``PermissionDenied``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from django_ratelimit.exceptions import Ratelimited as _DjangoRatelimited


class StabilityError(Exception):
    """Base of every refusal made by django-stability."""

    #: HTTP status the middleware answers with when this escapes a view.
    status_code = 503
    #: The problem type (RFC 9457) used in JSON answers.
    problem_type = "about:blank"
    default_message = "The service is temporarily unable to handle this request."

    def __init__(
        self,
        message: str | None = None,
        *,
        policy: str | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.policy = policy
        self.retry_after = retry_after
        #: Extra response headers (e.g. the RateLimit fields) for the refusal.
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.message)

    @property
    def retry_after_header(self) -> str | None:
        """``Retry-After`` in whole seconds, at least 1, never earlier than the truth."""
        if self.retry_after is None:
            return None
        return str(max(1, math.ceil(self.retry_after)))

    def __str__(self) -> str:
        parts = [self.message]
        if self.policy:
            parts.append(f"policy={self.policy!r}")
        if self.retry_after is not None:
            parts.append(f"retry_after={self.retry_after:.3g}s")
        return " ".join(parts)


class RateLimited(StabilityError, _DjangoRatelimited):  # type: ignore[misc]
    """A rate limit refused the request (HTTP 429).

    A subclass of django-ratelimit's ``Ratelimited``, so handlers written for
    that library keep working.
    """

    status_code = 429
    default_message = "Too many requests."


class Overloaded(StabilityError):
    """The site is shedding load and refused this request (HTTP 503)."""

    problem_type = "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
    default_message = "The service is temporarily over capacity."


class StoreUnavailable(StabilityError):
    """The shared-state store could not be reached and the policy fails closed."""

    default_message = "A protection could not reach its shared state and refuses to guess."


class ClientDenied(RateLimited):
    """The client is in a deny list of a rate-limit policy (HTTP 403, no point retrying)."""

    status_code = 403
    default_message = "Requests from this network are not accepted."


class PaginationRefused(StabilityError):
    """A page that would cost too much (an offset too deep) or makes no sense (HTTP 400)."""

    status_code = 400
    default_message = "This page cannot be served."


class BodyTooLarge(StabilityError):
    """The request body is larger than this route accepts (HTTP 413)."""

    status_code = 413
    default_message = "The request body is too large for this address."


class CacheWaitTimeout(StabilityError):
    """A caller waited the policy's ``wait`` for another's compute and no value came (HTTP 503).

    Raised only when the cache policy says ``on_wait_timeout = "raise"``; a
    caller that raises this has not computed anything.
    """

    default_message = "A value this page needs is being computed; try again shortly."


class QueueFull(Overloaded):
    """A job queue is deeper than its policy allows; nothing was enqueued (HTTP 503)."""

    default_message = "Too much work is waiting in the queue; try again later."


class TooManyJobs(StabilityError):
    """The user already has as many jobs of this kind queued or running as allowed (HTTP 429)."""

    status_code = 429
    default_message = "You already have as many jobs of this kind running as allowed."


class BreakerOpen(StabilityError):
    """A circuit breaker refused the call: its dependency is failing (HTTP 503).

    ``retry_after`` is the time left in the open state, when it is known.
    """

    default_message = "A dependency of this service is failing; calls to it are paused."


class BulkheadFull(StabilityError):
    """A bulkhead refused the call: the calls allowed at once are all in progress (HTTP 503)."""

    default_message = "Too many calls to a dependency are in progress; try again shortly."


class DeadlineExceeded(StabilityError, TimeoutError):
    """A call ran out of time (HTTP 503); also a built-in ``TimeoutError``."""

    default_message = "A dependency of this service did not answer in time."


#: Refusals made by a protection before the work it protects began: the work
#: never reached its dependency (a circuit breaker counts none of them), and
#: the same work may well be accepted later (a Celery task refused so is sent
#: again; see ``django_stability.jobs.tasks``).
REFUSALS: tuple[type[StabilityError], ...] = (
    RateLimited,
    Overloaded,
    StoreUnavailable,
    TooManyJobs,
    BreakerOpen,
    BulkheadFull,
    CacheWaitTimeout,
)


def worth_retrying_later(error: BaseException) -> bool:
    """True for a refusal that waiting may lift (not a client denied outright)."""
    return isinstance(error, REFUSALS) and not isinstance(error, ClientDenied)
