"""Rate limits: the policy, the decision, the decorator and the middleware gate, on real Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.test import override_settings

from django_stability import RateLimited, rate_limit, signals
from django_stability.exceptions import ClientDenied, StoreUnavailable
from django_stability.policies import registry
from django_stability.ratelimit import (
    PenaltyBox,
    RateLimitSpec,
    charges_for,
    check,
    compile_policy,
    decide,
    limited_now,
    policy_rate,
    reset,
)
from django_stability.routing import RouteFields
from django_stability.store import LocalStore, get_store
from django_stability.test import override_policy


def compiled(**fields: Any) -> Any:
    return compile_policy(RateLimitSpec.build(fields.pop("name", "p"), fields))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# The policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("rate", "often", "Expected a rate"),
        ("quota", "lots/d", "Expected a rate"),
        ("key", "cookie:x", "Expected a key"),
        ("overrides", "partner", "Expected overrides"),
        ("overrides", "partner=fast", "Expected overrides"),
        ("allow_networks", "10.0.0.0/33", "CIDR"),
        ("aggregate_ipv6_prefix", "129", "from 1 to 128"),
        ("near_limit", "120", "from 0 to 100"),
        ("cost", "0", "at least 1"),
    ],
)
def test_bad_fields_are_refused_with_the_format(field: str, value: str, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        RateLimitSpec.build("p", {field: value})


def test_a_cost_over_the_burst_is_refused() -> None:
    with pytest.raises(ValidationError, match="could never pass"):
        RateLimitSpec.build("p", {"rate": "5/m", "cost": "6"})
    with pytest.raises(ValidationError, match="whole quota"):
        RateLimitSpec.build("p", {"rate": "50/m", "cost": "6", "quota": "5/d"})


def test_the_decorator_refuses_bad_arguments_at_import() -> None:
    with pytest.raises(ImproperlyConfigured, match="Expected a rate"):
        rate_limit("bad", rate="ten a minute")


def test_policy_headers_follow_the_ietf_draft() -> None:
    policy = compiled(name="login", rate="5/m", quota="100/d")
    assert policy.policy_items == ('"login";q=5;w=60', '"login-quota";q=100;w=86400')


# The decision, request-free ---------------------------------------------------------------


def test_charges_apply_overrides_allow_and_deny_lists() -> None:
    import ipaddress

    policy = compiled(
        rate="10/m",
        overrides=["partner=1000/m", "bot=unlimited", "group:staff=100/m"],
        allow_networks=["192.0.2.0/24"],
        deny_networks=["203.0.113.0/24"],
    )
    (plain,) = charges_for(policy, "someone")
    assert (plain.limit, plain.period, plain.burst) == (10, 60, 10)
    (partner,) = charges_for(policy, "partner")
    assert (partner.limit, partner.burst) == (1000, 1000)
    assert charges_for(policy, "bot") == []
    (staff,) = charges_for(policy, "someone", groups=lambda: ["staff"])
    assert staff.limit == 100
    assert charges_for(policy, "x", address=ipaddress.ip_address("192.0.2.9")) == []
    with pytest.raises(Exception, match="p"):
        charges_for(policy, "x", address=ipaddress.ip_address("203.0.113.9"))


def test_global_scope_counts_every_key_together() -> None:
    policy = compiled(rate="2/h", scope="global")
    store = LocalStore()
    box = PenaltyBox()
    assert decide(charges_for(policy, "a"), store=store, box=box).allowed
    assert decide(charges_for(policy, "b"), store=store, box=box).allowed
    assert not decide(charges_for(policy, "c"), store=store, box=box).allowed


def test_quota_beside_the_rate() -> None:
    policy = compiled(rate="100/s", quota="3/d")
    store, box = LocalStore(), PenaltyBox()
    verdicts = [decide(charges_for(policy, "k"), store=store, box=box) for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert verdicts[-1].retry_after > 3600  # a day's budget of 3 refills one per 8 hours
    assert verdicts[-1].headers["RateLimit"].startswith('"p-quota";r=0;t=')


def test_cost_counts_several_units() -> None:
    policy = compiled(rate="10/h", cost=4)
    store, box = LocalStore(), PenaltyBox()
    results = [decide(charges_for(policy, "k"), store=store, box=box).allowed for _ in range(3)]
    assert results == [True, True, False]


def test_aggregate_limit_per_wider_network() -> None:
    import ipaddress

    policy = compiled(rate="10/h", aggregate_rate="3/h", aggregate_ipv6_prefix=48)
    store, box = LocalStore(), PenaltyBox()
    admitted = 0
    for i in range(6):  # six different /64s of one /48: each alone is under its limit
        address = ipaddress.ip_address(f"2001:db8:1:{i}::1")
        charges = charges_for(policy, f"2001:db8:1:{i}::/64", address=address)
        admitted += decide(charges, store=store, box=box).allowed
    assert admitted == 3


def test_retry_after_is_never_earlier_than_the_reset(settings: Any) -> None:
    policy = compiled(rate="3/10s", burst=1)
    store = get_store()
    first = decide(charges_for(policy, "k"), store=store, box=PenaltyBox())
    assert first.allowed
    refused = decide(charges_for(policy, "k"), store=store, box=PenaltyBox())
    assert not refused.allowed and refused.error is not None
    # 3 per 10 s with burst 1: the next unit is 3.33 s away -> "4", never "3".
    assert 3.0 < refused.retry_after <= 3.34
    assert refused.error.retry_after_header == "4"
    assert refused.headers["RateLimit"] == '"p";r=0;t=4'


def test_a_refused_key_costs_no_round_trip_until_it_may_retry() -> None:
    clock = Clock()
    box = PenaltyBox(clock=clock)
    policy = compiled(rate="1/h")
    store = get_store()
    assert decide(charges_for(policy, "abuser"), store=store, box=box).round_trips == 1
    refused = decide(charges_for(policy, "abuser"), store=store, box=box)
    assert not refused.allowed and refused.round_trips == 1
    for _ in range(100):
        again = decide(charges_for(policy, "abuser"), store=store, box=box)
        assert not again.allowed and again.round_trips == 0
        assert again.error is not None and again.error.retry_after_header == "3600"
    clock.now += 3600.5  # its retry time has come: back to the store
    assert decide(charges_for(policy, "abuser"), store=store, box=box).round_trips == 1
    assert decide(charges_for(policy, "other"), store=store, box=box).round_trips == 1


def test_the_penalty_box_is_bounded() -> None:
    box = PenaltyBox(size=3, clock=Clock())
    for i in range(10):
        box.add(f"k{i}", 5000.0)
    assert len(box) == 3
    assert box.until("k9", 1000.0) == 5000.0 and box.until("k0", 1000.0) is None


def test_all_policies_of_a_call_in_one_round_trip() -> None:
    policies = [compiled(name=f"p{i}", rate="10/m", quota="100/d") for i in range(3)]
    charges = [c for p in policies for c in charges_for(p, "k")]
    verdict = decide(charges, box=PenaltyBox())
    assert verdict.allowed and verdict.round_trips == 1
    assert verdict.headers["RateLimit-Policy"].count(";q=") == 6


def test_shadow_counts_signals_and_admits_off_does_nothing() -> None:
    events: list[dict[str, Any]] = []

    def record(**kwargs: Any) -> None:
        events.append(kwargs)

    signals.rate_limited.connect(record)
    try:
        shadow = compiled(name="dark", rate="1/h", mode="shadow")
        box = PenaltyBox()
        verdicts = [decide(charges_for(shadow, "k"), box=box) for _ in range(3)]
        assert all(v.allowed for v in verdicts)
        assert [v.shadow_refused for v in verdicts] == [(), ("dark",), ("dark",)]
        assert [e["policy"] for e in events] == ["dark", "dark"] and events[0]["shadow"]
        assert [key for key, _ in limited_now("dark")] == ["k"]  # recorded for the admin
        off = compiled(name="gone", rate="1/h", mode="off")
        assert charges_for(off, "k") == []
    finally:
        signals.rate_limited.disconnect(record)


def test_near_limit_headers_only_when_near() -> None:
    policy = compiled(rate="10/h", headers="near_limit", near_limit=20)
    box = PenaltyBox()
    sent = [bool(decide(charges_for(policy, "k"), box=box).headers) for _ in range(10)]
    # remaining after each: 9..0; headers once no more than 2 (20% of 10) remain
    assert sent == [False] * 7 + [True] * 3
    never = compiled(name="quiet", rate="1/h", headers="never")
    assert decide(charges_for(never, "k"), box=box).headers == {}
    refused = decide(charges_for(never, "k"), box=box)
    assert refused.headers["RateLimit"].startswith('"quiet";r=0;t=')  # refusals always say


def test_check_for_plain_code_and_reset() -> None:
    registry.register(RateLimitSpec(name="export", rate="2/h"))
    assert check("export", "tenant-1").allowed
    assert check("export", "tenant-1").allowed
    refused = check("export", "tenant-1")
    assert isinstance(refused.error, RateLimited)
    assert [key for key, _ in limited_now("export")] == ["tenant-1"]
    assert reset("export", "tenant-1") == 1
    assert limited_now("export") == []
    assert check("export", "tenant-1").allowed
    assert check("missing-policy", "x").allowed


# The decorator -----------------------------------------------------------------------------


def test_decorator_on_a_sync_view(client: Any) -> None:
    statuses = [client.get("/rl/decorated/").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    refused = client.get("/rl/decorated/", HTTP_ACCEPT="application/json")
    assert int(refused["Retry-After"]) >= 1
    body = json.loads(refused.content)
    assert body["policy"] == "t-decorated" and body["status"] == 429
    assert refused["RateLimit"].startswith('"t-decorated";r=0;t=')


async def test_decorator_on_an_async_view(async_client: Any) -> None:
    statuses = [(await async_client.get("/rl/decorated-async/")).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


def test_admitted_responses_carry_the_headers(client: Any) -> None:
    response = client.get("/rl/decorated/")
    assert response["RateLimit-Policy"] == '"t-decorated";q=3;w=3600'
    assert response["RateLimit"] == '"t-decorated";r=2;t=1200'


def test_the_admin_row_overrides_the_decorator(client: Any) -> None:
    with override_policy(RateLimitSpec(name="t-decorated", rate="1/h")):
        assert [client.get("/rl/decorated/").status_code for _ in range(2)] == [200, 429]


def test_decorator_methods_and_block_false(client: Any) -> None:
    assert [client.get("/rl/posts/").status_code for _ in range(3)] == [200] * 3
    assert [client.post("/rl/posts/").status_code for _ in range(2)] == [200, 429]
    assert [client.get("/rl/soft/").json()["limited"] for _ in range(2)] == [False, True]


def test_decorator_with_a_key_function(client: Any) -> None:
    statuses = [client.get("/rl/tenant/?tenant=a").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert client.get("/rl/tenant/?tenant=b").status_code == 200


def test_decorator_on_a_plain_callable() -> None:
    calls = []

    @rate_limit("t-task", rate="2/h", key=lambda account: account)
    def send_report(account: str) -> str:
        calls.append(account)
        return "sent"

    assert send_report("a") == "sent" and send_report("a") == "sent"
    with pytest.raises(RateLimited) as refused:
        send_report("a")
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    assert send_report("b") == "sent"
    assert calls == ["a", "a", "b"]


async def test_decorator_on_a_plain_coroutine() -> None:
    @rate_limit("t-async-task", rate="1/h", key="ip")  # a request key: one counter for all
    async def job(n: int) -> int:
        return n

    assert await job(1) == 1
    with pytest.raises(RateLimited):
        await job(2)


def test_rate_limited_without_the_middleware_is_a_django_ratelimit_403(
    client: Any, settings: Any
) -> None:
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "StabilityMiddleware" not in m]
    statuses = [client.get("/rl/decorated/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 403]


# The middleware gate -------------------------------------------------------------------------


def test_routed_policy_by_path_name_and_method(client: Any) -> None:
    registry.register(RateLimitSpec(name="plain-path", path_prefixes=("/rl/plain",), rate="2/h"))
    registry.register(
        RateLimitSpec(name="other-post", url_names=("rl-other",), methods=("POST",), rate="1/h")
    )
    assert [client.get("/rl/plain/").status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/rl/plain-async/").status_code == 429  # same prefix, same counter
    assert client.get("/rl/other/").status_code == 200  # GET is not covered
    assert [client.post("/rl/other/").status_code for _ in range(2)] == [200, 429]


async def test_routed_policy_under_the_async_entry(async_client: Any) -> None:
    registry.register(RateLimitSpec(name="plain-async", path_prefixes=("/rl/plain",), rate="2/h"))
    statuses = [(await async_client.get("/rl/plain-async/")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_middleware_and_decorator_never_charge_twice(client: Any) -> None:
    registry.register(
        RateLimitSpec(name="t-decorated", url_names=("rl-decorated",), rate="3/h", key="ip")
    )
    assert [client.get("/rl/decorated/").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_spoofed_forwarded_for_does_not_bypass_an_ip_limit(client: Any, settings: Any) -> None:
    settings.STABILITY = {**settings.STABILITY, "TRUSTED_PROXIES": ["127.0.0.0/8"]}
    registry.register(RateLimitSpec(name="by-ip", path_prefixes=("/rl/plain/",), rate="3/h"))
    statuses = []
    for i in range(10):
        # The client writes any XFF it likes; the trusted proxy (127.0.0.1) appends the truth.
        spoofed = f"10.{i}.{i}.{i}, 198.51.100.{i}"
        statuses.append(
            client.get("/rl/plain/", HTTP_X_FORWARDED_FOR=f"{spoofed}, 203.0.113.5").status_code
        )
    assert statuses == [200] * 3 + [429] * 7
    # Without trusted proxies the header is ignored altogether.
    settings.STABILITY = {**settings.STABILITY, "TRUSTED_PROXIES": []}
    statuses = [
        client.get("/rl/plain/", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}").status_code for i in range(3)
    ]
    assert statuses == [200, 200, 200]  # 127.0.0.1 has its own counter...
    assert client.get("/rl/plain/", HTTP_X_FORWARDED_FOR="192.0.2.77").status_code == 429


@pytest.mark.parametrize(
    "header",
    [
        "",
        ",,,,",
        "garbage",
        "1.2.3.4, garbage, 5.6.7.8",
        "[::1",
        "1.2.3.4:99999",
        "\u00ff\u00fe",
        "1.2.3.4 " * 5000,
        ", ".join(["10.0.0.1"] * 5000),
        "for=192.0.2.60;proto=http;by=203.0.113.43",
    ],
)
def test_malformed_or_multi_hop_headers_never_give_a_500(
    client: Any, settings: Any, header: str
) -> None:
    settings.STABILITY = {**settings.STABILITY, "TRUSTED_PROXIES": ["127.0.0.0/8", "10.0.0.0/8"]}
    registry.register(RateLimitSpec(name="by-ip", path_prefixes=("/rl/plain/",), rate="100/h"))
    assert client.get("/rl/plain/", HTTP_X_FORWARDED_FOR=header).status_code == 200


def test_deny_and_allow_networks(client: Any) -> None:
    registry.register(
        RateLimitSpec(
            name="lists",
            path_prefixes=("/rl/plain/",),
            rate="1/h",
            allow_networks=("192.0.2.0/24",),
            deny_networks=("203.0.113.0/24",),
        )
    )
    denied = client.get("/rl/plain/", REMOTE_ADDR="203.0.113.9", HTTP_ACCEPT="application/json")
    assert denied.status_code == 403 and "Retry-After" not in denied
    assert [client.get("/rl/plain/", REMOTE_ADDR="192.0.2.1").status_code for _ in range(5)] == [
        200
    ] * 5


def test_a_failing_key_function_skips_the_policy(client: Any) -> None:
    registry.register(
        RateLimitSpec(name="broken", path_prefixes=("/rl/plain/",), rate="1/h", key="no.such.fn")
    )
    assert [client.get("/rl/plain/").status_code for _ in range(3)] == [200] * 3


def test_fail_closed_refuses_while_the_store_is_unreachable(client: Any) -> None:
    # A store URL nobody listens on: connections are refused at once.
    from tests.redis_servers import free_port

    with override_settings(
        STABILITY={
            "STORE_URL": f"redis://127.0.0.1:{free_port()}/0",
            "STORE_KEY_PREFIX": "closed",
        }
    ):
        registry.register(
            RateLimitSpec(
                name="login-closed",
                path_prefixes=("/rl/plain/",),
                rate="100/h",
                on_store_failure="closed",
            )
        )
        response = client.get("/rl/plain/", HTTP_ACCEPT="application/json")
        assert response.status_code == 503
        assert int(response["Retry-After"]) >= 1
        assert json.loads(response.content)["policy"] == "login-closed"
        assert isinstance(check("login-closed", "x").error, StoreUnavailable)


def test_global_switch_turns_every_limit_off(client: Any, settings: Any) -> None:
    settings.STABILITY = {**settings.STABILITY, "RATELIMIT_ENABLED": False}
    assert [client.get("/rl/decorated/").status_code for _ in range(5)] == [200] * 5


def test_per_request_cost_does_not_grow_with_the_number_of_policies(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 vs 1000 routed policies: the same work per request (counted, not timed)."""
    from django_stability.store import FailsafeStore

    counted = {"methods": 0, "limits": 0}
    original = RouteFields.allows_method
    store = get_store()
    assert isinstance(store, FailsafeStore)
    original_rate_limit = store.rate_limit

    def allows_method(self: RouteFields, method: str | None) -> bool:
        counted["methods"] += 1
        return original(self, method)

    def rate_limit_counted(limits: Any) -> Any:
        counted["limits"] += len(limits)
        return original_rate_limit(limits)

    monkeypatch.setattr(RouteFields, "allows_method", allows_method)
    monkeypatch.setattr(store, "rate_limit", rate_limit_counted)

    def work_with(n: int) -> dict[str, int]:
        saved = registry.code_defaults()
        for i in range(n - 1):
            registry.register(
                RateLimitSpec(name=f"api-{n}-{i}", path_prefixes=(f"/api/v{i}/",), rate="10/s")
            )
        registry.register(RateLimitSpec(name=f"hit-{n}", path_prefixes=("/rl/plain/",)))
        client.get("/rl/plain/")  # builds the index once
        counted.update(methods=0, limits=0)
        for _ in range(20):
            assert client.get("/rl/plain/").status_code == 200
        registry.restore_code_defaults(saved)
        return dict(counted)

    assert work_with(10) == work_with(1000) == {"methods": 20, "limits": 20}


def test_policy_rate_for_django_ratelimit(rf: Any) -> None:
    from django_ratelimit.core import is_ratelimited

    rate = policy_rate("search", "2/m")
    request = rf.get("/", REMOTE_ADDR="192.0.2.44")
    limited = [
        is_ratelimited(request, group="g-search", key="ip", rate=rate, increment=True)
        for _ in range(3)
    ]
    assert limited == [False, False, True]
    with override_policy(RateLimitSpec(name="search", rate="50/m")):
        assert rate("g", request) == "50/m"
    with override_policy(RateLimitSpec(name="search", mode="off")):
        assert rate("g", request) is None
        assert not is_ratelimited(request, group="g-off", key="ip", rate=rate, increment=True)


def test_denied_is_still_a_rate_limited() -> None:
    from django_ratelimit.exceptions import Ratelimited

    assert issubclass(ClientDenied, RateLimited) and issubclass(ClientDenied, Ratelimited)


@pytest.mark.django_db
def test_group_override_for_a_signed_in_user(rf: Any, django_user_model: Any) -> None:
    from django.contrib.auth.models import Group

    from django_stability.ratelimit import decide_request

    partner = django_user_model.objects.create_user("partner")
    partner.groups.add(Group.objects.create(name="partners"))
    someone = django_user_model.objects.create_user("someone")
    policy = compiled(name="api", rate="1/h", key="user", overrides=["group:partners=3/h"])

    def admitted(user: Any) -> int:
        count = 0
        for _ in range(5):
            request = rf.get("/api/")
            request.user = user
            count += decide_request([policy], request).allowed
        return count

    assert admitted(partner) == 3
    assert admitted(someone) == 1


def test_shadow_and_off_through_the_middleware_and_the_decorator(client: Any) -> None:
    events: list[str] = []

    def record(policy: str, shadow: bool, **kwargs: Any) -> None:
        events.append(f"{policy}:{'shadow' if shadow else 'refused'}")

    signals.rate_limited.connect(record)
    try:
        registry.register(
            RateLimitSpec(name="dark", path_prefixes=("/rl/plain/",), rate="1/h", mode="shadow")
        )
        assert [client.get("/rl/plain/").status_code for _ in range(3)] == [200] * 3
        assert events == ["dark:shadow", "dark:shadow"]
        assert [key for key, _ in limited_now("dark")] == ["127.0.0.1"]
        with override_policy(RateLimitSpec(name="t-decorated", mode="off")):
            assert [client.get("/rl/decorated/").status_code for _ in range(5)] == [200] * 5
        assert limited_now("t-decorated") == []
        assert events == ["dark:shadow", "dark:shadow"]
    finally:
        signals.rate_limited.disconnect(record)
