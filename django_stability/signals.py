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
#: the shared store; ``boxed`` (when present) True when the process's penalty
#: box refused a key it already knew to be over its limit, with no round trip.
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

#: A circuit breaker changed state, as this process sees it: ``name``, ``state``
#: and ``previous`` ("closed", "open", "half_open"), ``scope`` ("process" or
#: "cluster"), ``reason`` (a few words), ``failure_rate`` and ``slow_call_rate``
#: (percent, None when not measured), ``calls`` (in the window), ``wait`` (seconds
#: the open state lasts, None unless opening), ``shadow`` (True in metrics-only
#: mode: the breaker would have done this, and lets calls through anyway) and
#: ``observed`` (True when another process made the transition and this one
#: learnt it from the store).
breaker_state_changed = Signal()

#: A bulkhead refused a call (or, with ``shadow=True``, would have): ``name``,
#: ``limit``, ``scope``.
bulkhead_full = Signal()

#: An operator acted through the Stability page: ``user`` (who), ``target``
#: ("breaker", "ratelimit" or "feature"), ``name`` (the policy), ``action``
#: ("reset", "forced_open", "disabled", "automatic", "metrics_only",
#: "reset_key", "turn_off", "turn_on") and ``detail`` (the key reset, or "").
operator_acted = Signal()
