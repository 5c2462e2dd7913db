"""Real servers for load tests: gunicorn (gthread) and uvicorn on a free loopback port.

Each serves ``tests.shedding_site`` with settings passed in its environment,
imports this checkout (``PYTHONPATH``), and is stopped (then killed) on exit.
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
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.redis_servers import free_port

ROOT = Path(__file__).resolve().parents[1]


class Server:
    """A gunicorn or uvicorn process serving the shedding test site."""

    def __init__(
        self,
        kind: str = "gunicorn",
        *,
        stability: dict[str, Any] | None = None,
        middleware: str = "stability",
        threads: int = 4,
        env: dict[str, str] | None = None,
    ) -> None:
        assert kind in ("gunicorn", "uvicorn")
        self.kind = kind
        self.port = free_port()
        self.threads = threads
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "DJANGO_SETTINGS_MODULE": "tests.shedding_site.settings",
            "SHEDDING_SITE_STABILITY": json.dumps(stability or {}),
            "SHEDDING_SITE_MIDDLEWARE": middleware,
            **(env or {}),
        }
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in __exit__
            prefix=f"stab-{kind}-", suffix=".log", delete=False
        )
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        address = f"127.0.0.1:{self.port}"
        if self.kind == "gunicorn":
            return [
                sys.executable, "-m", "gunicorn", "--bind", address,
                "--worker-class", "gthread", "--workers", "1", "--threads", str(self.threads),
                "--timeout", "60", "--graceful-timeout", "1", "--log-level", "warning",
                "tests.shedding_site.wsgi:application",
            ]  # fmt: skip
        return [
            sys.executable, "-m", "uvicorn", "tests.shedding_site.asgi:application",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
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
                if self.get("/ping/")[0] == 200:
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
        # The whole session: gunicorn's worker too.
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
