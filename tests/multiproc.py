"""Run a function in several OS processes against the same store and database.

Each child is a fresh interpreter (spawn), set up with the test settings and
the test database of this run, so it behaves like another server process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any


def _child_setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


def _call(target: str, args: tuple[Any, ...], env: dict[str, str]) -> Any:
    _child_setup(env)
    from django.utils.module_loading import import_string

    function: Callable[..., Any] = import_string(target)
    return function(*args)


def child_env() -> dict[str, str]:
    """What a child needs to join this run: settings, run id, test database name."""
    from django.conf import settings

    return {
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "tests.settings"),
        "STABILITY_TEST_RUN": os.environ["STABILITY_TEST_RUN"],
        "STABILITY_TEST_DB_NAME": str(settings.DATABASES["default"]["NAME"]),
        # The store prefix of the calling test, so that children share its state.
        "STABILITY_TEST_PREFIX": str(settings.STABILITY["STORE_KEY_PREFIX"]),
    }


def run_in_processes(
    target: str, args_per_process: Sequence[tuple[Any, ...]], timeout: float = 120
) -> list[Any]:
    """Call ``target`` (a dotted path) once per argument tuple, each in its own process.

    Returns the results in order; an exception in a child is raised here.
    """
    context = multiprocessing.get_context("spawn")
    env = child_env()
    with context.Pool(len(args_per_process)) as pool:
        pending = [pool.apply_async(_call, (target, args, env)) for args in args_per_process]
        return [result.get(timeout=timeout) for result in pending]


def start_process(target: str, *args: Any) -> multiprocessing.process.BaseProcess:
    """Start ``target(*args)`` in a process of its own and return it (not waited for)."""
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_call, args=(target, args, child_env()), daemon=True)
    process.start()
    return process
