"""``make demo`` brings the shop up in both modes, and Ctrl-C leaves nothing behind.

Runs ``python -m example_project.run_demo`` (what ``make demo`` runs once the
virtualenv exists) on free ports, with a database, a run directory and (with
Redis) a key prefix of its own; fetches the home page, signs in to the admin
with the login the demo printed, sees the gateway and the Celery worker up,
then sends the terminal's Ctrl-C and checks that every process of the demo's
session is gone.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.redis_servers import free_port

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def session_members(sid: int) -> list[int]:
    """The pids of every live process whose session is ``sid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command (which may hold spaces) start after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            members.append(int(entry.name))
    return members


class RunningDemo:
    def __init__(self, tmp_path: Path, embedded: bool, prefix: str) -> None:
        self.port = free_port()
        self.gateway_port = free_port()
        self.output = tmp_path / "demo.out"
        self.run_dir = tmp_path / "run"
        env = {
            **os.environ,
            "DEMO_PORT": str(self.port),
            "DEMO_GATEWAY_PORT": str(self.gateway_port),
            "DEMO_DIR": str(self.run_dir),
            "SHOP_DB": str(tmp_path / "shop.sqlite3"),
            "SHOP_KEY_PREFIX": prefix,
            "DEMO_EMBEDDED": "1" if embedded else "",
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)  # the demo sets the shop's own
        with self.output.open("wb") as out:
            # A session of its own, as a terminal gives it: Ctrl-C goes to its group.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "example_project.run_demo"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_until_up(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "The example shop is up" not in self.text():
            if self.process.poll() is not None:
                pytest.fail(f"the demo exited with {self.process.returncode}:\n{self.text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the demo was not up within {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.25)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ctrl_c(self) -> int:
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        for pid in session_members(self.process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.wait(timeout=10)


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"stabtest-demo-{os.getpid()}-{time.monotonic_ns()}"
    yield name
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    for key in client.scan_iter(match=f"{name}*", count=500):
        client.delete(key)


@pytest.mark.parametrize("embedded", [False, True], ids=["redis", "embedded"])
def test_demo_serves_the_shop_and_stops_on_ctrl_c(
    tmp_path: Path, embedded: bool, prefix: str
) -> None:
    demo = RunningDemo(tmp_path, embedded, prefix)
    try:
        demo.wait_until_up()
        out = demo.text()
        assert ("embedded (no Redis)" in out) is embedded
        assert ("with Redis at" in out) is not embedded

        with urllib.request.urlopen(demo.url("/"), timeout=10) as response:
            assert response.status == 200
            home = response.read().decode()
        mode = re.search(r'id="mode-name">(\w+)<', home)
        assert mode is not None and mode.group(1) == ("embedded" if embedded else "redis")

        # The admin, with the login the demo printed.
        found = re.search(r"admin login: (\S+) / (\S+)\)", out)
        assert found is not None, out
        cookies = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
        with browser.open(demo.url("/admin/login/"), timeout=10) as response:
            assert response.status == 200
        token = next(cookie.value for cookie in cookies if cookie.name == "csrftoken")
        form = urllib.parse.urlencode(
            {
                "username": found.group(1),
                "password": found.group(2),
                "csrfmiddlewaretoken": token,
                "next": "/admin/",
            }
        ).encode()
        with browser.open(demo.url("/admin/login/?next=/admin/"), data=form, timeout=10) as page:
            assert page.status == 200
            assert page.url.endswith("/admin/"), page.url
            assert "Site administration" in page.read().decode()
        with browser.open(demo.url("/admin/django_stability/"), timeout=10) as page:
            assert page.status == 200

        # The payment gateway and the Celery worker run too.
        gateway = f"http://127.0.0.1:{demo.gateway_port}/control"
        with urllib.request.urlopen(gateway, timeout=10) as response:
            assert response.status == 200
        deadline = time.monotonic() + 60
        worker_log = demo.run_dir / "worker.log"
        while not (worker_log.exists() and " ready." in worker_log.read_text(errors="replace")):
            assert time.monotonic() < deadline, "the Celery worker did not say it is ready"
            time.sleep(0.25)

        assert len(session_members(demo.process.pid)) > 3  # the demo, gunicorn, celery, gateway
        assert demo.ctrl_c() == 0, demo.text()[-3000:]
        deadline = time.monotonic() + 10
        while session_members(demo.process.pid):
            assert time.monotonic() < deadline, (
                f"processes left after Ctrl-C: {session_members(demo.process.pid)}"
            )
            time.sleep(0.1)
    finally:
        demo.kill()
