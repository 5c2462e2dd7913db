"""The in-process home (the fallback while the cache server fails), on an injected clock."""

from __future__ import annotations

import pickle

from django_stability.cache.home import (
    ABSENT,
    FRESH,
    STALE,
    Backoff,
    Keys,
    LocalHome,
    Reading,
    Watcher,
)

KEYS = Keys("k", None, "k")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def home(clock: Clock, max_keys: int = 100) -> LocalHome:
    return LocalHome(pickle.dumps, pickle.loads, max_keys=max_keys, clock=clock)


def read(h: LocalHome, token: str = "a", **kw: float) -> Reading:
    args: dict[str, float] = {"lease": 1.0, "xfetch": 0.0, "stale_if_error": 30.0, **kw}
    return h.read(KEYS, token=token, lock=True, **args)


def land(h: LocalHome, value: object, started: float | None = None, **kw: float) -> bool:
    args: dict[str, float] = {"soft": 10, "hard": 10, "compute_time": 0, **kw}
    return h.land(KEYS, token=None, value=value, started=started, **args)


def test_one_lock_per_key_then_fresh_then_stale() -> None:
    clock = Clock()
    h = home(clock)
    first = read(h, "a")
    assert first.state == ABSENT and first.locked
    assert not read(h, "b").locked
    assert h.land(KEYS, token="a", value=[1], soft=10, hard=40, compute_time=0.2, started=None)
    got = read(h, "b")
    assert (got.state, got.value, got.locked) == (FRESH, [1], False)
    clock.now += 11
    got = read(h, "b")
    assert got.state == STALE and got.locked and got.age == 1
    clock.now += 30
    assert read(h, "c").state == ABSENT


def test_values_are_copies() -> None:
    h = home(Clock())
    h.land(KEYS, token=None, value=[1], soft=10, hard=10, compute_time=0, started=None)
    read(h).value.append(2)
    assert read(h).value == [1]


def test_an_expired_lease_can_be_taken_over_and_only_the_holder_renews_or_releases() -> None:
    clock = Clock()
    h = home(clock)
    assert read(h, "a").locked
    assert h.renew(KEYS, token="a", lease=1.0)
    assert not h.renew(KEYS, token="b", lease=1.0)
    clock.now += 1.01
    assert not h.renew(KEYS, token="a", lease=1.0)
    assert read(h, "b").locked
    h.release(KEYS, token="a", backoff=None)  # not the holder: nothing happens
    assert not read(h, "c").locked


def test_an_older_compute_cannot_overwrite_a_newer_value() -> None:
    clock = Clock()
    h = home(clock)
    assert h.land(KEYS, token=None, value="new", soft=10, hard=10, compute_time=0, started=105.0)
    assert not h.land(
        KEYS, token=None, value="old", soft=10, hard=10, compute_time=0, started=101.0
    )
    assert read(h).value == "new"


def test_backoff_keeps_stale_values_from_being_recomputed_within_the_window() -> None:
    clock = Clock()
    h = home(clock)
    h.land(KEYS, token=None, value="v", soft=1, hard=100, compute_time=0.1, started=None)
    clock.now += 2
    assert read(h, "a").locked
    h.release(KEYS, token="a", backoff=Backoff(base=1.0, cap=60.0, keep=200.0))
    got = read(h, "b")
    assert got.backoff and not got.locked
    clock.now += 1.01
    assert read(h, "b").locked
    h.release(KEYS, token="b", backoff=Backoff(base=1.0, cap=60.0, keep=200.0))
    clock.now += 1.5  # the second failure doubled the pause to 2 s
    assert not read(h, "c").locked
    # Past the stale-if-error window the lock is tried again, backoff or not.
    assert read(h, "c", stale_if_error=1.0).locked


def test_early_refresh_takes_the_lock_near_expiry_only() -> None:
    clock = Clock()
    h = home(clock)
    h.land(KEYS, token=None, value="v", soft=10, hard=10, compute_time=1.0, started=None)
    assert not read(h, xfetch=2.0).locked
    clock.now += 8.5  # 1.5 s left, compute time 1 s x factor 2
    got = read(h, xfetch=2.0)
    assert got.state == FRESH and got.locked


def test_bounded_and_waking() -> None:
    clock = Clock()
    h = home(clock, max_keys=3)
    for i in range(5):
        h.land(
            Keys(str(i), None, str(i)),
            token=None,
            value=i,
            soft=9,
            hard=9,
            compute_time=0,
            started=None,
        )
    assert len(h) == 3
    watcher = Watcher()
    h.add_watcher(KEYS, watcher)
    h.land(KEYS, token=None, value=1, soft=9, hard=9, compute_time=0, started=None)
    assert watcher.wait(0)
    watcher.close()
    assert len(h.watchers) == 0


def test_add_sees_an_expired_value_as_absent_and_zero_timeouts_drop() -> None:
    clock = Clock()
    h = home(clock)
    assert h.land(
        KEYS, token=None, value=1, soft=1, hard=9, compute_time=0, started=None, only_if_absent=True
    )
    assert not h.land(
        KEYS, token=None, value=2, soft=1, hard=9, compute_time=0, started=None, only_if_absent=True
    )
    clock.now += 2
    assert h.land(
        KEYS, token=None, value=3, soft=1, hard=9, compute_time=0, started=None, only_if_absent=True
    )
    assert read(h).value == 3
    assert h.land(KEYS, token=None, value=4, soft=0, hard=0, compute_time=0, started=None)
    assert read(h).state == ABSENT
