"""Rate limits: the policy kind, the decision, the decorator and the middleware gate.

A rate is written as django-ratelimit writes it: a count, a slash, and a period
with an optional multiplier: ``100/m``, ``5/10s``, ``1000/d``.

The decision knows nothing of HTTP: ``charges_for()`` says what one call
costs under a policy for one key, and ``decide()`` settles every charge of a
request in one store call (one Lua script, one round trip), remembering in this
process the keys that are over their limit until they may retry, so that an
abusive client costs no round trip at all. The HTTP side (which key a request
has, the middleware gate, the headers on the response) sits on top of it, and
so does anything else that wants a limit: a Celery task, a management command.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.http import HttpRequest, HttpResponseBase

from . import responses, signals
from .callables import refused_in_task, reject_celery_task
from .clientip import IPNetwork, client_ip, group_address, is_in, parse_networks
from .conf import settings
from .exceptions import ClientDenied, RateLimited, StabilityError, StoreUnavailable
from .policies import PolicySpec, parse_int, registry, spec_field
from .ratelimit_keys import needs_user, parse_key, request_key
from .routing import RouteFields, RouteIndex
from .store import Limit, LimitResult, Store, get_store
from .tally import tally

logger = logging.getLogger("django_stability.ratelimit")

F = TypeVar("F", bound=Callable[..., Any])

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
RATE_FORMAT = (
    "a count, a slash and a period with an optional multiplier and a unit of s, m, h or d, "
    "e.g. 100/m or 5/10s"
)
UNLIMITED = "unlimited"
#: The key of a policy whose scope is global (one counter for every request).
GLOBAL_KEY = "*"


def parse_rate(raw: Any) -> tuple[int, int]:
    """``"5/10s"`` -> ``(5, 10)``: a count and a period in seconds.

    Raises ValueError naming the expected format.
    """
    match = _RATE.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise ValueError(f"Expected a rate as {RATE_FORMAT}; got {raw!r}.")
    count, multiplier, unit = match.groups()
    period = int(multiplier or 1) * _UNITS[unit]
    if int(count) < 1 or period < 1:
        raise ValueError(f"A rate needs a count and a period of at least 1; got {raw!r}.")
    return int(count), period


def _checked_rate(raw: Any) -> str:
    parse_rate(raw)
    return str(raw).strip().replace(" ", "")


def _checked_networks(raw: Any) -> tuple[str, ...]:
    return tuple(str(network) for network in parse_networks(raw))


OVERRIDE_FORMAT = (
    "one per line: a key value or group:<group name>, an equals sign, and a rate or "
    "'unlimited', e.g. partner-key-1=1000/m or group:partners=500/m"
)


def parse_override(line: str) -> tuple[str, str | None, tuple[int, int] | None]:
    """``"group:partners=500/m"`` -> ``("group", "partners", (500, 60))``; unlimited -> None."""
    target, sep, rate = line.rpartition("=")
    target, rate = target.strip(), rate.strip()
    if not sep or not target:
        raise ValueError(f"Expected overrides as {OVERRIDE_FORMAT}; got {line!r}.")
    parsed = None if rate.lower() == UNLIMITED else parse_rate(rate)
    if target.startswith("group:") and target[6:].strip():
        return "group", target[6:].strip(), parsed
    return "key", target, parsed


def _checked_overrides(raw: Any) -> tuple[str, ...]:
    from .policies import parse_str_tuple

    lines = parse_str_tuple(raw.splitlines() if isinstance(raw, str) else raw)
    for line in lines:
        try:
            parse_override(line)
        except ValueError as exc:
            raise ValueError(f"Expected overrides as {OVERRIDE_FORMAT}; {exc}") from None
    return lines


@registry.register_kind
@dataclass(frozen=True)
class RateLimitSpec(RouteFields, PolicySpec):
    """A rate limit: how many requests per period, for which key."""

    kind = "ratelimit"
    verbose_name = "rate limit"
    admin_class = "django_stability.ratelimit_admin.RateLimitPolicyAdmin"

    rate: str = spec_field(
        "100/m",
        help="The sustained rate allowed per key.",
        parse=_checked_rate,
        format=RATE_FORMAT,
    )
    burst: int | None = spec_field(
        None,
        help="Requests allowed at once from an idle start; empty means the rate's count.",
        parse=lambda raw: parse_int(raw, minimum=1),
        format="a whole number of at least 1",
    )
    key: str = spec_field(
        "ip",
        help="What is counted: ip, user, user_or_ip, header:<name>, get:<name>, post:<name>, "
        "or a dotted path to a function of (group, request).",
        parse=parse_key,
        format="ip, user, user_or_ip, header:<name>, get:<name>, post:<name> or a dotted path",
    )
    scope: str = spec_field(
        "key",
        choices=("key", "global"),
        help="key counts each key apart; global counts every request together (one counter).",
    )
    cost: int = spec_field(
        1,
        help="How many units one request spends (an expensive endpoint counts as several).",
        parse=lambda raw: parse_int(raw, minimum=1),
        format="a whole number of at least 1",
    )
    quota: str | None = spec_field(
        None,
        help="A budget over a long period beside the rate, e.g. 10000/d or 100000/30d; "
        "empty for none.",
        parse=_checked_rate,
        format=RATE_FORMAT,
    )
    mode: str = spec_field(
        "enforce",
        choices=("enforce", "shadow", "off"),
        help="enforce refuses; shadow counts and reports but admits (a dark launch); "
        "off does nothing.",
    )
    on_store_failure: str = spec_field(
        "open",
        choices=("open", "closed"),
        help="When the shared store cannot be reached: open admits (with per-process limits), "
        "closed refuses.",
    )
    overrides: tuple[str, ...] = spec_field(
        (),
        help="Other rates for given keys or user groups (a partner API key with a higher rate).",
        parse=_checked_overrides,
        format=OVERRIDE_FORMAT,
    )
    allow_networks: tuple[str, ...] = spec_field(
        (),
        help="Client networks this policy never limits (e.g. your monitoring).",
        parse=_checked_networks,
        format="networks in CIDR notation, one per line, e.g. 10.0.0.0/8",
    )
    deny_networks: tuple[str, ...] = spec_field(
        (),
        help="Client networks refused outright (403) by this policy.",
        parse=_checked_networks,
        format="networks in CIDR notation, one per line, e.g. 203.0.113.0/24",
    )
    aggregate_rate: str | None = spec_field(
        None,
        help="A second limit shared by every client of a wider network (see the prefixes); "
        "empty for none.",
        parse=_checked_rate,
        format=RATE_FORMAT,
    )
    aggregate_ipv4_prefix: int = spec_field(
        24,
        help="The IPv4 network length that aggregate_rate counts together.",
        parse=lambda raw: _prefix(raw, 32),
        format="a prefix length from 1 to 32",
    )
    aggregate_ipv6_prefix: int = spec_field(
        48,
        help="The IPv6 network length that aggregate_rate counts together.",
        parse=lambda raw: _prefix(raw, 128),
        format="a prefix length from 1 to 128",
    )
    headers: str = spec_field(
        "always",
        choices=("always", "near_limit", "never"),
        help="When admitted responses carry the RateLimit-Policy and RateLimit fields: always, "
        "only when the client is near its limit, or never (refusals always carry them).",
    )
    near_limit: int = spec_field(
        20,
        help="With headers=near_limit: signal when no more than this percentage of the burst "
        "remains.",
        parse=lambda raw: _percentage(raw),
        format="a whole number from 0 to 100",
    )

    @property
    def limit_and_period(self) -> tuple[int, int]:
        return parse_rate(self.rate)

    def check(self) -> None:
        count, _ = parse_rate(self.rate)
        burst = self.burst if self.burst is not None else count
        if self.burst is not None and self.burst < 1:
            raise ValidationError({"burst": "Expected a whole number of at least 1."})
        if self.cost > burst:
            raise ValidationError(
                {"cost": f"A request costing {self.cost} could never pass a burst of {burst}."}
            )
        if self.quota is not None and self.cost > parse_rate(self.quota)[0]:
            raise ValidationError({"cost": "A request costs more than the whole quota."})
        for line in self.overrides:
            _, _, rate = parse_override(line)
            if rate is not None and self.cost > _scaled_burst(self, rate):
                raise ValidationError(
                    {"overrides": f"{line!r}: a request costing {self.cost} could never pass."}
                )


def _prefix(raw: Any, maximum: int) -> int:
    value = parse_int(raw, minimum=1)
    if value > maximum:
        raise ValueError(f"Expected a prefix length from 1 to {maximum}; got {value}.")
    return value


def _percentage(raw: Any) -> int:
    value = parse_int(raw, minimum=0)
    if value > 100:
        raise ValueError(f"Expected a whole number from 0 to 100; got {value}.")
    return value


def _scaled_burst(spec: RateLimitSpec, rate: tuple[int, int]) -> int:
    """The burst under an override rate: the policy's burst scaled like the count."""
    count = spec.limit_and_period[0]
    if spec.burst is None:
        return rate[0]
    return max(1, round(spec.burst * rate[0] / count))


# Compiled policies ----------------------------------------------------------------


def _sf_string(text: str) -> str:
    """A Structured Fields string (RFC 8941): printable ASCII, quoted, escaped."""
    clean = "".join(c for c in text if 32 <= ord(c) < 127)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class CompiledRateLimit:
    """A policy with everything parsed, built once per policy change (not per request)."""

    spec: RateLimitSpec
    limit: int
    period: int
    burst: int
    quota: tuple[int, int] | None
    aggregate: tuple[int, int] | None
    key_overrides: Mapping[str, tuple[int, int] | None]
    group_overrides: tuple[tuple[str, tuple[int, int] | None], ...]
    allow: tuple[IPNetwork, ...]
    deny: tuple[IPNetwork, ...]
    enforce: bool
    near_remaining: int
    #: The RateLimit-Policy items of this policy (draft-ietf-httpapi-ratelimit-headers).
    policy_items: tuple[str, ...]
    header_names: Mapping[str, str] = field(default_factory=dict)
    #: Charges already built for this policy, by what they depend on (a request from a
    #: client seen before builds nothing). Bounded: cleared when full.
    charges_memo: dict[tuple[Any, ...], Charge] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def name(self) -> str:
        return self.spec.name


def compile_policy(spec: RateLimitSpec) -> CompiledRateLimit:
    """Parse a policy once; the result is memoised until the policies change."""
    limit, period = spec.limit_and_period
    burst = spec.burst if spec.burst is not None else limit
    quota = parse_rate(spec.quota) if spec.quota else None
    aggregate = parse_rate(spec.aggregate_rate) if spec.aggregate_rate else None
    key_overrides: dict[str, tuple[int, int] | None] = {}
    group_overrides: list[tuple[str, tuple[int, int] | None]] = []
    for line in spec.overrides:
        kind, target, rate = parse_override(line)
        if kind == "group":
            group_overrides.append((str(target), rate))
        else:
            key_overrides[str(target)] = rate
    names = {
        "main": _sf_string(spec.name),
        "quota": _sf_string(f"{spec.name}-quota"),
        "network": _sf_string(f"{spec.name}-network"),
    }
    items = [f"{names['main']};q={limit};w={period}"]
    if quota:
        items.append(f"{names['quota']};q={quota[0]};w={quota[1]}")
    return CompiledRateLimit(
        spec=spec,
        limit=limit,
        period=period,
        burst=burst,
        quota=quota,
        aggregate=aggregate,
        key_overrides=key_overrides,
        group_overrides=tuple(group_overrides),
        allow=parse_networks(list(spec.allow_networks)),
        deny=parse_networks(list(spec.deny_networks)),
        enforce=spec.mode == "enforce",
        near_remaining=math.floor(burst * spec.near_limit / 100),
        policy_items=tuple(items),
        header_names=names,
    )


def compiled(spec: RateLimitSpec) -> CompiledRateLimit:
    """The compiled form of ``spec``, memoised per effective policy object."""
    cache: dict[str, CompiledRateLimit] = registry.derived("ratelimit:compiled", dict)
    entry = cache.get(spec.name)
    if entry is None or entry.spec is not spec:
        entry = cache[spec.name] = compile_policy(spec)
    return entry


def policy(name: str) -> CompiledRateLimit | None:
    """The compiled effective policy named ``name``, or None."""
    spec = registry.get(RateLimitSpec, name)
    return None if spec is None else compiled(spec)


# Charges: what one call costs ---------------------------------------------------------


def key_part(value: str) -> str:
    """A key value as stored: short printable values as they are, others hashed."""
    if len(value) <= 100 and value.isprintable():
        return value
    return "h:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class Charge:
    """One policy's part in a decision: which key pays, at which rate, how much."""

    policy: CompiledRateLimit
    key: str
    limit: int
    period: int
    burst: int
    cost: int = 1
    #: The client's wider network, when the policy has an aggregate limit.
    network: str | None = None

    @functools.cached_property
    def limits(self) -> tuple[tuple[str, Limit], ...]:
        """The store limits of this charge, each with what it is ("main", "quota", "network")."""
        spec = self.policy.spec
        name = spec.name
        enforce = self.policy.enforce
        found = [
            (
                "main",
                Limit(
                    f"{name}:{self.key}",
                    self.limit,
                    self.period,
                    self.burst,
                    self.cost,
                    enforce,
                    track=name,
                ),
            )
        ]
        if self.policy.quota:
            count, period = self.policy.quota
            found.append(
                (
                    "quota",
                    Limit(f"{name}:q:{self.key}", count, period, count, self.cost, enforce, name),
                )
            )
        if self.policy.aggregate and self.network:
            count, period = self.policy.aggregate
            found.append(
                (
                    "network",
                    Limit(f"{name}:n:{self.network}", count, period, count, 1, enforce, track=name),
                )
            )
        return tuple(found)


#: Charges memoised per policy, at most.
CHARGES_MEMO = 4096


class Denied(Exception):
    """The client is in a policy's deny list (raised by ``charges_for``)."""

    def __init__(self, policy: str) -> None:
        super().__init__(policy)
        self.policy = policy


def charges_for(
    policy: CompiledRateLimit,
    key: str | None,
    *,
    cost: int | None = None,
    address: Any = None,
    groups: Callable[[], Iterable[str]] | None = None,
) -> list[Charge]:
    """What a call keyed ``key`` from ``address`` costs under ``policy`` (no I/O).

    Returns no charge when the policy is off, allows the address, or gives the
    key an unlimited override; raises ``Denied`` when it denies the address.
    ``groups`` is called only if the policy has group overrides.
    """
    spec = policy.spec
    if spec.mode == "off":
        return []
    if address is not None:
        if policy.deny and is_in(address, policy.deny):
            raise Denied(spec.name)
        if policy.allow and is_in(address, policy.allow):
            return []
    if spec.scope == "global" or key is None:
        key = GLOBAL_KEY
    rate: tuple[int, int] | None = (policy.limit, policy.period)
    burst = policy.burst
    override = policy.key_overrides.get(key, rate) if policy.key_overrides else rate
    if override is not rate:
        rate = override
    elif policy.group_overrides and groups is not None:
        mine = set(groups())
        for group, group_rate in policy.group_overrides:
            if group in mine:
                rate = group_rate
                break
    if rate is None:
        return []
    if rate != (policy.limit, policy.period):
        burst = _scaled_burst(spec, rate)
    network = None
    if policy.aggregate and address is not None:
        network = group_address(address, spec.aggregate_ipv4_prefix, spec.aggregate_ipv6_prefix)
    cost = cost if cost is not None else spec.cost
    memo_key = (key, rate, burst, cost, network)
    memo = policy.charges_memo
    charge = memo.get(memo_key)
    if charge is None:
        if len(memo) >= CHARGES_MEMO:
            memo.clear()
        charge = memo[memo_key] = Charge(
            policy, key_part(key), rate[0], rate[1], burst, cost, network
        )
    return [charge]


# The decision ---------------------------------------------------------------------------


class PenaltyBox:
    """Keys over their limit in this process, until they may retry: refused with no I/O.

    Bounded (the oldest entries go first) and self-cleaning (expired entries go
    when seen). Reading takes no lock.
    """

    def __init__(self, size: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._until)

    def until(self, key: str, now: float) -> float | None:
        """When ``key`` may retry, if it is boxed now."""
        until = self._until.get(key)
        if until is None:
            return None
        if until <= now:
            with self._lock:
                if self._until.get(key, now + 1) <= now:
                    del self._until[key]
            return None
        return until

    def add(self, key: str, until: float) -> None:
        with self._lock:
            self._until[key] = until
            self._until.move_to_end(key)
            while len(self._until) > self.size:
                self._until.popitem(last=False)

    def forget(self, keys: Iterable[str] = ()) -> None:
        """Drop the given keys, or all of them when none are given."""
        with self._lock:
            keys = list(keys)
            if not keys:
                self._until.clear()
            for key in keys:
                self._until.pop(key, None)


_box: PenaltyBox | None = None
_box_store: Store | None = None


def penalty_box() -> PenaltyBox:
    """This process's penalty box, sized by ``RATELIMIT_PENALTY_BOX_SIZE``.

    It remembers what one store said, so a new store (new settings) gets a new box.
    """
    global _box, _box_store
    box, store = _box, get_store()
    if box is None or store is not _box_store or box.size != settings.RATELIMIT_PENALTY_BOX_SIZE:
        box = _box = PenaltyBox(settings.RATELIMIT_PENALTY_BOX_SIZE)
        _box_store = store
    return box


def _forget_box(**kwargs: Any) -> None:
    # A reset in the admin, or a changed policy, must take effect at once.
    if _box is not None:
        _box.forget()


signals.policies_reloaded.connect(_forget_box, dispatch_uid="django_stability.ratelimit.box")


@dataclass(frozen=True)
class Verdict:
    """The answer to all the charges of one call."""

    allowed: bool
    #: What to raise (or answer with) when refused.
    error: StabilityError | None = None
    #: RateLimit-Policy and RateLimit fields, when the policies want them sent.
    headers: Mapping[str, str] = field(default_factory=dict)
    #: True when the store could not be reached and this process decided alone.
    degraded: bool = False
    #: Store calls made: 0 (nothing to decide, or a key in the penalty box) or 1.
    round_trips: int = 0
    #: Shadow policies that would have refused.
    shadow_refused: tuple[str, ...] = ()

    @property
    def retry_after(self) -> float:
        if self.error is None or self.error.retry_after is None:
            return 0.0
        return self.error.retry_after


ADMITTED = Verdict(True)


def _ceil(seconds: float) -> int:
    return max(0, math.ceil(seconds - 1e-6))


def _headers(pairs: Sequence[tuple[Charge, str, LimitResult]], refused: bool) -> dict[str, str]:
    """The draft's fields: every enforced policy, and the tightest one's current state."""
    items: list[str] = []
    tightest: tuple[int, int, str] | None = None
    wanted = refused
    seen: set[str] = set()
    for charge, what, result in pairs:
        policy = charge.policy
        if not policy.enforce or (policy.spec.headers == "never" and not refused):
            continue
        if policy.name not in seen:
            seen.add(policy.name)
            items.extend(policy.policy_items)
        if result.allowed:
            remaining, reset = result.remaining, _ceil(result.reset_after)
        else:
            remaining, reset = 0, max(1, _ceil(result.retry_after))
        mode = policy.spec.headers
        if mode == "always" or (mode == "near_limit" and remaining <= policy.near_remaining):
            wanted = True
        candidate = (remaining, -reset, f"{policy.header_names[what]};r={remaining};t={reset}")
        if tightest is None or candidate[:2] < tightest[:2]:
            tightest = candidate
    if not wanted or tightest is None:
        return {}
    return {"RateLimit-Policy": ", ".join(items), "RateLimit": tightest[2]}


def decide(
    charges: Sequence[Charge],
    *,
    store: Store | None = None,
    box: PenaltyBox | None = None,
) -> Verdict:
    """Settle every charge in one store call (none if a key is in the penalty box)."""
    if not charges:
        return ADMITTED
    for charge in charges:  # for the Stability page and the metrics; no I/O
        tally.add(("ratelimit_decisions", charge.policy.name))
    store = store if store is not None else get_store()
    box = box if box is not None else penalty_box()
    pairs = [(charge, what, limit) for charge in charges for what, limit in charge.limits]
    now = box.clock()
    for charge, what, limit in pairs if len(box) else ():
        if not limit.enforce:
            continue
        until = box.until(limit.key, now)
        if until is not None:
            wait = until - now
            headers = {
                "RateLimit-Policy": ", ".join(charge.policy.policy_items),
                "RateLimit": f"{charge.policy.header_names[what]};r=0;t={max(1, _ceil(wait))}",
            }
            boxed = RateLimited(policy=charge.policy.name, retry_after=wait, headers=headers)
            signals.rate_limited.send(
                sender=RateLimitSpec,
                policy=charge.policy.name,
                shadow=False,
                retry_after=wait,
                degraded=False,
                boxed=True,
            )
            return Verdict(False, boxed, headers)
    decision = store.rate_limit([limit for _, _, limit in pairs])
    results = decision.results
    annotated = [(c, w, r) for (c, w, _), r in zip(pairs, results, strict=True)]
    shadow: tuple[str, ...] = ()
    if not all(result.allowed for result in results):
        shadow = tuple(
            sorted(
                {c.policy.name for c, _, r in annotated if not r.allowed and not r.limit.enforce}
            )
        )
    for name in shadow:
        logger.info("Shadow rate limit %r would have refused a request.", name)
        signals.rate_limited.send(
            sender=RateLimitSpec, policy=name, shadow=True, retry_after=0.0, degraded=False
        )
    if decision.degraded:
        closed = [c for c in charges if c.policy.spec.on_store_failure == "closed"]
        if closed:
            wait = float(getattr(getattr(store, "breaker", None), "time_left_open", lambda: 1)())
            unavailable = StoreUnavailable(
                "The rate limit cannot be checked right now; try again shortly.",
                policy=closed[0].policy.name,
                retry_after=max(1.0, wait),
            )
            return Verdict(False, unavailable, degraded=True, round_trips=1, shadow_refused=shadow)
    if decision.allowed:
        return Verdict(
            True,
            headers=_headers(annotated, refused=False),
            degraded=decision.degraded,
            round_trips=1,
            shadow_refused=shadow,
        )
    refusing = [(c, r) for c, _, r in annotated if not r.allowed and r.limit.enforce]
    if not decision.degraded:
        # Only what the shared store said is remembered: a refusal by this
        # process's fallback must not outlive the outage.
        for _, result in refusing:
            box.add(result.limit.key, now + result.retry_after)
    charge, result = max(refusing, key=lambda pair: pair[1].retry_after)
    headers = _headers(annotated, refused=True)
    signals.rate_limited.send(
        sender=RateLimitSpec,
        policy=charge.policy.name,
        shadow=False,
        retry_after=decision.retry_after,
        degraded=decision.degraded,
    )
    error = RateLimited(
        policy=charge.policy.name, retry_after=decision.retry_after, headers=headers
    )
    return Verdict(
        False,
        error,
        headers,
        degraded=decision.degraded,
        round_trips=1,
        shadow_refused=shadow,
    )


def check(name: str, key: str | None = None, *, cost: int | None = None) -> Verdict:
    """Decide one call under the policy ``name`` for ``key`` (no request needed).

    For code that is not a view (a task, a command): ``key`` is what is counted
    (None counts every call together). A policy that does not exist admits.
    """
    if not settings.RATELIMIT_ENABLED:
        return ADMITTED
    compiled_policy = policy(name)
    if compiled_policy is None:
        return ADMITTED
    return decide(charges_for(compiled_policy, key, cost=cost))


# Requests -------------------------------------------------------------------------------

_DECIDED = "_stability_ratelimits"
_HEADERS = "_stability_ratelimit_headers"
_MATCHED = "_stability_ratelimit_matched"

_groups_cache: OrderedDict[Any, tuple[float, frozenset[str]]] = OrderedDict()
_groups_lock = threading.Lock()
#: How long a user's group names are remembered for group overrides (a query each time otherwise).
GROUPS_TTL = 60.0
GROUPS_CACHED = 10_000


def user_groups(request: Any) -> frozenset[str]:
    """The group names of the request's user, remembered for ``GROUPS_TTL`` seconds."""
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return frozenset()
    now = time.monotonic()
    entry = _groups_cache.get(user.pk)
    if entry is not None and entry[0] > now:
        return entry[1]
    names = frozenset(user.groups.values_list("name", flat=True))
    with _groups_lock:
        _groups_cache[user.pk] = (now + GROUPS_TTL, names)
        while len(_groups_cache) > GROUPS_CACHED:
            _groups_cache.popitem(last=False)
    return names


_warned_no_user: set[str] = set()


def request_charges(
    policies: Iterable[CompiledRateLimit],
    request: Any,
    *,
    cost: int | None = None,
    custom_key: Callable[[str, Any], Any] | None = None,
) -> list[Charge]:
    """The charges of a request under ``policies`` (its key, address and groups looked up).

    ``custom_key``, a function of ``(group, request)``, replaces the policies' own key.
    """
    charges: list[Charge] = []
    address = client_ip(request)
    for compiled_policy in policies:
        spec = compiled_policy.spec
        if spec.mode == "off":
            continue
        no_user = needs_user(spec.key) and not hasattr(request, "user")
        if no_user and spec.name not in _warned_no_user:
            _warned_no_user.add(spec.name)
            logger.error(
                "Rate limit %r counts by %r but the request has no user yet: put "
                "StabilityMiddleware after AuthenticationMiddleware, or use @rate_limit.",
                spec.name,
                spec.key,
            )
        key: str | None = None
        if spec.scope != "global":
            key = (
                request_key(spec.key, spec.name, request)
                if custom_key is None
                else _custom_key(custom_key, spec.name, request)
            )
            if key is None:
                continue  # nothing to count this request under: the policy does not apply
        charges += charges_for(
            compiled_policy,
            key,
            cost=cost,
            address=address,
            groups=functools.partial(user_groups, request),
        )
    return charges


def _custom_key(function: Callable[[str, Any], Any], group: str, request: Any) -> str | None:
    try:
        value = function(group, request)
    except Exception:
        logger.exception("The rate-limit key function of policy %r failed; not applied.", group)
        return None
    return None if value is None else str(value)


def decide_request(
    policies: Sequence[CompiledRateLimit],
    request: Any,
    *,
    cost: int | None = None,
    custom_key: Callable[[str, Any], Any] | None = None,
) -> Verdict:
    """Every policy of ``policies`` that applies to ``request``, decided together."""
    try:
        charges = request_charges(policies, request, cost=cost, custom_key=custom_key)
    except Denied as denied:
        return Verdict(False, ClientDenied(policy=denied.policy))
    verdict = decide(charges)
    # DRF wraps the HttpRequest; what the middleware reads lives on the inner one.
    inner = getattr(request, "_request", request)
    decided: set[str] = inner.__dict__.setdefault(_DECIDED, set())
    decided.update(p.name for p in policies)
    if not verdict.allowed:
        request.limited = True
    if verdict.headers:
        # Put on the response by the middleware (a refusal built here has them already).
        inner.__dict__.setdefault(_HEADERS, {}).update(verdict.headers)
    return verdict


def add_headers(request: Any, response: HttpResponseBase | None) -> None:
    """Put the RateLimit fields of the request's decisions on its response."""
    headers = request.__dict__.pop(_HEADERS, None)
    if headers and response is not None:
        for name, value in headers.items():
            if name not in response:
                response[name] = value


def _routes() -> RouteIndex[CompiledRateLimit]:
    return RouteIndex(
        (spec, compiled(spec))
        for spec in registry.all(RateLimitSpec)
        if spec.routed and spec.mode != "off"
    )


def routed_policies(request: HttpRequest) -> list[CompiledRateLimit]:
    """The routed rate-limit policies that match ``request`` (memoised on it)."""
    matched: list[CompiledRateLimit] | None = request.__dict__.get(_MATCHED)
    if matched is None:
        index: RouteIndex[CompiledRateLimit] = registry.derived("ratelimit:routes", _routes)
        matched = request.__dict__[_MATCHED] = index.match(request) if index else []
    return matched


class RateLimitGate:
    """The middleware gate: the routed policies matching a request, in one decision."""

    def may_block(self, request: HttpRequest) -> bool:
        """True when ``enter`` would call the store (the async entry then runs it in a thread)."""
        return settings.RATELIMIT_ENABLED and bool(routed_policies(request))

    def enter(self, request: HttpRequest) -> HttpResponseBase | None:
        if not settings.RATELIMIT_ENABLED:
            return None
        policies = routed_policies(request)
        if not policies:
            return None
        verdict = decide_request(policies, request)
        if verdict.allowed or verdict.error is None:
            return None
        return responses.refusal(request, verdict.error)

    def leave(self, request: HttpRequest, response: HttpResponseBase | None) -> None:
        add_headers(request, response)


# The decorator ---------------------------------------------------------------------------


def _find_request(args: Sequence[Any]) -> Any:
    """The request among a view's first arguments (a method's second); DRF's counts."""
    for arg in args[:2]:
        if isinstance(arg, HttpRequest) or isinstance(getattr(arg, "_request", None), HttpRequest):
            return arg
    return None


def rate_limit(
    name: str,
    *,
    block: bool = True,
    key: str | Callable[..., Any] | None = None,
    **fields: Any,
) -> Callable[[F], F]:
    """Limit a view (sync or async), or any callable, by the rate-limit policy ``name``.

    The arguments (``rate``, ``burst``, ``methods``, ``cost``, ``quota``, ``mode``,
    ``on_store_failure``, ``scope`` and every other field of a rate-limit
    policy) are the policy's code default; the admin row of that name
    overrides them. ``key`` is a django-ratelimit key, or a callable: of
    ``(group, request)`` on a view, of the callable's own arguments otherwise.

    On a view a refusal raises ``RateLimited`` (429 through the middleware, a
    django-ratelimit ``Ratelimited`` otherwise); with ``block=False`` the view
    runs with ``request.limited = True``. On another callable it raises
    ``RateLimited`` with ``retry_after``; request keys such as ``ip`` count
    every call together there.
    """
    values: dict[str, Any] = dict(fields)
    key_callable: Callable[..., Any] | None = None
    if callable(key):
        key_callable = key
        values["key"] = f"{key.__module__}.{key.__qualname__}"
    elif key is not None:
        values["key"] = key
    if "methods" in values and isinstance(values["methods"], str):
        values["methods"] = [values["methods"]]
    try:
        spec = RateLimitSpec.build(name, values)
    except ValidationError as exc:
        raise ImproperlyConfigured(f"@rate_limit({name!r}): {'; '.join(exc.messages)}") from exc
    registry.register(spec)
    code_key = spec.key

    def current() -> CompiledRateLimit | None:
        if not settings.RATELIMIT_ENABLED:
            return None
        found = policy(name)
        if found is None:
            # The code layer was reset (tests do); the decorator still holds the default.
            registry.register(spec)
            found = policy(name)
        return None if found is None or found.spec.mode == "off" else found

    def request_verdict(active: CompiledRateLimit, request: Any) -> Verdict | None:
        if not active.spec.allows_method(request.method):
            return None
        if name in getattr(request, "_request", request).__dict__.get(_DECIDED, ()):
            return None  # the middleware already decided this policy for this request
        # The code's own key function, unless the admin changed the key.
        custom = key_callable if key_callable is not None and active.spec.key == code_key else None
        return decide_request([active], request, custom_key=custom)

    def call_verdict(active: CompiledRateLimit, args: Any, kwargs: Any) -> Verdict:
        key_value = None
        if key_callable is not None and active.spec.key == code_key:
            key_value = str(key_callable(*args, **kwargs))
        return decide(charges_for(active, key_value))

    def settle(verdict: Verdict | None, request: Any) -> None:
        if verdict is None or verdict.allowed or verdict.error is None:
            return
        if block or isinstance(verdict.error, ClientDenied):
            raise verdict.error

    def decorator(function: F) -> F:
        reject_celery_task(function, f"@rate_limit({name!r})")
        function._stability_rate_limits = (  # type: ignore[attr-defined]
            *getattr(function, "_stability_rate_limits", ()),
            name,
        )
        if iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                active = current()
                if active is None:
                    return await function(*args, **kwargs)
                request = _find_request(args)
                if request is None:
                    verdict = await sync_to_async(call_verdict, thread_sensitive=False)(
                        active, args, kwargs
                    )
                    settle(verdict, None)
                    return await function(*args, **kwargs)
                request_verdict_ = await sync_to_async(request_verdict, thread_sensitive=False)(
                    active, request
                )
                settle(request_verdict_, request)
                response = await function(*args, **kwargs)
                if isinstance(response, HttpResponseBase):
                    add_headers(getattr(request, "_request", request), response)
                return response

            async_wrapper._stability_rate_limits = function._stability_rate_limits  # type: ignore[attr-defined]
            return cast(F, async_wrapper)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                active = current()
                if active is None:
                    return function(*args, **kwargs)
                request = _find_request(args)
                if request is None:
                    settle(call_verdict(active, args, kwargs), None)
                    return function(*args, **kwargs)
                settle(request_verdict(active, request), request)
                response = function(*args, **kwargs)
                if isinstance(response, HttpResponseBase):
                    add_headers(getattr(request, "_request", request), response)
                return response
            except StabilityError as error:
                # The body of a Celery task: run it again later instead of failing.
                refused_in_task(wrapper, error)
                raise

        return cast(F, wrapper)

    return decorator


# Compatibility and administration -----------------------------------------------------


def policy_rate(name: str, default: str | None = None) -> Callable[[str, Any], str | None]:
    """A ``rate=`` for django-ratelimit's ``@ratelimit`` that reads the policy ``name``.

    ``@ratelimit(key="ip", rate=policy_rate("search", "30/m"))`` keeps
    django-ratelimit doing the counting while the rate is tuned in the admin.
    ``default`` registers the code default. A policy that is off, or missing,
    answers None, which django-ratelimit takes as "no limit".
    """
    if default is not None:
        registry.register(RateLimitSpec(name=name, rate=_checked_rate(default)))

    def rate(group: str, request: Any) -> str | None:
        spec = registry.get(RateLimitSpec, name)
        if spec is None or spec.mode == "off":
            return None
        return spec.rate

    rate.__name__ = f"policy_rate_{name}"
    return rate


def limited_now(name: str, count: int = 100) -> list[tuple[str, float]]:
    """Keys of policy ``name`` refused lately that may not retry yet: (key, seconds left).

    Keys are shown as stored: the counted value, ``q:<value>`` for the quota,
    ``n:<network>`` for the aggregate limit; hashed when long.
    """
    prefix = f"{name}:"
    return [
        (key[len(prefix) :] if key.startswith(prefix) else key, left)
        for key, left in get_store().limited_keys(name, count)
    ]


def reset(name: str, key: str) -> int:
    """Forget the counters of ``key`` under policy ``name`` (after a captcha, a support call).

    ``key`` is a counted value (its quota counter goes too) or a key as
    ``limited_now`` shows it. Every process forgets its penalty box within
    ``POLICY_REFRESH``. Returns how many counters existed.
    """
    value = key_part(key) if not key.startswith(("q:", "n:", "h:")) else key
    keys = [f"{name}:{value}"]
    if not value.startswith(("q:", "n:")):
        keys.append(f"{name}:q:{value}")
    found = get_store().reset_limits(keys, name)
    penalty_box().forget(keys)
    registry.publish_change()  # other processes drop their penalty boxes on reload
    return found


__all__ = [
    "RATE_FORMAT",
    "Charge",
    "CompiledRateLimit",
    "PenaltyBox",
    "RateLimitGate",
    "RateLimitSpec",
    "Verdict",
    "charges_for",
    "check",
    "decide",
    "decide_request",
    "limited_now",
    "parse_rate",
    "policy_rate",
    "rate_limit",
    "reset",
]
