"""The job policy: how a background job is started, bounded and kept.

Tuned in the admin ("job policies") per job name; the decorator's arguments
are the code defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

from ..policies import PolicySpec, parse_float, parse_int, registry, spec_field


def _seconds(raw: Any) -> float:
    return parse_float(raw, minimum=0)


def _positive_seconds(raw: Any) -> float:
    value = parse_float(raw, minimum=0)
    if value <= 0:
        raise ValueError(f"Expected a number of seconds greater than 0; got {raw!r}.")
    return value


@registry.register_kind
@dataclass(frozen=True)
class JobSpec(PolicySpec):
    """A background job's policy: jittered start, time limits, dedup, backpressure, lifetime."""

    kind = "job"
    verbose_name = "job"

    jitter: float = spec_field(
        0.0,
        help="Each job starts after a random delay between 0 and this many seconds, so that "
        "many jobs asked for at once do not all start at once.",
        parse=_seconds,
        format="seconds, e.g. 30",
    )
    soft_time_limit: float | None = spec_field(
        None,
        help="After this many seconds of running the job is told to stop: it cleans up and "
        "ends failed with a message saying so. Empty: no soft limit.",
        parse=_positive_seconds,
        format="seconds, e.g. 240",
    )
    time_limit: float | None = spec_field(
        None,
        help="After this many seconds of running the worker process is killed and the job "
        "ends failed. Empty: no hard limit.",
        parse=_positive_seconds,
        format="seconds, e.g. 300",
    )
    max_active_per_owner: int | None = spec_field(
        None,
        help="How many jobs of this name one user may have queued or running at once; "
        "more are refused with 429. Empty: no limit.",
        parse=lambda raw: parse_int(raw, minimum=1),
        format="a whole number of at least 1",
    )
    queue: str = spec_field(
        "",
        help="The Celery queue the job is sent to. Empty: the app's task_default_queue.",
    )
    max_queue_depth: int | None = spec_field(
        None,
        help="Refuse new jobs (503 with Retry-After, nothing enqueued) while the queue holds "
        "this many messages or more, counting jobs waiting out their jittered start. "
        "Empty: never refuse.",
        parse=lambda raw: parse_int(raw, minimum=1),
        format="a whole number of at least 1",
    )
    retry_after: float = spec_field(
        30.0,
        help="Seconds a client refused because the queue is full is told to wait (Retry-After).",
        parse=_positive_seconds,
        format="seconds, e.g. 30",
    )
    result_lifetime: float = spec_field(
        86400.0,
        help="Seconds a finished job and its file are kept before the cleanup deletes the "
        "file and marks the job expired.",
        parse=_positive_seconds,
        format="seconds, e.g. 86400 for a day",
    )
    max_redeliveries: int = spec_field(
        1,
        help="How many times a job is run again after the worker running it was lost "
        "(killed, out of memory); after that it ends failed.",
        parse=lambda raw: parse_int(raw, minimum=0),
        format="a whole number, 0 or more",
    )
    dedup: bool = spec_field(
        True,
        help="A second request for the same job (same user, name and parameters) while one "
        "is queued or running gets the existing job instead of a new one.",
    )
    lock_ttl: float = spec_field(
        600.0,
        help="Seconds the dedup lock lives without news from the job when it has no hard "
        "time limit (renewed when the job starts and when it reports progress).",
        parse=_positive_seconds,
        format="seconds, e.g. 600",
    )

    def check(self) -> None:
        errors: dict[str, str] = {}
        if self.jitter < 0:
            errors["jitter"] = "Expected a number of seconds of at least 0."
        if (
            self.soft_time_limit is not None
            and self.time_limit is not None
            and self.soft_time_limit >= self.time_limit
        ):
            errors["soft_time_limit"] = (
                f"The soft time limit ({self.soft_time_limit:g} s) must be shorter than the "
                f"hard one ({self.time_limit:g} s), or the job never gets to clean up."
            )
        if errors:
            raise ValidationError(errors)

    @property
    def max_attempts(self) -> int:
        """Runs allowed in all: the first one and the redeliveries."""
        return 1 + self.max_redeliveries

    @property
    def lock_ttl_while_running(self) -> float:
        """How long the dedup lock lives once the job runs: its hard limit, or ``lock_ttl``."""
        return self.time_limit if self.time_limit is not None else self.lock_ttl
