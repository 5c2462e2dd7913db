"""Events sent by django-stability, for logging, metrics and alerting.

Every signal is sent with keyword arguments only; receivers should accept
``**kwargs`` so new arguments can be added without breaking them. The
operations page of the docs lists them all.
"""

from __future__ import annotations

from django.dispatch import Signal

#: The shared-state store changed state: ``state`` and ``previous`` are
#: "closed" (using Redis), "open" (answering from the local store) or
#: "half_open" (probing Redis); ``error`` is the exception that tripped it, or None.
store_state_changed = Signal()

#: A process loaded a new policy snapshot: ``generation`` is the shared
#: generation it answers to, ``count`` the number of admin rows loaded.
policies_reloaded = Signal()

#: A rate limit refused a call, or a shadow one would have: ``policy`` is its
#: name, ``shadow`` True for a shadow policy (the call was admitted),
#: ``retry_after`` the seconds to wait, ``degraded`` True when decided without
#: the shared store.
rate_limited = Signal()

#: A request was refused (or, in shadow mode, would have been) to shed load:
#: ``request``; ``reason`` is "capacity" (the process's in-flight limit),
#: "queue_time" (it waited upstream too long), "concurrency" (a cluster-wide
#: limit), "waiting_room" (the visitor waits in line) or "store_unavailable"
#: (a limit that fails closed could not reach the store); ``priority`` and
#: ``policy`` (or None); ``retry_after`` in seconds; ``shadow`` is True when
#: the request was admitted all the same. Further keyword arguments carry the
#: facts of the decision (``in_flight``, ``limit``, ``waited``, ``place``...).
request_shed = Signal()

#: A protected cache's own breaker changed state: ``cache`` is its alias or
#: location, ``state`` and ``previous`` are "closed", "open" or "half_open",
#: ``error`` is the exception that tripped it, or None.
cache_state_changed = Signal()

#: A background job ended: ``job`` is the ``Job`` row and ``state`` its final
#: state ("succeeded", "failed"); sent by the process that ended it (the worker
#: child, or the worker's main process for a lost child or a hard time limit).
job_finished = Signal()

#: A request for a background job was refused before anything was enqueued:
#: ``name`` is the job's name, ``reason`` is "queue_full", "too_many" or
#: "broker_unreachable".
job_refused = Signal()
