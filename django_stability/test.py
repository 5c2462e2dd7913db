"""Helpers for testing your own views and tasks under django-stability's policies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ContextDecorator, contextmanager
from typing import Any

from .policies import PolicySpec, registry
from .store import reset_store


class override_policy(ContextDecorator):
    """Make the given policies the effective ones, over code, settings and admin.

    Use as a context manager or a decorator::

        with override_policy(RateLimitSpec(name="login", rate="1/m")):
            ...
    """

    def __init__(self, *specs: PolicySpec) -> None:
        self.specs = specs

    def __enter__(self) -> override_policy:
        for spec in self.specs:
            registry.override(spec)
        return self

    def __exit__(self, *exc: Any) -> None:
        for spec in self.specs:
            registry.remove_override(type(spec), spec.name)


@contextmanager
def fresh_state() -> Iterator[None]:
    """A new store and policy snapshot on the way in and out; code defaults restored after."""
    saved = registry.code_defaults()
    reset_store()
    registry.reset()
    try:
        yield
    finally:
        registry.restore_code_defaults(saved)
        reset_store()
        registry.reset()


def isolated(function: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator form of ``fresh_state``."""
    return fresh_state()(function)
