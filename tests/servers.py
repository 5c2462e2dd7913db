"""Real servers for tests and benchmarks: gunicorn (gthread) and uvicorn on a free loopback port.

A ``Server`` imports this checkout (``PYTHONPATH``), joins this test run
(database, key prefix: ``tests.multiproc.child_env``), is ready once its ready
path answers, and is stopped (then killed, with its workers) on exit.
``gunicorn()`` and ``uvicorn()`` are the short forms that yield the base URL.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.redis_servers import free_port

ROOT = Path(__file__).resolve().parents[1]


class Server:
    """A gunicorn or uvicorn process serving a test site on 127.0.0.1."""

    def __init__(
        self,
        kind: str = "gunicorn",
        *,
        settings_module: str = "tests.shedding_site.settings",
        wsgi: str = "tests.shedding_site.wsgi:application",
        asgi: str = "tests.shedding_site.asgi:application",
        ready_path: str = "/ping/",
        workers: int = 1,
        threads: int = 4,
        stability: dict[str, Any] | None = None,
        middleware: str = "stability",
        env: dict[str, str] | None = None,
    ) -> None:
        from tests.multiproc import child_env

        assert kind in ("gunicorn", "uvicorn")
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.wsgi, self.asgi = wsgi, asgi
        self.ready_path = ready_path
        self.workers, self.threads = workers, threads
        self.env = {
            **os.environ,
            **child_env(),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "DJANGO_SETTINGS_MODULE": settings_module,
            # Read by tests.shedding_site.settings; ignored by other sites.
            "SHEDDING_SITE_STABILITY": json.dumps(stability or {}),
            "SHEDDING_SITE_MIDDLEWARE": middleware,
            **(env or {}),
        }
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in __exit__
            prefix=f"stab-{kind}-", suffix=".log", delete=False
        )
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.kind == "gunicorn":
            return [
                sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}",
                "--worker-class", "gthread", "--workers", str(self.workers),
                "--threads", str(self.threads),
                "--timeout", "60", "--graceful-timeout", "1", "--log-level", "warning",
                self.wsgi,
            ]  # fmt: skip
        return [
            sys.executable, "-m", "uvicorn", self.asgi,
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
            "--log-level", "warning", "--no-access-log", "--lifespan", "off",
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> Server:
        self.process = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start:\n{self.output()}")
            try:
                if self.get(self.ready_path)[0] < 500:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.kind} did not answer within {timeout} s:\n{self.output()}")

    def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def stats(self) -> dict[str, dict[str, int]]:
        status, _, body = self.get("/stats/")
        assert status == 200, body
        result: dict[str, dict[str, int]] = json.loads(body)
        return result

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        # The whole session: gunicorn's workers too.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


@contextmanager
def uvicorn(settings_module: str) -> Iterator[str]:
    """``tests.asgi`` under uvicorn with these settings; yields the base URL."""
    with Server(
        "uvicorn", settings_module=settings_module, asgi="tests.asgi:application",
        ready_path="/hello/",
    ) as server:  # fmt: skip
        yield server.url


@contextmanager
def gunicorn(settings_module: str, workers: int = 2, threads: int = 4) -> Iterator[str]:
    """``tests.wsgi`` under gunicorn with these settings; yields the base URL."""
    with Server(
        "gunicorn", settings_module=settings_module, wsgi="tests.wsgi:application",
        ready_path="/hello/", workers=workers, threads=threads,
    ) as server:  # fmt: skip
        yield server.url
