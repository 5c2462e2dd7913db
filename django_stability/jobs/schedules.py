"""Jittered schedules and staggered fan-out: no more everything at 00:00:00.

Periodic tasks
    A message that carries the header ``stability_jitter`` (seconds) is held
    back by a random delay within that window when it is published, whatever
    sent it: celery beat's default scheduler, django-celery-beat's database
    scheduler (set the header in the periodic task's "headers" field),
    redbeat, or plain code. ``jittered(entry, window)`` adds the header to a
    ``beat_schedule`` entry.

Fan-out
    ``spread(signatures, over=..., rate=...)`` sends a large batch so that it
    arrives over a window instead of at once. Countdowns past a horizon (well
    under the broker's visibility timeout, beyond which a Redis or SQS broker
    would deliver a waiting message twice) are not sent as countdowns: a relay
    task carries them and sends them when their time is near.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from celery import shared_task
from celery.canvas import Signature, signature
from celery.signals import before_task_publish
from django.utils import timezone

from ..ratelimit import parse_rate
from . import broker

logger = logging.getLogger("django_stability.jobs")

#: The message header that asks for a jittered start, in seconds.
JITTER_HEADER = "stability_jitter"
#: The longest countdown ``spread()`` gives a message directly, at most.
DEFAULT_HORIZON = broker.DEFAULT_HORIZON
RELAY_TASK = "django_stability.spread_relay"


def jittered(entry: Mapping[str, Any], window: float) -> dict[str, Any]:
    """A copy of a ``beat_schedule`` entry whose runs start at a random offset in ``window`` s."""
    if window < 0:
        raise ValueError(f"A jitter window is a number of seconds of at least 0; got {window!r}.")
    result = dict(entry)
    options = dict(result.get("options") or {})
    headers = dict(options.get("headers") or {})
    headers[JITTER_HEADER] = float(window)
    options["headers"] = headers
    result["options"] = options
    return result


def jitter_eta(
    eta: datetime | None, expires: datetime | None, window: float, now: datetime, offset: float
) -> datetime:
    """The new start of a message: ``offset`` (in [0, window]) after its planned start.

    Never past its expiry: a jittered message that would expire before it
    starts is moved to just before the expiry instead.
    """
    start = eta if eta is not None and eta > now else now
    new = start + timedelta(seconds=min(max(offset, 0.0), window))
    if expires is not None and new >= expires:
        new = max(start, expires - timedelta(seconds=1))
    return new


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=dt_timezone.utc)


def _on_before_publish(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    if not headers or JITTER_HEADER not in headers:
        return
    raw = headers.pop(JITTER_HEADER)
    try:
        window = float(raw)
    except (TypeError, ValueError):
        logger.error("Ignoring %s=%r on %s: not a number of seconds", JITTER_HEADER, raw, headers)
        return
    if window <= 0:
        return
    now = timezone.now()
    eta = jitter_eta(
        _parse_time(headers.get("eta")),
        _parse_time(headers.get("expires")),
        window,
        now,
        random.uniform(0.0, window),
    )
    headers["eta"] = eta.isoformat()


before_task_publish.connect(_on_before_publish, dispatch_uid="django_stability.jobs.jitter")


def plan_spread(
    count: int,
    *,
    over: float | None = None,
    rate: float | None = None,
    jitter: bool = True,
    rng: random.Random | None = None,
) -> list[float]:
    """Countdowns for ``count`` messages: evenly ``over`` a window, at most ``rate`` per second.

    Each message gets its own slot (window / count, or 1 / rate, whichever is
    longer) and, with ``jitter``, a random point within it, so that the batch
    never lines up into bursts. Sorted, from 0.
    """
    if count < 0:
        raise ValueError("count must be 0 or more")
    if over is None and rate is None:
        raise ValueError("spread() needs over= (seconds), rate= (per second), or both.")
    if over is not None and over < 0:
        raise ValueError(f"over= is a number of seconds of at least 0; got {over!r}.")
    if rate is not None and rate <= 0:
        raise ValueError(f"rate= is a number of messages per second above 0; got {rate!r}.")
    if count == 0:
        return []
    slot = max((over or 0.0) / count, 1.0 / rate if rate else 0.0)
    rng = rng or random.Random()
    return [i * slot + (rng.uniform(0.0, slot) if jitter else 0.0) for i in range(count)]


def _rate_per_second(rate: float | str | None) -> float | None:
    if rate is None or isinstance(rate, (int, float)):
        return None if rate is None else float(rate)
    count, period = parse_rate(rate)
    return count / period


@dataclass(frozen=True)
class SpreadResult:
    """What ``spread()`` did: messages sent now, messages left to relays, the window used."""

    sent: int
    relayed: int
    relays: int
    window: float


def spread(
    signatures: Iterable[Signature[Any] | Mapping[str, Any]],
    *,
    over: float | None = None,
    rate: float | str | None = None,
    jitter: bool = True,
    horizon: float | None = None,
    relay_queue: str | None = None,
    app: Any = None,
) -> SpreadResult:
    """Send ``signatures`` spread over a window instead of all at once (the marketing blast).

    ``over`` is the window in seconds; ``rate`` the most messages per second
    (a number, or a rate such as ``"100/s"`` or ``"6000/m"``); with both, the
    slower of the two wins. Messages due within ``horizon`` seconds (default:
    the smaller of 300 s and a quarter of the broker's visibility timeout)
    are sent now with their countdown; later ones go in relay tasks, one per
    horizon, that send them when their turn is near. The relays go to
    ``relay_queue``, by default the queue of the first signature (or the
    app's default queue).
    """
    app = app or broker.celery_app()
    sigs = [s if isinstance(s, Signature) else signature(dict(s)) for s in signatures]
    countdowns = plan_spread(len(sigs), over=over, rate=_rate_per_second(rate), jitter=jitter)
    if horizon is None:
        horizon = broker.countdown_horizon(app)
    if horizon <= 0:
        raise ValueError(f"horizon= must be a number of seconds above 0; got {horizon!r}.")
    sent = 0
    later: dict[int, list[tuple[dict[str, Any], float]]] = {}
    for sig, countdown in zip(sigs, countdowns, strict=True):
        if countdown < horizon:
            _send(sig, countdown, app)
            sent += 1
        else:
            slice_index = int(countdown // horizon)
            later.setdefault(slice_index, []).append((dict(sig), countdown - slice_index * horizon))
    relay = app.tasks[RELAY_TASK]
    if relay_queue is None and sigs:
        relay_queue = sigs[0].options.get("queue")
    for slice_index, batch in sorted(later.items()):
        relay.apply_async(
            kwargs={"batch": [[sig, round(countdown, 3)] for sig, countdown in batch]},
            countdown=slice_index * horizon,
            queue=relay_queue or broker.default_queue(app),
        )
    window = countdowns[-1] if countdowns else 0.0
    return SpreadResult(sent, sum(len(b) for b in later.values()), len(later), window)


def _send(sig: Signature[Any], countdown: float, app: Any) -> None:
    signature(dict(sig), app=app).apply_async(countdown=countdown)


@shared_task(name=RELAY_TASK, ignore_result=True, acks_late=True)
def spread_relay(batch: Sequence[Sequence[Any]]) -> int:
    """Send a slice of a spread batch, each message with what is left of its countdown."""
    from celery import current_app

    app = getattr(current_app, "_get_current_object", lambda: current_app)()
    for raw, countdown in batch:
        _send(signature(dict(raw)), float(countdown), app)
    return len(batch)
