"""The store and the registry: a decision's cost as a multiple of a Redis PING; a lookup's cost."""

from __future__ import annotations

import uuid

from benchmarks.harness import line, median_seconds, per_call_seconds


def main() -> None:
    from django.conf import settings

    from django_stability.policies import registry
    from django_stability.ratelimit import RateLimitSpec
    from django_stability.store import FailsafeStore, Limit, LocalStore, get_store

    store = get_store()
    assert isinstance(store, FailsafeStore), "the benchmark needs the Redis store"
    client = store.primary.client  # type: ignore[attr-defined]
    run = uuid.uuid4().hex[:6]
    print(f"store (Redis at {settings.CACHES['default']['LOCATION']}, one process, medians):")

    ping = median_seconds(client.ping)
    one = [Limit(f"b{run}:one", 10**9, 1, 10**9)]
    three = [Limit(f"b{run}:{i}", 10**9, 1, 10**9) for i in range(3)]
    decision_1 = median_seconds(lambda: store.rate_limit(one))
    decision_3 = median_seconds(lambda: store.rate_limit(three))
    lease = median_seconds(lambda: store.acquire_lease(f"b{run}:lease", "me", 10, 30))
    line("redis PING", f"{ping * 1e6:8.1f} us")
    line(
        "rate-limit decision, 1 limit",
        f"{decision_1 * 1e6:8.1f} us = {decision_1 / ping:4.2f} x PING",
    )
    line(
        "rate-limit decision, 3 limits together",
        f"{decision_3 * 1e6:8.1f} us = {decision_3 / ping:4.2f} x PING",
    )
    line("lease acquire/renew", f"{lease * 1e6:8.1f} us = {lease / ping:4.2f} x PING")

    local = LocalStore()
    local_decision = median_seconds(lambda: local.rate_limit(one))
    line("rate-limit decision in the local store (fallback)", f"{local_decision * 1e6:8.2f} us")

    registry.register(RateLimitSpec(name="bench", rate="5/m"))
    registry.get(RateLimitSpec, "bench")
    lookup = per_call_seconds(lambda: registry.get(RateLimitSpec, "bench"))
    line("policy snapshot lookup (registry.get)", f"{lookup * 1e9:8.0f} ns")
