"""The worker's side of a background job: claim it, run it, end it exactly once.

A job's message may be delivered more than once (a lost worker, a broker's
visibility timeout), so a run first *claims* the job: one conditional update
that moves it to "running" and counts the attempt. Every later write of that
run (progress, the final state) is conditional on the attempt still being
its own, so when two runs overlap only one of them ends the job; the other's
result file is deleted. Runs are bounded by the job's ``max_attempts``.

Two ends happen outside the child process that ran the job, in the worker's
main process, where Celery sends ``task_failure``: the child was lost
(killed, out of memory) and the child was killed at the hard time limit.
There the job is run again (within its bound) or ends failed, and its
leases are given back.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import IO, TYPE_CHECKING, Any

from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from celery import Task
from celery.signals import task_failure, worker_ready
from django.core.files import File
from django.core.files.storage import storages
from django.utils import timezone
from django.utils.text import get_valid_filename

from .. import signals
from ..conf import settings
from ..policies import registry
from . import backpressure, locks
from .policy import JobSpec

if TYPE_CHECKING:
    from ..models import Job

logger = logging.getLogger("django_stability.jobs")

SOFT_LIMIT_MESSAGE = (
    "The job ran longer than its soft time limit of {limit:g} s and was stopped; "
    "its partial output was deleted."
)
HARD_LIMIT_MESSAGE = (
    "The job ran longer than its time limit of {limit:g} s; the worker process running it "
    "was killed."
)
LOST_MESSAGE = (
    "The worker running the job was lost (killed or out of memory) {count}; "
    "it will not be tried again."
)
RETRYING_MESSAGE = "The worker running the job was lost; trying again (run {next} of {most})."
UNEXPECTED_MESSAGE = "The job failed unexpectedly."
QUEUE_FAILED_MESSAGE = "The job could not be queued: the job queue was unreachable."


class JobFailed(Exception):
    """Raise in a job to end it failed with this message, shown to the job's owner."""


class JobTask(Task):  # type: ignore[type-arg]
    """The Celery task class of every background job.

    Acknowledged late, so that a job whose worker dies is not lost; never
    requeued by Celery itself on a lost worker (which would repeat without
    bound): ``task_failure`` in the main process decides, with the job's own
    bound on runs.
    """

    acks_late = True
    acks_on_failure_or_timeout = True
    acks_on_failure = True
    acks_on_timeout = True
    reject_on_worker_lost = False
    retry_on_worker_lost = False
    ignore_result = True
    #: The name of the background job this task runs.
    job_name = ""


_functions: dict[str, Callable[..., Any]] = {}


def register_function(name: str, function: Callable[..., Any]) -> None:
    """Remember the function that does the work of job ``name`` (done by ``@background_job``)."""
    _functions[name] = function


def _storage() -> Any:
    return storages[settings.JOBS_STORAGE]


def _now() -> Any:
    return timezone.now()


def _policy(job: Job) -> JobSpec:
    return registry.get(JobSpec, job.name) or JobSpec(name=job.name)


class RunningJob:
    """What a job's function gets as its first argument: its identity, progress, result file.

    ``attempt`` is 1 on the first run and grows when the job is run again
    after a lost worker: a function that has side effects outside its result
    file should make them safe to repeat.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self.id = job.id
        self.name = job.name
        self.parameters: Mapping[str, Any] = dict(job.parameters or {})
        self.owner_id = job.owner_id
        self.attempt = job.attempts
        self._result: tuple[str, str, str, int] | None = None
        self._cleanups: list[Callable[[], None]] = []
        self._lock_ttl = _policy(job).lock_ttl_while_running + locks.LOCK_MARGIN
        self._renewed_at = time.monotonic()

    def _mine(self) -> Any:
        from ..models import Job

        return Job.objects.filter(pk=self.id, state=Job.RUNNING, attempts=self.attempt)

    def progress(self, fraction: float, message: str | None = None) -> bool:
        """Report how far the job is (0 to 1), and optionally what it does now.

        Each call is one database update (and, every third of the lock's
        lifetime, one renewal of the dedup lock): call it a few times a
        second at most. Returns False when this run no longer owns the job
        (another run took it over): the function should then stop.
        """
        fraction = min(1.0, max(0.0, float(fraction)))
        changes: dict[str, Any] = {"progress": fraction, "updated_at": _now()}
        if message is not None:
            changes["message"] = str(message)[:500]
        owned = bool(self._mine().update(**changes))
        if owned and time.monotonic() - self._renewed_at > self._lock_ttl / 3:
            self._renewed_at = time.monotonic()
            locks.renew(self.job, self._lock_ttl)
        return owned

    @contextlib.contextmanager
    def result_file(
        self, filename: str, content_type: str = "application/octet-stream", *, encoding: str = ""
    ) -> Iterator[IO[Any]]:
        """A file to write the job's result into; stored when the block ends without error.

        Written to a local temporary file first and then saved to the jobs'
        storage under a name of its own, so a run stopped half way leaves
        nothing behind. With ``encoding``, the file takes text.
        """
        with tempfile.TemporaryFile() as raw:
            if encoding:
                text = io.TextIOWrapper(raw, encoding=encoding, newline="")
                yield text
                text.flush()
                text.detach()
            else:
                yield raw
            raw.seek(0, io.SEEK_END)
            size = raw.tell()
            raw.seek(0)
            self._store_result(File(raw), filename, content_type, size)

    def save_result(
        self, filename: str, content: bytes | str, content_type: str = "application/octet-stream"
    ) -> None:
        """Store ``content`` as the job's result file."""
        with self.result_file(filename, content_type) as out:
            out.write(content.encode() if isinstance(content, str) else content)

    def _store_result(self, file: File[Any], filename: str, content_type: str, size: int) -> None:
        safe = get_valid_filename(filename) or "result"
        path = f"{settings.JOBS_UPLOAD_TO}/{self.id}/{self.attempt}-{safe}"
        previous = self._result
        stored = _storage().save(path, file)
        self._result = (stored, filename, content_type, size)
        if previous is not None:
            delete_result_file(previous[0])

    def add_cleanup(self, function: Callable[[], None]) -> None:
        """Call ``function`` if this run ends without success (error, soft time limit)."""
        self._cleanups.append(function)

    def _clean_up(self) -> None:
        for function in reversed(self._cleanups):
            try:
                function()
            except Exception:
                logger.exception("A clean-up of job %s failed", self.id)
        if self._result is not None:
            delete_result_file(self._result[0])
            self._result = None

    def _finish(self, state: str, *, error: str = "", detail: str = "") -> bool:
        from ..models import Job

        now = _now()
        changes: dict[str, Any] = {
            "state": state,
            "finished_at": now,
            "expires_at": now + timedelta(seconds=_policy(self.job).result_lifetime),
            "error": error,
            "error_detail": detail,
        }
        if state == Job.SUCCEEDED:
            changes["progress"] = 1.0
            if self._result is not None:
                name, filename, content_type, size = self._result
                changes.update(
                    result_name=name,
                    result_filename=filename,
                    result_content_type=content_type,
                    result_size=size,
                )
        if not self._mine().update(**changes):
            # Another run owns the job now (this one was presumed lost): its
            # result, not ours, is the job's.
            if self._result is not None:
                delete_result_file(self._result[0])
            logger.warning("Job %s run %s ended after another run took over", self.id, self.attempt)
            return False
        locks.release(self.job)
        _send_finished(self.id, state)
        return True


def delete_result_file(name: str) -> None:
    """Delete a result file from the jobs' storage; a failure is logged, never raised."""
    try:
        _storage().delete(name)
    except Exception:
        logger.exception("Could not delete the job result file %s", name)


def _send_finished(job_id: Any, state: str) -> None:
    from ..models import Job

    job = Job.objects.filter(pk=job_id).first()
    if job is not None:
        signals.job_finished.send(sender=Job, job=job, state=state)


def end_failed(job: Job, message: str, *, detail: str = "") -> bool:
    """End an active job failed, if it is still where ``job`` saw it; give its leases back."""
    from ..models import Job

    now = _now()
    done = Job.objects.filter(pk=job.pk, state=job.state, attempts=job.attempts).update(
        state=Job.FAILED,
        error=message,
        error_detail=detail,
        finished_at=now,
        expires_at=now + timedelta(seconds=_policy(job).result_lifetime),
        updated_at=now,
    )
    if done:
        locks.release(job)
        _send_finished(job.pk, Job.FAILED)
    return bool(done)


def claim(job_id: str, delivery: int) -> Job | None:
    """Move the job to "running" for this run, or say why not (None)."""
    from ..models import Job

    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        logger.warning("Job %s is not in the database (rolled back or deleted); skipped", job_id)
        return None
    if job.state not in Job.ACTIVE:
        return None  # a duplicate delivery of a job that already ended
    runs = max(job.attempts, delivery - 1)
    if runs >= job.max_attempts:
        # Delivered again after every allowed run was lost without a word
        # (the whole worker died, or the broker's visibility timeout passed).
        end_failed(job, LOST_MESSAGE.format(count=_times(runs)))
        return None
    now = _now()
    claimed = Job.objects.filter(pk=job.pk, state=job.state, attempts=job.attempts).update(
        state=Job.RUNNING,
        attempts=runs + 1,
        started_at=now,
        updated_at=now,
        progress=0.0,
        error="",
    )
    if not claimed:
        return None
    job.refresh_from_db()
    return job


def _times(count: int) -> str:
    return "once" if count == 1 else "twice" if count == 2 else f"{count} times"


def run(task: Any, job_id: str, delivery: int = 1) -> None:
    """The body of every job task: claim, run the job's function, end the job."""
    job = claim(job_id, delivery)
    if job is None:
        return
    backpressure.note_started(job.queue, str(job.id))
    running = RunningJob(job)
    locks.renew(job, running._lock_ttl)
    function = _functions.get(job.name)
    try:
        if function is None:
            raise LookupError(f"No @background_job named {job.name!r} in this worker")
        function(running, **running.parameters)
    except SoftTimeLimitExceeded:
        running._clean_up()
        running._finish("failed", error=SOFT_LIMIT_MESSAGE.format(limit=job.soft_time_limit or 0))
    except JobFailed as exc:
        running._clean_up()
        running._finish("failed", error=str(exc) or UNEXPECTED_MESSAGE)
    except Exception:
        logger.exception("Background job %s (%s) failed", job.name, job.id)
        running._clean_up()
        running._finish("failed", error=UNEXPECTED_MESSAGE, detail=traceback.format_exc())
    else:
        running._finish("succeeded")


def send(job: Job, delivery: int = 1) -> None:
    """Send the job's message (raises what the broker raised)."""
    from .broker import celery_app, publishing_connection

    app = celery_app()
    options: dict[str, Any] = {
        "kwargs": {"job_id": str(job.id), "delivery": delivery},
        "task_id": str(job.id),
        "queue": job.queue,
        # Fail fast: a request waits for this, and its answer to a broker
        # outage is a 503 with Retry-After, not a hung thread.
        "retry": False,
        "connection": publishing_connection(app),
    }
    if delivery == 1 and job.countdown > 0:
        options["countdown"] = job.countdown
    if job.time_limit:
        options["time_limit"] = job.time_limit
    if job.soft_time_limit:
        options["soft_time_limit"] = job.soft_time_limit
    app.tasks[task_name(job.name)].apply_async(**options)


def task_name(job_name: str) -> str:
    """The Celery task name of background job ``job_name``."""
    return f"django_stability.job.{job_name}"


def worker_lost(job_id: str, delivery: int) -> None:
    """The child running the job died: run it again within its bound, else end it failed."""
    from ..models import Job

    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.state not in Job.ACTIVE:
        return
    runs = max(job.attempts, delivery)
    if runs >= job.max_attempts:
        end_failed(job, LOST_MESSAGE.format(count=_times(runs)))
        return
    message = RETRYING_MESSAGE.format(next=runs + 1, most=job.max_attempts)
    requeued = Job.objects.filter(pk=job.pk, state=job.state, attempts=job.attempts).update(
        state=Job.QUEUED, message=message, updated_at=_now()
    )
    if not requeued:
        return
    job.refresh_from_db()
    locks.renew(job, _policy(job).lock_ttl_while_running + locks.LOCK_MARGIN)
    try:
        send(job, delivery=runs + 1)
    except Exception as exc:
        logger.exception("Could not send job %s again after its worker was lost", job.id)
        end_failed(job, QUEUE_FAILED_MESSAGE, detail=repr(exc))


def hard_time_limit(job_id: str) -> None:
    """The child running the job was killed at the hard time limit: the job ends failed."""
    from ..models import Job

    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.state not in Job.ACTIVE:
        return
    end_failed(job, HARD_LIMIT_MESSAGE.format(limit=job.time_limit or 0))


def _on_task_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    kwargs: Mapping[str, Any] | None = None,
    **extra: Any,
) -> None:
    if not isinstance(sender, JobTask):
        return
    kwargs = kwargs or {}
    job_id = str(kwargs.get("job_id") or task_id)
    delivery = int(kwargs.get("delivery") or 1)
    try:
        if isinstance(exception, WorkerLostError):
            worker_lost(job_id, delivery)
        elif isinstance(exception, TimeLimitExceeded):
            hard_time_limit(job_id)
        else:
            # The run's own bookkeeping failed (the database went away):
            # end the job if the database answers now.
            from ..models import Job

            job = Job.objects.filter(pk=job_id, state__in=Job.ACTIVE).first()
            if job is not None:
                end_failed(job, UNEXPECTED_MESSAGE, detail=repr(exception))
    except Exception:
        logger.exception("Could not record the end of job %s", job_id)


def _on_worker_ready(sender: Any = None, **extra: Any) -> None:
    # The pool is often chosen on the command line, out of the system checks'
    # sight: the worker says it itself once it is up (check E051's finding).
    from ..checks import time_limit_pool_messages

    controller = getattr(sender, "controller", sender)
    pool = getattr(controller, "pool_cls", None)
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    for message in time_limit_pool_messages(str(name)):
        logger.error("%s %s", message.msg, message.hint)


task_failure.connect(_on_task_failure, dispatch_uid="django_stability.jobs.task_failure")
worker_ready.connect(_on_worker_ready, dispatch_uid="django_stability.jobs.worker_ready")


def job_deleted(sender: Any = None, instance: Any = None, **kwargs: Any) -> None:
    """A job row was deleted: give back its leases and delete its file."""
    if instance is None:
        return
    locks.release(instance)
    if instance.result_name:
        delete_result_file(instance.result_name)
