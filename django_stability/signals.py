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
