"""Structured log lines for events, rate-limited: the one home for how events are logged.

Each event (a refusal, a breaker opening, a job failing) becomes one line on
the ``django_stability.events`` logger, in logfmt (``event=breaker_state_changed
breaker=payments state=open ...``), with the same fields as a dict on the
record (``record.stability_event`` and ``record.stability_fields``) for JSON
formatters. A storm of events must not become a storm of lines: per event and
subject (a policy, a breaker), the first line is written at once and the next
ones within ``EVENTS_LOG_INTERVAL`` are counted; the next line written carries
``suppressed=N``, and ``flush()`` (called by the reporter thread) writes the
count of a subject that went quiet.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("django_stability.events")

#: Subjects remembered at most (the least recently logged are forgotten first).
MAX_SUBJECTS = 10_000


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        value = round(value, 4)
    text = str(value)
    if text == "" or any(c in text for c in ' "=\\') or not text.isprintable():
        return json.dumps(text)
    return text


def logfmt(fields: Mapping[str, Any]) -> str:
    """``key=value`` pairs in order; values with spaces or quotes are quoted; None is left out."""
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items() if value is not None)


@dataclass
class _Subject:
    next_line: float
    suppressed: int = 0
    level: int = logging.INFO
    fields: dict[str, Any] = field(default_factory=dict)


class EventLog:
    """Writes event lines, at most one per event and subject per interval. Thread-safe."""

    def __init__(
        self,
        log: logging.Logger = logger,
        clock: Callable[[], float] = time.monotonic,
        max_subjects: int = MAX_SUBJECTS,
    ) -> None:
        self.log = log
        self.clock = clock
        self.max_subjects = max_subjects
        self._lock = threading.Lock()
        self._subjects: OrderedDict[tuple[Any, ...], _Subject] = OrderedDict()

    def emit(
        self,
        event: str,
        fields: Mapping[str, Any],
        *,
        level: int = logging.INFO,
        subject: tuple[Any, ...] = (),
        interval: float | None = None,
    ) -> bool:
        """Log ``event`` with ``fields`` unless its subject was logged within ``interval``.

        Returns True when a line was written. ``interval`` defaults to
        ``EVENTS_LOG_INTERVAL``; 0 writes every line.
        """
        if interval is None:
            from .conf import settings

            interval = settings.EVENTS_LOG_INTERVAL
        key = (event, *subject)
        now = self.clock()
        with self._lock:
            known = self._subjects.get(key)
            if known is not None and now < known.next_line:
                known.suppressed += 1
                known.level = max(known.level, level)
                known.fields = dict(fields)
                return False
            suppressed = known.suppressed if known is not None else 0
            self._subjects[key] = _Subject(now + interval)
            self._subjects.move_to_end(key)
            while len(self._subjects) > self.max_subjects:
                self._subjects.popitem(last=False)
        self._write(event, level, fields, suppressed)
        return True

    def flush(self) -> int:
        """Write the count of each subject that went quiet with events not yet logged."""
        now = self.clock()
        due: list[tuple[str, _Subject]] = []
        with self._lock:
            for key, known in self._subjects.items():
                if known.suppressed and now >= known.next_line:
                    due.append(
                        (str(key[0]), _Subject(0, known.suppressed, known.level, known.fields))
                    )
                    known.suppressed = 0
        for event, known in due:
            self._write(event, known.level, known.fields, known.suppressed, latest=True)
        return len(due)

    def _write(
        self,
        event: str,
        level: int,
        fields: Mapping[str, Any],
        suppressed: int,
        *,
        latest: bool = False,
    ) -> None:
        if not self.log.isEnabledFor(level):
            return
        record = {"event": event, **fields}
        if suppressed:
            # How many more of these happened, unlogged, since the previous line.
            record["suppressed"] = suppressed
        if latest:
            record["summary"] = True
        self.log.log(
            level,
            "%s",
            logfmt(record),
            extra={"stability_event": event, "stability_fields": dict(record)},
        )

    def reset(self) -> None:
        """Forget every subject (tests)."""
        with self._lock:
            self._subjects.clear()

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._subjects = OrderedDict()


#: The event log of this process.
events_log = EventLog()

os.register_at_fork(after_in_child=events_log.after_fork)
