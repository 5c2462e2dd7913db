"""``make demo``: migrate, seed, start the shop, its Celery worker and its payment gateway.

Uses Redis on ``REDIS_URL`` (or 127.0.0.1:6379) when it answers; otherwise runs
embedded: the in-process store, a local-memory cache with the same stampede
protection, and Celery on kombu's filesystem transport in a directory of its
own. Ctrl-C (or SIGTERM) stops everything it started.

The environment it reads: ``DEMO_HOST`` and ``DEMO_PORT`` (the shop,
127.0.0.1:8000), ``DEMO_GATEWAY_PORT`` (the gateway, 8001), ``DEMO_DIR`` (logs,
the filesystem broker, the beat schedule: ``build/demo``), ``DEMO_EMBEDDED=1``
(embedded even when a Redis answers), ``SHOP_DB`` and ``SHOP_KEY_PREFIX``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOST = os.environ.get("DEMO_HOST", "127.0.0.1")
PORT = int(os.environ.get("DEMO_PORT", "8000"))
GATEWAY_PORT = int(os.environ.get("DEMO_GATEWAY_PORT", "8001"))
RUN_DIR = Path(os.environ.get("DEMO_DIR", str(ROOT / "build" / "demo")))
#: Threads of each gunicorn worker (and the shop's in-flight limit per process).
THREADS = 4


def redis_answers(url: str) -> bool:
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5).ping()
    except (redis.RedisError, OSError, ValueError):
        return False
    return True


def choose_mode() -> str:
    """The Redis URL to use, or "" for the embedded mode."""
    if os.environ.get("DEMO_EMBEDDED") == "1":
        return ""
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    return url if redis_answers(url) else ""


class Demo:
    """The processes of the demo: started in order, stopped together."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs: list[IO[bytes]] = []

    def start(self, name: str, command: list[str], log: Path | None = None) -> None:
        output: Any = None
        if log is not None:
            handle = log.open("ab")
            self.logs.append(handle)
            output = handle
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT if log is not None else None,
            # A group of its own: stopping the demo stops a child's own children
            # too (gunicorn's workers, Celery's pool), and a Ctrl-C in the
            # terminal reaches only this script, which stops them in order.
            preexec_fn=os.setpgrp,
        )
        self.children.append((name, process))

    def exited(self) -> str | None:
        """The name of a child that stopped by itself, if one did."""
        for name, process in self.children:
            if process.poll() is not None:
                return name
        return None

    def stop(self) -> None:
        for _, process in reversed(self.children):
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, process in self.children:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Whatever is left of the group (a pool child, a worker) goes now.
            _signal_group(process, signal.SIGKILL)
            if process.poll() is None:
                process.wait(timeout=5)
        for handle in self.logs:
            handle.close()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def wait_until_up(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def main() -> int:
    redis_url = choose_mode()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    celery_dir = RUN_DIR / "celery"
    env = {
        **os.environ,
        # Every process imports this checkout, whatever the virtualenv points at.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "REDIS_URL": redis_url,
        "SHOP_GATEWAY_URL": f"http://127.0.0.1:{GATEWAY_PORT}",
        "SHOP_THREADS": str(THREADS),
        "SHOP_CELERY_DIR": str(celery_dir),
        "SHOP_MEDIA": os.environ.get("SHOP_MEDIA", str(RUN_DIR / "media")),
    }
    if not redis_url:
        for folder in ("messages", "control"):
            (celery_dir / folder).mkdir(parents=True, exist_ok=True)
    manage = [PYTHON, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], check=True, env=env, cwd=ROOT)
    subprocess.run([*manage, "shop_seed"], check=True, env=env, cwd=ROOT)
    login = subprocess.run(
        [*manage, "demo_setup"], check=True, env=env, cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()

    demo = Demo(env)
    # SIGTERM stops the demo as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        demo.start(
            "gateway",
            [PYTHON, "-m", "example_project.gateway", "--port", str(GATEWAY_PORT)],
            RUN_DIR / "gateway.log",
        )
        worker = [
            PYTHON, "-m", "celery", "-A", "example_project.celery", "worker",
            "--beat", "--schedule", str(RUN_DIR / "beat-schedule"),
            "--pool", "prefork", "--concurrency", "2",
            "--without-mingle", "--without-gossip", "--without-heartbeat", "--loglevel", "INFO",
        ]  # fmt: skip
        demo.start("celery", worker, RUN_DIR / "worker.log")
        # Embedded mode keeps one web process, so that its in-process state is the site's state.
        web = [
            PYTHON, "-m", "gunicorn", "example_project.wsgi", "--bind", f"{HOST}:{PORT}",
            "--workers", "2" if redis_url else "1", "--threads", str(THREADS),
            "--worker-class", "gthread", "--graceful-timeout", "5", "--access-logfile", "-",
        ]  # fmt: skip
        demo.start("gunicorn", web)
        if not wait_until_up(f"http://{HOST}:{PORT}/", 60):
            print("The shop did not start; see the output above.", file=sys.stderr)
            return 1
        mode = f"with Redis at {urlparse(redis_url).netloc}" if redis_url else "embedded (no Redis)"
        print(
            f"\nThe example shop is up, {mode}.\n"
            f"  shop:        http://{HOST}:{PORT}/\n"
            f"  admin:       http://{HOST}:{PORT}/admin/   ({login})\n"
            f"  operations:  http://{HOST}:{PORT}/ops/   (the gateway's latency and failures)\n"
            f"  gateway:     http://127.0.0.1:{GATEWAY_PORT}/control\n"
            f"  logs:        {RUN_DIR}/worker.log, {RUN_DIR}/gateway.log\n"
            "Ctrl-C stops everything this started.\n",
            flush=True,
        )
        while True:
            stopped = demo.exited()
            if stopped is not None:
                print(f"The {stopped} process stopped; stopping the rest.", file=sys.stderr)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nStopping the demo.", flush=True)
        return 0
    finally:
        # Ctrl-C while stopping must not leave half the processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
