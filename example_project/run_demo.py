"""``make demo``: migrate, create the admin, serve the shop, stop everything on Ctrl-C.

Uses Redis on ``REDIS_URL`` (or 127.0.0.1:6379) when it answers; otherwise runs
embedded, with no Redis at all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOST = os.environ.get("DEMO_HOST", "127.0.0.1")
PORT = int(os.environ.get("DEMO_PORT", "8000"))


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


def main() -> int:
    redis_url = choose_mode()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "REDIS_URL": redis_url,
    }
    manage = [PYTHON, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], check=True, env=env, cwd=ROOT)
    login = subprocess.run(
        [*manage, "demo_setup"], check=True, env=env, cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    children: list[subprocess.Popen[bytes]] = []
    # Embedded mode keeps one process, so that its in-process state is the site's state.
    workers = "2" if redis_url else "1"
    children.append(
        subprocess.Popen(
            [
                PYTHON,
                "-m",
                "gunicorn",
                "example_project.wsgi",
                "--bind",
                f"{HOST}:{PORT}",
                "--workers",
                workers,
                "--threads",
                "4",
                "--worker-class",
                "gthread",
                "--access-logfile",
                "-",
            ],
            env=env,
            cwd=ROOT,
        )
    )

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 10
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()

    signal.signal(signal.SIGTERM, lambda *a: (stop(), sys.exit(0)))
    mode = f"with Redis at {urlparse(redis_url).netloc}" if redis_url else "embedded (no Redis)"
    print(
        f"\nThe example shop is up, {mode}.\n"
        f"  shop:   http://{HOST}:{PORT}/\n"
        f"  admin:  http://{HOST}:{PORT}/admin/   ({login})\n"
        "Ctrl-C stops everything this started.\n",
        flush=True,
    )
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("A demo process stopped; stopping the rest.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
