"""The leases a job holds while it is queued or running.

Each carries the job's id as its token, so only that job (or whoever ends
it on its behalf: the worker's main process when the child running it was
lost, the cleanup) can give it back, and each expires by itself:

* the dedup lock, one per (owner, name, parameters): a second request for
  the same work while the lock is held gets the existing job. Its value
  names the holder, so that a lock whose job has ended, or vanished (a
  restored database), is taken over at once instead of blocking the same
  work until it expires. While the transaction that writes the job has not
  committed, the value is ``pending:<id>`` and short-lived;
* the owner's slot, one of ``max_active_per_owner`` per (name, owner), a lease;
* the scheduled mark, while the job waits out its jittered start
  (see ``backpressure``), a lease.
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
#: The value of the lock of a job whose transaction has not committed yet.
PENDING = "pending:"
#: How long a given-back lock lingers as an empty value (a compare-and-set
#: cannot delete; this is the next best thing).
_GONE_TTL = 0.001


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


def take_lock(dedup: str, holder: str, ttl: float, *, pending: bool = False) -> str | None:
    """Take the dedup lock for ``holder``: None when taken, else the current value.

    The current value is the holder's job id, ``pending:<id>``, or "" when the
    lock was given back a moment ago.
    """
    store = get_store()
    value = f"{PENDING}{holder}" if pending else holder
    if store.set(lock_key(dedup), value, ttl, only_if_absent=True):
        return None
    return store.get(lock_key(dedup)) or ""


def take_over(dedup: str, current: str, holder: str, ttl: float, *, pending: bool = False) -> bool:
    """Replace a lock whose holder is gone, if it still has the value ``current``."""
    value = f"{PENDING}{holder}" if pending else holder
    return get_store().compare_and_set(lock_key(dedup), current, value, ttl)


def lock_holder(dedup: str) -> str | None:
    """The id of the job holding the dedup lock (pending or not), or None."""
    value = get_store().get(lock_key(dedup)) or ""
    return value.removeprefix(PENDING) or None


def committed(job: Job, ttl: float) -> bool:
    """The job's transaction committed: its pending lock becomes its lock, for ``ttl`` seconds."""
    holder = str(job.id)
    return get_store().compare_and_set(lock_key(job.dedup_key), f"{PENDING}{holder}", holder, ttl)


def renew(job: Job, ttl: float) -> None:
    """Extend the job's dedup lock and owner slot (those it still holds) for ``ttl`` seconds."""
    store = get_store()
    holder = str(job.id)
    store.compare_and_set(lock_key(job.dedup_key), holder, holder, ttl)
    if job.owner_id is not None:
        store.renew_lease(owner_key(job.name, job.owner_id), holder, ttl)


def release_lock(dedup: str, holder: str) -> None:
    """Give back the dedup lock if ``holder`` (pending or not) still holds it."""
    store = get_store()
    key = lock_key(dedup)
    if not store.compare_and_set(key, holder, "", _GONE_TTL):
        store.compare_and_set(key, f"{PENDING}{holder}", "", _GONE_TTL)


def release(job: Job) -> None:
    """Give back everything the job holds; harmless for what it does not hold."""
    store = get_store()
    holder = str(job.id)
    release_lock(job.dedup_key, holder)
    store.release_lease(backpressure.scheduled_key(job.queue), holder)
    if job.owner_id is not None:
        store.release_lease(owner_key(job.name, job.owner_id), holder)
