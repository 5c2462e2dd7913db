"""The policy registry: what is the policy named X, right now, in this process?

A policy has a kind (rate limit, breaker, cache, ...) and a name. Its fields
come from three layers, each overriding the one before field by field:

1. the code: decorator arguments, or ``register()``;
2. the settings: ``STABILITY["POLICIES"][kind][name]``;
3. the admin: a ``Policy`` row of that kind and name (only the fields it sets).

Each process decides from one in-process snapshot of all admin rows, so a
decision costs a dictionary lookup and no database query. A shared generation
token in the store changes on every committed change; each process looks at it
at most every ``POLICY_REFRESH`` seconds (jittered per process) and reloads all
rows in one query when it changed. If the database cannot be read, the last
snapshot keeps serving (the code and settings layers, if none was ever read).

This module is the only reader of the policy table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import threading
import time
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction

from . import signals
from .conf import settings, settings_reset

logger = logging.getLogger("django_stability.policies")

S = TypeVar("S", bound="PolicySpec")
T = TypeVar("T")

#: The store key of the shared generation token.
GENERATION_KEY = "policies:generation"
#: How long the generation token lives; when it is missing every process reloads once.
GENERATION_TTL = 24 * 3600.0


def spec_field(
    default: Any,
    *,
    help: str = "",
    choices: Iterable[str] | None = None,
    parse: Callable[[Any], Any] | None = None,
    format: str = "",
) -> Any:
    """A field of a policy spec, with what the admin and the errors need to explain it.

    ``parse`` turns a raw value (from the admin, JSON or settings) into the
    field's value, raising ``ValueError`` with a message that says what is
    expected; ``format`` describes that expected format in a few words.
    """
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "parse": parse,
        "format": format,
    }
    if isinstance(default, (list, dict, set)):
        raise TypeError("policy spec defaults must be immutable (use a tuple)")
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class SpecField:
    """One field of a policy kind, as the admin and the validators see it."""

    name: str
    default: Any
    type: Any
    help: str
    choices: tuple[str, ...] | None
    format: str
    parse: Callable[[Any], Any]
    optional: bool


@dataclass(frozen=True)
class PolicySpec:
    """The base of every policy kind: a frozen dataclass of plain values.

    Subclasses set ``kind`` and ``verbose_name``, declare fields with
    ``spec_field()`` and may check fields against each other in ``check()``.
    Instances are immutable and hold only plain data, so they are safe to
    share between threads and cheap to rebuild.
    """

    kind: ClassVar[str] = ""
    verbose_name: ClassVar[str] = ""
    #: Dotted path of a ``django_stability.admin.PolicyAdmin`` subclass for this
    #: kind (live state, actions); empty for the generic admin.
    admin_class: ClassVar[str] = ""

    name: str = ""

    def check(self) -> None:
        """Cross-field validation; raise ``ValidationError({field: message})``."""

    @classmethod
    def spec_fields(cls) -> tuple[SpecField, ...]:
        return _spec_fields(cls)

    @classmethod
    def build(cls: type[S], name: str, values: Mapping[str, Any], base: S | None = None) -> S:
        """A spec named ``name``: ``base`` (or the class defaults) overlaid with ``values``.

        Raises ``ValidationError`` keyed by field, each message naming the
        expected format; unknown fields are refused with the list of known ones.
        """
        known = {f.name: f for f in cls.spec_fields()}
        errors: dict[str, list[str]] = {}
        unknown = sorted(set(values) - set(known))
        if unknown:
            errors["__all__"] = [
                f"Unknown field(s) {', '.join(unknown)} for a {cls.verbose_name or cls.kind} "
                f"policy; known fields are: {', '.join(sorted(known))}."
            ]
        parsed: dict[str, Any] = {}
        for key, raw in values.items():
            spec = known.get(key)
            if spec is None:
                continue
            try:
                parsed[key] = spec.parse(raw)
            except (ValueError, TypeError) as exc:
                errors[key] = [str(exc)]
        if errors:
            raise ValidationError(errors)
        start = base if base is not None else cls(name=name)
        try:
            result = dataclasses.replace(start, name=name, **parsed)
        except (ValueError, TypeError) as exc:
            raise ValidationError(str(exc)) from exc
        result.check()
        return result

    def to_config(self) -> dict[str, Any]:
        """The fields (without the name) as JSON-ready plain data."""
        data: dict[str, Any] = {}
        for spec in self.spec_fields():
            value = getattr(self, spec.name)
            data[spec.name] = list(value) if isinstance(value, tuple) else value
        return data


# Field parsing: each function raises ValueError with a message that names the
# expected format, so that the admin and the checks can show it as it is.


def parse_int(raw: Any, *, minimum: int | None = None) -> int:
    if isinstance(raw, bool):
        raise ValueError("Expected a whole number, not a yes/no value.")
    try:
        value = int(str(raw).strip()) if not isinstance(raw, int) else raw
    except ValueError:
        raise ValueError(f"Expected a whole number, e.g. 10; got {raw!r}.") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"Expected a whole number of at least {minimum}; got {value}.")
    return value


def parse_float(raw: Any, *, minimum: float | None = None) -> float:
    if isinstance(raw, bool):
        raise ValueError("Expected a number, not a yes/no value.")
    try:
        value = float(str(raw).strip()) if not isinstance(raw, (int, float)) else float(raw)
    except ValueError:
        raise ValueError(f"Expected a number, e.g. 1.5; got {raw!r}.") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"Expected a finite number; got {raw!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"Expected a number of at least {minimum:g}; got {value:g}.")
    return value


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"Expected yes or no (true/false); got {raw!r}.")


def parse_str(raw: Any) -> str:
    if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
        raise ValueError(f"Expected text; got {raw!r}.")
    return str(raw).strip()


def parse_str_tuple(raw: Any) -> tuple[str, ...]:
    """A list of strings, or a text with one item per line (or comma-separated)."""
    if isinstance(raw, str):
        items = [part.strip() for line in raw.splitlines() for part in line.split(",")]
    elif isinstance(raw, (list, tuple)):
        items = [str(item).strip() for item in raw]
    else:
        raise ValueError(f"Expected a list of values, one per line; got {raw!r}.")
    return tuple(item for item in items if item)


def _parser_for(tp: Any, choices: tuple[str, ...] | None) -> tuple[Callable[[Any], Any], bool]:
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0] if len(args) == 1 else tp
        origin = typing.get_origin(tp)
    base: Callable[[Any], Any]
    if tp is bool:
        base = parse_bool
    elif tp is int:
        base = parse_int
    elif tp is float:
        base = parse_float
    elif origin is tuple:
        base = parse_str_tuple
    else:
        base = parse_str
    if choices:

        def parse_choice(raw: Any) -> Any:
            value = base(raw)
            if value not in choices:
                raise ValueError(f"Expected one of {', '.join(choices)}; got {raw!r}.")
            return value

        return parse_choice, optional
    return base, optional


_FIELDS_CACHE: dict[type, tuple[SpecField, ...]] = {}


def _spec_fields(cls: type) -> tuple[SpecField, ...]:
    cached = _FIELDS_CACHE.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    result = []
    for f in dataclasses.fields(cls):
        if f.name == "name":
            continue
        choices = f.metadata.get("choices")
        default_parse, optional = _parser_for(hints[f.name], choices)
        custom = f.metadata.get("parse")
        parse = default_parse
        if custom is not None:

            def parse(
                raw: Any, _custom: Callable[[Any], Any] = custom, _opt: bool = optional
            ) -> Any:
                if _opt and (raw is None or raw == ""):
                    return None
                return _custom(raw)

        elif optional:

            def parse(raw: Any, _base: Callable[[Any], Any] = default_parse) -> Any:
                return None if raw is None or raw == "" else _base(raw)

        result.append(
            SpecField(
                name=f.name,
                default=f.default,
                type=hints[f.name],
                help=f.metadata.get("help", ""),
                choices=choices,
                format=f.metadata.get("format", ""),
                parse=parse,
                optional=optional,
            )
        )
    _FIELDS_CACHE[cls] = tuple(result)
    return _FIELDS_CACHE[cls]


@dataclass(frozen=True)
class Snapshot:
    """The admin rows of all kinds, as plain data, and the generation they answer to."""

    generation: str | None
    rows: Mapping[tuple[str, str], Mapping[str, Any]]
    loaded: bool = False


class Registry:
    """Policies by kind and name; see the module docstring for the layers."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.kinds: dict[str, type[PolicySpec]] = {}
        self._code: dict[tuple[str, str], PolicySpec] = {}
        self._overrides: dict[tuple[str, str], PolicySpec] = {}
        self._snapshot = Snapshot(None, {})
        self._merged: dict[tuple[str, str], PolicySpec | None] = {}
        self._derived: dict[str, tuple[int, Any]] = {}
        self._version = 0
        self._next_check = 0.0
        self._refresh_lock = threading.Lock()
        self._warned: set[str] = set()
        self._pending_bump = False
        self._db_failures = 0

    # Kinds and code defaults -------------------------------------------------

    def register_kind(self, spec_cls: type[S]) -> type[S]:
        """Make a policy kind known (use as a class decorator)."""
        if not spec_cls.kind:
            raise ImproperlyConfigured(f"{spec_cls.__name__} has no kind")
        self.kinds[spec_cls.kind] = spec_cls
        self._changed()
        return spec_cls

    def register(self, spec: PolicySpec) -> None:
        """Record ``spec`` as the code default of its kind and name.

        The same name registered twice with different values keeps the last and
        logs a warning: two decorators sharing a name should share its values.
        """
        spec.check()
        key = (spec.kind, spec.name)
        previous = self._code.get(key)
        if previous is not None and previous != spec:
            logger.warning(
                "The %s policy %r is defined twice in code with different values; "
                "the last definition wins.",
                spec.kind,
                spec.name,
            )
        self._code[key] = spec
        self._changed()

    def code_defaults(self) -> dict[tuple[str, str], PolicySpec]:
        """A copy of the code layer (to restore it later with ``restore_code_defaults``)."""
        return dict(self._code)

    def restore_code_defaults(self, saved: Mapping[tuple[str, str], PolicySpec]) -> None:
        self._code = dict(saved)
        self._changed()

    def override(self, spec: PolicySpec) -> None:
        """Make ``spec`` the effective policy of its name over every layer (for tests)."""
        spec.check()
        self._overrides[(spec.kind, spec.name)] = spec
        self._changed()

    def remove_override(self, spec_cls: type[PolicySpec], name: str) -> None:
        self._overrides.pop((spec_cls.kind, name), None)
        self._changed()

    def code_default(self, spec_cls: type[S], name: str) -> S | None:
        """The code and settings layers of a policy, without the admin row."""
        spec = self._code.get((spec_cls.kind, name))
        configured = settings.POLICIES.get(spec_cls.kind, {}).get(name)
        if configured is not None:
            try:
                spec = spec_cls.build(name, configured, base=spec)  # type: ignore[arg-type]
            except ValidationError as exc:
                self._warn_once(f"settings:{spec_cls.kind}:{name}", "settings", spec_cls, name, exc)
        return spec  # type: ignore[return-value]

    # Lookups (the hot path) ----------------------------------------------------

    def get(self, spec_cls: type[S], name: str) -> S | None:
        """The effective policy of that kind and name, or None if no layer defines it."""
        if self.clock() >= self._next_check:
            self._refresh_from_sync_code()
        key = (spec_cls.kind, name)
        # Read the memo before the snapshot: a reload replaces the snapshot
        # first, so a value merged from an old snapshot can only land in an old
        # memo, never in the new one.
        merged = self._merged
        try:
            return merged[key]  # type: ignore[return-value]
        except KeyError:
            pass
        spec = self._merge(spec_cls, name, self._snapshot)
        merged[key] = spec
        return spec

    def all(self, spec_cls: type[S]) -> tuple[S, ...]:
        """Every effective policy of a kind, sorted by name."""
        kind = spec_cls.kind
        names = {name for (k, name) in self._code if k == kind}
        names |= {name for (k, name) in self._overrides if k == kind}
        names |= set(settings.POLICIES.get(kind, {}))
        names |= {name for (k, name) in self._snapshot.rows if k == kind}
        found = (self.get(spec_cls, name) for name in sorted(names))
        return tuple(spec for spec in found if spec is not None)

    def derived(self, key: str, build: Callable[[], T]) -> T:
        """``build()``, memoised until the policies change (for indexes over ``all()``)."""
        entry = self._derived.get(key)
        if entry is not None and entry[0] == self._version:
            return typing.cast(T, entry[1])
        version = self._version
        value = build()
        self._derived[key] = (version, value)
        return value

    @property
    def version(self) -> int:
        """A local counter that grows each time the effective policies may have changed."""
        return self._version

    def _merge(self, spec_cls: type[S], name: str, snapshot: Snapshot) -> S | None:
        forced = self._overrides.get((spec_cls.kind, name))
        if forced is not None:
            return forced  # type: ignore[return-value]
        base = self.code_default(spec_cls, name)
        row = snapshot.rows.get((spec_cls.kind, name))
        if row is None:
            return base
        try:
            return spec_cls.build(name, row, base=base)
        except ValidationError as exc:
            self._warn_once(f"admin:{spec_cls.kind}:{name}", "admin", spec_cls, name, exc)
            return base

    def _warn_once(
        self, token: str, layer: str, spec_cls: type[PolicySpec], name: str, exc: Exception
    ) -> None:
        if token not in self._warned:
            self._warned.add(token)
            logger.error(
                "Ignoring the %s layer of %s policy %r: %s",
                layer,
                spec_cls.kind,
                name,
                "; ".join(getattr(exc, "messages", [str(exc)])),
            )

    def _changed(self) -> None:
        self._merged = {}
        self._version += 1

    # Refreshing ------------------------------------------------------------------

    def refresh_due(self) -> bool:
        return self.clock() >= self._next_check

    def _refresh_from_sync_code(self) -> None:
        # In an event loop the database must not be touched; the async entry of
        # the middleware refreshes in a thread instead (refresh_if_due).
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.refresh_if_due()

    def refresh_if_due(self) -> None:
        """Look at the shared generation if it is time; reload when it changed.

        Costs nothing until ``POLICY_REFRESH`` has passed, then one store round
        trip, and one database query only when something changed.
        """
        if self.clock() < self._next_check:
            return
        if not self._refresh_lock.acquire(blocking=False):
            return  # another thread is at it; this one decides from the current snapshot
        try:
            now = self.clock()
            if now < self._next_check:
                return
            self._next_check = now + settings.POLICY_REFRESH * random.uniform(0.75, 1.0)
            generation = self._shared_generation()
            if not self._snapshot.loaded or generation != self._snapshot.generation:
                self._load(generation)
        finally:
            self._refresh_lock.release()

    def _shared_generation(self) -> str:
        from .store import get_store

        store = get_store()
        generation = store.get(GENERATION_KEY)
        if generation is None:
            token = uuid.uuid4().hex
            if store.set(GENERATION_KEY, token, GENERATION_TTL, only_if_absent=True):
                return token
            generation = store.get(GENERATION_KEY) or token
        return generation

    def _load(self, generation: str) -> None:
        from .models import Policy

        try:
            rows = {
                (kind, name): config if isinstance(config, dict) else {}
                for kind, name, config in Policy.objects.values_list("kind", "name", "config")
            }
        except Exception as exc:
            if "db" not in self._warned:
                self._warned.add("db")
                logger.error(
                    "Could not read the policy table (%s); deciding from the last snapshot.", exc
                )
            # Look again later and later (up to a minute), not every refresh:
            # a database that is down should not get a failing query per second
            # from every process.
            self._db_failures += 1
            backoff = min(60.0, settings.POLICY_REFRESH * 2 ** min(self._db_failures, 6))
            self._next_check = self.clock() + backoff
            return
        self._warned.discard("db")
        self._db_failures = 0
        self._snapshot = Snapshot(generation, rows, loaded=True)
        self._changed()
        signals.policies_reloaded.send(sender=Registry, generation=generation, count=len(rows))

    def reload(self) -> None:
        """Read the policy table now (this process only)."""
        self._next_check = 0.0
        self._snapshot = dataclasses.replace(self._snapshot, loaded=False)
        self.refresh_if_due()

    def invalidate(self, using: str | None = None) -> None:
        """Tell every process that policies changed, once the current transaction commits."""
        transaction.on_commit(self.publish_change, using=using)

    def publish_change(self) -> None:
        """Give the shared generation a new value now, and reload this process at once."""
        from .store import FailsafeStore, get_store

        store = get_store()
        store.set(GENERATION_KEY, uuid.uuid4().hex, GENERATION_TTL)
        # While Redis is unreachable the new token only reached the local
        # store; publish again when Redis is back.
        self._pending_bump = isinstance(store, FailsafeStore) and store.degraded
        self._next_check = 0.0
        self._snapshot = dataclasses.replace(self._snapshot, loaded=False)

    def store_recovered(self, **kwargs: Any) -> None:
        """Redis is back: look at the generation again, and publish a change made meanwhile."""
        if kwargs.get("state") != "closed":
            return
        self._next_check = 0.0
        if self._pending_bump:
            self._pending_bump = False
            from .store import get_store

            get_store().set(GENERATION_KEY, uuid.uuid4().hex, GENERATION_TTL)

    def reset(self, **kwargs: Any) -> None:
        """Forget the snapshot (settings changed; tests)."""
        self._snapshot = Snapshot(None, {})
        self._next_check = 0.0
        self._warned.clear()
        self._db_failures = 0
        self._changed()


#: The registry of this process.
registry = Registry()

settings_reset.connect(registry.reset, dispatch_uid="django_stability.policies.reset")
signals.store_state_changed.connect(
    registry.store_recovered, dispatch_uid="django_stability.policies.recovered"
)
