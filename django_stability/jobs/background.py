"""``@background_job``: expensive work moved off the web thread, answered with 202 Accepted.

::

    @background_job("export-orders", jitter=10, soft_time_limit=240, time_limit=300)
    def export_orders(job, *, year):
        with job.result_file(f"orders-{year}.csv", "text/csv", encoding="utf-8") as out:
            for done, row in enumerate(rows(year)):
                out.write(row)
                job.progress(done / total)

    @require_POST
    def export_view(request):
        return export_orders.accept(request, year=int(request.POST["year"]))

``accept()`` answers 202 with ``Location`` (the job's status URL) and
``Retry-After``; the status URL answers JSON and 303 to the download when the
job is done (see ``django_stability.views``).
"""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from celery import shared_task
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, router, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone

from .. import responses, signals
from ..conf import settings
from ..exceptions import Overloaded, QueueFull, StabilityError, TooManyJobs
from ..policies import registry
from ..store import get_store
from . import backpressure, broker, locks, runner
from .policy import JobSpec

if TYPE_CHECKING:
    from ..models import Job

logger = logging.getLogger("django_stability.jobs")

F = TypeVar("F", bound=Callable[..., Any])

#: How many times a request looks for the job that holds the dedup lock
#: before it gives up (the holder may be a request that has not committed yet).
_DEDUP_LOOKS = 4


@dataclass(frozen=True)
class Submission:
    """The answer to a request for a job: the job, and whether this request created it."""

    job: Job
    created: bool


class BackgroundJob(Generic[F]):
    """A function run as a background job; made by ``@background_job``.

    Calling it calls the function (for tests). ``submit()`` creates and sends
    a job; ``accept()`` does that for a request and answers it.
    """

    def __init__(self, function: F, name: str, **policy: Any) -> None:
        self.function = function
        self.name = name
        self.task_name = runner.task_name(name)
        self.__doc__ = function.__doc__
        self.__wrapped__ = function
        try:
            spec = JobSpec.build(name, policy)
        except ValidationError as exc:
            raise TypeError(f"@background_job({name!r}): {'; '.join(exc.messages)}") from None
        registry.register(spec)
        runner.register_function(name, function)
        self.task = shared_task(base=runner.JobTask, bind=True, name=self.task_name, job_name=name)(
            _run_task
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<BackgroundJob {self.name!r}>"

    @property
    def policy(self) -> JobSpec:
        """The job's effective policy (code, settings and admin layers)."""
        return registry.get(JobSpec, self.name) or JobSpec(name=self.name)

    # Starting a job --------------------------------------------------------------

    def submit(self, owner: Any, **parameters: Any) -> Submission:
        """Create the job for ``owner`` (a user, or None) and send it, or refuse.

        Returns the existing job instead when the policy dedups and the same
        owner has the same job with the same parameters queued or running.
        Raises ``TooManyJobs`` (429), ``QueueFull`` or ``Overloaded`` (503)
        with nothing sent and no row left behind.
        """
        from ..models import Job

        spec = self.policy
        owner_id = getattr(owner, "pk", None)
        params_json = locks.parameters_json(self.name, parameters)
        dedup = locks.dedup_key(self.name, owner_id, params_json)
        job_id = uuid.uuid4()
        holder = str(job_id)
        store = get_store()
        using = router.db_for_write(Job) or DEFAULT_DB_ALIAS
        deferred = transaction.get_connection(using).in_atomic_block
        hold = spec.lock_ttl_while_running + spec.jitter + locks.LOCK_MARGIN
        # Inside a transaction the lock is pending and short until the commit
        # makes it the job's, so that a rollback does not block the same work
        # for long.
        first_hold = locks.UNCOMMITTED_LOCK_TTL if deferred else hold
        locked = False
        taken: list[str] = []  # leases to give back if the job is not created
        app = broker.celery_app()
        queue = spec.queue or broker.default_queue(app)
        try:
            if spec.dedup:
                existing = self._take_dedup_lock(dedup, holder, owner_id, first_hold, deferred)
                if existing is not None:
                    return Submission(existing, created=False)
                locked = True
            if spec.max_active_per_owner is not None and owner_id is not None:
                slot = store.acquire_lease(
                    locks.owner_key(self.name, owner_id), holder, spec.max_active_per_owner, hold
                )
                if not slot.acquired:
                    self._refused("too_many")
                    raise TooManyJobs(
                        f"You already have {spec.max_active_per_owner} {self.name} job(s) "
                        "queued or running; wait for one to finish.",
                        policy=self.name,
                        retry_after=spec.retry_after,
                    )
                taken.append(locks.owner_key(self.name, owner_id))
            if spec.max_queue_depth is not None:
                self._check_depth(app, queue, spec)
            countdown = random.uniform(0.0, spec.jitter) if spec.jitter > 0 else 0.0
            if countdown > 0:
                backpressure.note_scheduled(queue, holder, countdown)
                taken.append(backpressure.scheduled_key(queue))
            now = timezone.now()
            job = Job.objects.using(using).create(
                id=job_id,
                name=self.name,
                owner_id=owner_id,
                parameters=parameters,
                dedup_key=dedup,
                queue=queue,
                countdown=countdown,
                scheduled_for=now + timedelta(seconds=countdown),
                soft_time_limit=spec.soft_time_limit,
                time_limit=spec.time_limit,
                max_attempts=spec.max_attempts,
            )
        except BaseException:
            if locked:
                locks.release_lock(dedup, holder)
            for key in taken:
                store.release_lease(key, holder)
            raise
        if deferred:
            transaction.on_commit(lambda: self._send_after_commit(job, hold, app), using=using)
        else:
            self._send_now(job, app, spec)
        return Submission(job, created=True)

    def _take_dedup_lock(
        self, dedup: str, holder: str, owner_id: Any, ttl: float, pending: bool
    ) -> Job | None:
        """Take the dedup lock (None), or return the queued or running job that holds it."""
        from ..models import Job

        for look in range(_DEDUP_LOOKS):
            current = locks.take_lock(dedup, holder, ttl, pending=pending)
            if current is None:
                return None
            if not current:
                # Given back a moment ago: the empty value lingers for a
                # millisecond, and the lock is free. Take it, unless another
                # request just did.
                if locks.take_over(dedup, current, holder, ttl, pending=pending):
                    return None
                continue
            still_pending = current.startswith(locks.PENDING)
            try:
                other_id = uuid.UUID(current.removeprefix(locks.PENDING))
            except ValueError:
                other = None  # not a lock this app wrote: nobody holds it
                still_pending = False
            else:
                other = Job.objects.filter(pk=other_id, owner_id=owner_id, name=self.name).first()
            if other is not None and other.active:
                return other
            if other is not None or (not still_pending and look == _DEDUP_LOOKS - 1):
                # The holder ended without giving the lock back (Redis was away
                # then), or its row is gone for good (a restored database):
                # the lock is ours if nobody took it meanwhile.
                if locks.take_over(dedup, current, holder, ttl, pending=pending):
                    return None
                continue
            # The holder's row is not visible yet: another request is between
            # taking the lock and writing its job, or has not committed. Give
            # it a moment; an uncommitted one's lock soon expires by itself.
            time.sleep(0.05 * (look + 1))
        raise Overloaded(
            "The same job is being started by another request; try again in a moment.",
            policy=self.name,
            retry_after=1,
        )

    def _check_depth(self, app: Any, queue: str, spec: JobSpec) -> None:
        try:
            depth = backpressure.gauge.depth(app, queue)
        except broker.BrokerUnreachable as exc:
            self._refused("broker_unreachable")
            raise Overloaded(
                "The job queue cannot be reached; try again later.",
                policy=self.name,
                retry_after=spec.retry_after,
            ) from exc
        if backpressure.over_capacity(depth, spec.max_queue_depth):
            self._refused("queue_full")
            raise QueueFull(
                f"The {queue!r} queue holds {depth} jobs, its maximum is {spec.max_queue_depth}; "
                "try again later.",
                policy=self.name,
                retry_after=spec.retry_after,
            )

    def _send_now(self, job: Job, app: Any, spec: JobSpec) -> None:
        try:
            runner.send(job)
        except Exception as exc:
            logger.warning("Could not send background job %s: %r", job.id, exc)
            job.delete()  # its leases go with it (see the post_delete receiver)
            self._refused("broker_unreachable")
            raise Overloaded(
                "The job queue cannot be reached; try again later.",
                policy=self.name,
                retry_after=spec.retry_after,
            ) from exc
        backpressure.gauge.note_sent(app, job.queue)

    def _send_after_commit(self, job: Job, hold: float, app: Any) -> None:
        locks.committed(job, hold)
        locks.renew(job, hold)
        try:
            runner.send(job)
        except Exception as exc:
            logger.warning("Could not send background job %s: %r", job.id, exc)
            runner.end_failed(job, runner.QUEUE_FAILED_MESSAGE, detail=repr(exc))
            return
        backpressure.gauge.note_sent(app, job.queue)

    def _refused(self, reason: str) -> None:
        signals.job_refused.send(sender=BackgroundJob, name=self.name, reason=reason)

    # Answering a request -------------------------------------------------------

    def accept(self, request: HttpRequest, **parameters: Any) -> HttpResponse:
        """Start the job for the signed-in user and answer 202 Accepted (or refuse).

        The answer carries ``Location`` (the status URL), ``Retry-After``
        (when polling is worth it) and a JSON body with the job's id and
        state. Anonymous users get 403: a job needs an owner to be shown to.
        """
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return JsonResponse(
                {"detail": "Sign in to start this job: a background job belongs to a user."},
                status=403,
            )
        try:
            submission = self.submit(user, **parameters)
        except StabilityError as exc:
            return responses.refusal(request, exc)
        return accepted(submission)


def accepted(submission: Submission) -> HttpResponse:
    """The 202 answer for a submitted job."""
    job = submission.job
    status_url = reverse("django_stability:job-status", args=[job.id])
    wait = settings.JOBS_POLL_INTERVAL
    if job.state == job.QUEUED and job.scheduled_for is not None:
        wait = max(wait, math.ceil((job.scheduled_for - timezone.now()).total_seconds()))
    response = JsonResponse(
        {
            "id": str(job.id),
            "name": job.name,
            "state": job.state,
            "created": submission.created,
            "status_url": status_url,
        },
        status=202,
    )
    response["Location"] = status_url
    response["Retry-After"] = str(max(1, wait))
    response["Cache-Control"] = "no-store"
    return response


def _run_task(self: runner.JobTask, job_id: str, delivery: int = 1) -> None:
    runner.run(self, job_id, delivery)


def background_job(name: str, **policy: Any) -> Callable[[F], BackgroundJob[F]]:
    """Make ``function(job, **parameters)`` a background job named ``name``.

    Keyword arguments are the code defaults of the job's policy (see
    ``JobSpec``: ``jitter``, ``soft_time_limit``, ``time_limit``,
    ``max_active_per_owner``, ``queue``, ``max_queue_depth``, ``retry_after``,
    ``result_lifetime``, ``max_redeliveries``, ``dedup``, ``lock_ttl``); the
    admin overrides them per field.
    """
    if not isinstance(name, str) or not name.strip():
        raise TypeError("@background_job needs a name, e.g. @background_job('export-orders').")

    def decorate(function: F) -> BackgroundJob[F]:
        return BackgroundJob(function, name.strip(), **policy)

    return decorate
