"""How a protected value is stored: the value, its soft expiry, its compute time.

On Redis a protected value is one string: a short ASCII header, then the value
serialised exactly as django-redis would serialise it (its serializer, its
compressor)::

    \\xffDS1|<soft expiry, us>|<compute time, us>|<compute start, us>|<value>

Times are microseconds on the Redis server's clock (``TIME``), so that every
process agrees on when a value goes stale; a soft expiry of 0 means the value
never goes stale. The Redis TTL of the key is the soft TTL plus the time a value
may be served past it (grace, stale-if-error), so a stale value is still there
to be served. The Lua scripts in ``lua/`` read the same header: this docstring
is the one description of the format.

On other Django backends (the mixin), the envelope is a tuple of plain data that
the backend stores as it stores any value: see ``pack_tuple``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

MAGIC = b"\xffDS1|"
#: The longest a header can be: magic and three 16-digit numbers with separators.
HEADER_MAX = len(MAGIC) + 3 * 17
TUPLE_MARK = "\x00django-stability:cache:1"


@dataclass(frozen=True)
class Header:
    """The header of a stored envelope. Times in seconds (floats) on the server clock."""

    soft_expiry: float  # 0: never stale
    compute_time: float
    started: float


def pack_header(soft_expiry: float, compute_time: float, started: float) -> bytes:
    """The header bytes for the given times (seconds)."""
    return b"%s%d|%d|%d|" % (
        MAGIC,
        round(soft_expiry * 1e6),
        round(compute_time * 1e6),
        round(started * 1e6),
    )


def split(raw: bytes) -> tuple[Header, bytes] | None:
    """``(header, payload)`` of a stored envelope, or None if ``raw`` is a plain value."""
    if not raw.startswith(MAGIC):
        return None
    head = raw[len(MAGIC) : HEADER_MAX + 1]
    parts = head.split(b"|", 3)
    if len(parts) < 4:
        return None
    try:
        soft, delta, started = (int(p) / 1e6 for p in parts[:3])
    except ValueError:
        return None
    offset = len(MAGIC) + sum(len(p) + 1 for p in parts[:3])
    return Header(soft, delta, started), raw[offset:]


def pack_tuple(
    value: Any, soft_expiry: float, compute_time: float, started: float
) -> tuple[Any, ...]:
    """The envelope on backends that store Python objects (wall-clock seconds)."""
    return (TUPLE_MARK, soft_expiry, compute_time, started, value)


def unpack_tuple(stored: Any) -> tuple[Header, Any] | None:
    """``(header, value)`` of an envelope stored by ``pack_tuple``, or None for a plain value."""
    if type(stored) is tuple and len(stored) == 5 and stored[0] == TUPLE_MARK:
        return Header(stored[1], stored[2], stored[3]), stored[4]
    return None


def jittered(ttl: float, jitter: float, rand: float | None = None) -> float:
    """``ttl`` shortened by a random share of up to ``jitter`` (never lengthened).

    Shortening only keeps the promise that a value is never served as fresh
    longer than its TTL.
    """
    u = random.random() if rand is None else rand
    return ttl * (1.0 - jitter * u)


def xfetch_factor(beta: float, rand: float | None = None) -> float:
    """XFetch's ``-beta * ln(u)``: refresh early once the time left is below compute time x this.

    (Vattani, Chierichetti and Lowenstein, "Optimal Probabilistic Cache Stampede
    Prevention", VLDB 2015.) With ``beta`` 1 the expected head start is one
    compute time; 0 turns early refresh off.
    """
    if beta <= 0:
        return 0.0
    u = random.random() if rand is None else rand
    return -beta * math.log(max(u, 1e-300))
