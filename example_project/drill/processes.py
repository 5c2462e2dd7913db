"""What the drill starts on 127.0.0.1, each on a free port, each stopped at the end.

* ``RedisServer``: a private redis-server the drill may hang (SIGSTOP);
* ``Gateway``: the simulated payment gateway, set slow or hung through its control endpoint;
* ``ShopServer``: gunicorn serving the example shop, protected or not;
* ``run_python``: a short-lived child (migrate, seed, an in-process scenario).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """The environment of every child: this checkout first on the path, the shop's settings."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
    }
    env.update(extra)
    return env


def _stop_group(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM the process's group (its workers too), then SIGKILL what is left (at once: 0)."""
    if process.poll() is None and timeout > 0:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if process.poll() is None:
        process.wait(timeout=5)


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited at start:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout} s:\n{log.read_text(errors='replace')}")


class RedisServer:
    """A redis-server of the drill's own: no persistence, loopback only."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="drill-redis-", dir=workdir))
        self.process: subprocess.Popen[bytes] | None = None
        self.hung = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError(
                "The drill needs redis-server on the PATH (apt install redis-server)."
            )
        command = [
            executable, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.dir), "--loglevel", "warning",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=os.setpgrp,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self.command("PING") == "PONG":
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def command(self, *words: str) -> Any:
        """One command through redis-py, with a short timeout (never while hung)."""
        import redis

        client = redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)
        try:
            result = client.execute_command(*words)
        except redis.RedisError as error:
            raise OSError(str(error)) from error
        finally:
            client.close()
        return "PONG" if result is True and words[0].upper() == "PING" else result

    def memory(self) -> tuple[int, int]:
        """(bytes used, keys): INFO's used_memory and DBSIZE."""
        import redis

        client = redis.Redis(port=self.port, socket_timeout=5)
        try:
            return int(client.info("memory")["used_memory"]), int(client.dbsize())
        finally:
            client.close()

    def hang(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel; nothing answers."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self.hung = True

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)
        self.hung = False

    def stop(self) -> None:
        if self.process is not None:
            if self.hung:
                self.resume()
            _stop_group(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


class Gateway:
    """The simulated payment gateway in a process of its own."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Gateway:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "example_project.gateway", "--port", str(self.port)],
                cwd=ROOT,
                env=child_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=os.setpgrp,
            )
        _wait_http(f"{self.url}/health", self.process, self.log, 30)
        return self

    def control(self, **values: Any) -> dict[str, Any]:
        """Set the gateway's behaviour (latency, failure_rate, hang) and reset its counters."""
        self._post("/control/reset", {})
        return self._post("/control", values)

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/control", timeout=5) as response:
            result: dict[str, Any] = json.load(response)
        return result

    def _post(self, path: str, values: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(values).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            result: dict[str, Any] = json.load(response)
        return result

    def stop(self) -> None:
        if self.process is not None:
            _stop_group(self.process)


class ShopServer:
    """gunicorn (one gthread worker) serving the example shop, protected or not."""

    def __init__(
        self, workdir: Path, *, protected: bool, threads: int, env: dict[str, str]
    ) -> None:
        self.port = free_port()
        self.protected = protected
        self.threads = threads
        name = "protected" if protected else "unprotected"
        self.stats_dir = Path(tempfile.mkdtemp(prefix=f"stats-{name}-", dir=workdir))
        self.log = workdir / f"gunicorn-{name}-{self.port}.log"
        self.env = child_env(
            SHOP_PROTECTION="on" if protected else "off",
            SHOP_THREADS=str(threads),
            SHOP_STATS_DIR=str(self.stats_dir),
            **env,
        )
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def launch(self) -> ShopServer:
        """Start gunicorn; ``ready()`` waits until it answers."""
        self._log_handle = self.log.open("ab")
        # A long worker timeout: the drill's hung calls must not get the worker restarted.
        command = [
            sys.executable, "-m", "gunicorn", "example_project.wsgi",
            "--bind", f"127.0.0.1:{self.port}", "--workers", "1",
            "--worker-class", "gthread", "--threads", str(self.threads),
            "--timeout", "120", "--graceful-timeout", "1", "--log-level", "warning",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            preexec_fn=os.setpgrp,
        )
        return self

    def ready(self, timeout: float = 60) -> ShopServer:
        assert self.process is not None
        _wait_http(self.url("/"), self.process, self.log, timeout)
        return self

    def stats(self) -> dict[str, int]:
        """The peaks the worker wrote (see ``example_project.shop.inflight``)."""
        totals = {"most_stuck": 0, "most_in_flight": 0, "stuck": 0, "served": 0}
        for path in self.stats_dir.glob("*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            for key in totals:
                totals[key] += int(data.get(key, 0))
        return totals

    def stop(self) -> None:
        if self.process is not None:
            # Nothing to drain: the drill is done with it (and its hung threads).
            _stop_group(self.process, timeout=0)
        if self._log_handle is not None:
            self._log_handle.close()
        shutil.rmtree(self.stats_dir, ignore_errors=True)


def run_python(
    args: list[str], env: dict[str, str], timeout: float, log: Path | None = None
) -> str:
    """Run ``python <args>`` to its end and return its standard output; raise if it fails."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if log is not None:
        with log.open("a") as handle:
            handle.write(f"$ python {' '.join(args)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        raise RuntimeError(
            f"python {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result.stdout
