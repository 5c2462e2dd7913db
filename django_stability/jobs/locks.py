"""The leases a job holds while it is queued or running.

Every lease has the job's id as its token, so only that job (or whoever ends
it on its behalf: the worker's main process when the child running it was
lost, the cleanup) can give it back, and every lease expires by itself:

* the dedup lock, one per (owner, name, parameters): a second request for
  the same work while the lock is held gets the existing job;
* the owner's slot, one of ``max_active_per_owner`` per (name, owner);
* the scheduled mark, while the job waits out its jittered start
  (see ``backpressure``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..store import get_store
from . import backpressure

if TYPE_CHECKING:
    from ..models import Job

#: Seconds a lock outlives the longest the job may take, for the messages in between.
LOCK_MARGIN = 30.0
#: Seconds a lock lives while the transaction that wrote its job has not
#: committed yet: if it rolls back, the lock is gone soon after.
UNCOMMITTED_LOCK_TTL = 30.0


def parameters_json(name: str, parameters: Mapping[str, Any]) -> str:
    """The parameters as canonical JSON (sorted keys), refusing what JSON cannot carry."""
    try:
        return json.dumps(parameters, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"The parameters of background job {name!r} must be plain JSON data (text, "
            f"numbers, true/false, None, lists and dicts with text keys): {exc}"
        ) from None


def dedup_key(name: str, owner_id: Any, parameters: str) -> str:
    """A hash that is equal for the same owner, job name and (canonical) parameters."""
    text = json.dumps([name, None if owner_id is None else str(owner_id), parameters])
    return hashlib.sha256(text.encode()).hexdigest()


def lock_key(dedup: str) -> str:
    return f"jobs:lock:{dedup}"


def owner_key(name: str, owner_id: Any) -> str:
    return f"jobs:owner:{name}:{owner_id}"


def keys_of(job: Job) -> list[str]:
    """The lease keys a job may hold."""
    keys = [lock_key(job.dedup_key), backpressure.scheduled_key(job.queue)]
    if job.owner_id is not None:
        keys.append(owner_key(job.name, job.owner_id))
    return keys


def renew(job: Job, ttl: float) -> None:
    """Extend the job's dedup lock and owner slot (those it still holds) for ``ttl`` seconds."""
    store = get_store()
    holder = str(job.id)
    store.renew_lease(lock_key(job.dedup_key), holder, ttl)
    if job.owner_id is not None:
        store.renew_lease(owner_key(job.name, job.owner_id), holder, ttl)


def release(job: Job) -> None:
    """Give back every lease the job holds; harmless for leases it does not hold."""
    store = get_store()
    holder = str(job.id)
    for key in keys_of(job):
        store.release_lease(key, holder)
