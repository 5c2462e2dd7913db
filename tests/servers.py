"""Web servers under test: started on a free loopback port, stopped by the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.multiproc import child_env
from tests.redis_servers import free_port

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def serving(command: Sequence[str], settings_module: str, port: int) -> Iterator[str]:
    """Run ``command`` (which binds 127.0.0.1:``port``) until the block ends; yield its URL."""
    env = {**os.environ, **child_env(), "DJANGO_SETTINGS_MODULE": settings_module}
    process = subprocess.Popen(
        list(command),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/hello/", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    error = process.stderr.read().decode() if process.stderr else ""
                    raise RuntimeError(f"{command[0]} did not start: {error[-2000:]}") from None
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextmanager
def uvicorn(settings_module: str) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "tests.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with serving(command, settings_module, port) as url:
        yield url


@contextmanager
def gunicorn(settings_module: str, workers: int = 2, threads: int = 4) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "tests.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--log-level",
        "warning",
    ]
    with serving(command, settings_module, port) as url:
        yield url
