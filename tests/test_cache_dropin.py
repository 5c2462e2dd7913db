"""StampedeProtectedRedisCache is a drop-in: every operation answers as django-redis's does.

Each sequence of operations runs on the plain django-redis cache ("default") and on
the protected one ("protected"), both on the shared Redis under their own prefixes,
and the answers are compared.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import caches

from django_stability.cache import StampedeProtectedRedisCache
from django_stability.cache.envelope import MAGIC


def both(ops: Callable[[Any, str], Any]) -> tuple[Any, Any]:
    """Run ``ops(cache, key)`` on both caches, each with a fresh unique key."""
    key = f"dropin:{uuid.uuid4().hex[:8]}"
    plain, protected = caches["default"], caches["protected"]
    assert isinstance(protected, StampedeProtectedRedisCache)
    return ops(plain, key), ops(protected, key)


def same(ops: Callable[[Any, str], Any]) -> Any:
    plain, protected = both(ops)
    assert protected == plain
    return plain


def raises(call: Callable[[], Any]) -> str:
    try:
        call()
    except Exception as exc:
        return type(exc).__name__
    return "no error"


@pytest.mark.parametrize(
    "value",
    [1, -7, 2**40, 1.5, "text", b"bytes", True, None, [1, "a"], {"a": {"b": [1, 2]}}, ("t", 1)],
)
def test_set_and_get_every_kind_of_value(value: Any) -> None:
    same(lambda c, k: (c.set(k, value, 60), c.get(k, "dflt"), c.get(k + "x", "dflt")))


def test_add_incr_decr() -> None:
    same(
        lambda c, k: (
            c.add(k, 5),
            c.add(k, 6),
            c.get(k),
            c.incr(k),
            c.incr(k, 10),
            c.decr(k, 3),
            c.get(k),
            raises(lambda: c.incr(k + "missing")),
        )
    )


def test_ttl_pttl_persist_expire_touch() -> None:
    def ops(c: Any, k: str) -> Any:
        c.set(k, "v", 100)
        c.set(k + "p", "v", None)
        ttl = c.ttl(k)
        pttl = c.pttl(k)
        return (
            99 <= ttl <= 100,
            98_000 < pttl <= 100_000,
            c.ttl(k + "p"),
            c.pttl(k + "p"),
            c.ttl(k + "missing"),
            c.touch(k, 500),
            499 <= c.ttl(k) <= 500,
            c.touch(k + "missing", 5),
            c.touch(k, None),
            c.ttl(k),
            c.expire(k, 50),
            49 <= c.ttl(k) <= 50,
            c.persist(k),
            c.ttl(k),
            c.touch(k, 0),
            c.get(k),
        )

    same(ops)


def test_delete_has_key_and_patterns() -> None:
    def ops(c: Any, k: str) -> Any:
        c.set_many({f"{k}:a": 1, f"{k}:b": 2, f"{k}:c": 3}, 60)
        return (
            c.has_key(f"{k}:a"),
            c.has_key(f"{k}:zz"),
            c.delete(f"{k}:a"),
            c.delete(f"{k}:a"),
            sorted(c.keys(f"{k}:*")),
            sorted(c.iter_keys(f"{k}:*")),
            c.delete_pattern(f"{k}:*"),
            c.get_many([f"{k}:b", f"{k}:c"]),
            c.delete_many([f"{k}:x"]),
        )

    same(ops)


def test_get_many_set_many() -> None:
    same(
        lambda c, k: (
            c.set_many({k + "1": 1, k + "2": {"x": 2}}, 60),
            c.get_many([k + "1", k + "2", k + "3"]),
        )
    )


def test_versions() -> None:
    same(
        lambda c, k: (
            c.set(k, "v2", 60, version=2),
            c.get(k),
            c.get(k, version=2),
            c.incr_version(k, version=2),
            c.get(k, version=3),
            c.get(k, version=2),
            raises(lambda: c.incr_version(k + "missing")),
        )
    )


def test_lock() -> None:
    def ops(c: Any, k: str) -> Any:
        lock = c.lock(k, timeout=5)
        first = lock.acquire(blocking=False)
        second = c.lock(k, timeout=5).acquire(blocking=False)
        lock.release()
        with c.lock(k, timeout=5):
            inside = True
        return first, second, inside

    same(ops)


def test_get_or_set_answers_as_django_redis_does() -> None:
    same(
        lambda c, k: (
            c.get_or_set(k, lambda: {"n": 1}, 60),
            c.get_or_set(k, lambda: {"n": 2}, 60),
            c.get(k),
            c.has_key(k),
            c.get_many([k]),
            c.get_or_set(k + "d", "plain default", 60),
            c.get_or_set(k + "zero", lambda: "not kept", 0),
            c.get(k + "zero"),
            c.get_or_set(k + "none", lambda: "forever", None),
            c.ttl(k + "none"),
        )
    )


def test_values_read_back_through_every_path_after_get_or_set() -> None:
    cache = caches["protected"]
    key = f"dropin:{uuid.uuid4().hex[:8]}"
    cache.get_or_set(key, lambda: [1, 2], 100)
    assert 89 <= cache.ttl(key) <= 100  # the soft TTL, jittered by up to 10%, not the grace
    assert cache.get_many([key]) == {key: [1, 2]}
    assert cache.incr_version(key) == 2
    assert cache.get(key, version=2) == [1, 2]


def test_a_protected_value_is_its_serialised_value_behind_a_short_header(shared_redis: Any) -> None:
    cache = caches["protected"]
    key = f"dropin:{uuid.uuid4().hex[:8]}"
    cache.get_or_set(key, lambda: {"price": 12}, 100)
    full = cache.make_key(key)
    raw = shared_redis.get(full)
    assert raw.startswith(MAGIC)
    assert raw.endswith(cache.client.encode({"price": 12}))  # serialised as django-redis does
    assert len(raw) - len(cache.client.encode({"price": 12})) < 64
    # The Redis TTL is the soft TTL plus the longest a stale value may be served
    # (default policy: grace 60 s, stale-if-error 300 s).
    assert 300 + 89 < shared_redis.ttl(full) <= 400


def test_keys_that_are_not_strings() -> None:
    from django_stability.cache import CacheSpec
    from django_stability.policies import registry

    registry.register(CacheSpec(name="prefixed", key_prefixes=("num",)))
    same(lambda c, k: (c.set(42, "int key", 60), c.get(42), c.get_or_set(43, "x", 60)))
