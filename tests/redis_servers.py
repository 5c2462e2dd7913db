"""Private redis-servers for fault tests: started on free ports, never the shared one.

``PrivateRedis`` wraps pytest-redis's executor and adds the faults the tests
need: stop (refused connections), hang (SIGSTOP), resume (SIGCONT), kill, and
restart on the same port. ``RedisClusterOnLoopback`` starts three masters in
cluster mode and joins them with ``redis-cli --cluster create``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis
from port_for import get_port
from pytest_redis.executor import RedisExecutor

_SPIN = """
local start = redis.call('TIME')
while true do
  local now = redis.call('TIME')
  if (now[1] - start[1]) * 1000000 + (now[2] - start[2]) > tonumber(ARGV[1]) then break end
end
return 1
"""


def free_port() -> int:
    port = get_port(None)
    assert port is not None
    return int(port)


def free_cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is free too.

    A Redis Cluster node also listens on its port + 10000, which lands in the
    range of the ephemeral ports other tests' client sockets use.
    """
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        finally:
            probe.close()
        return port
    raise RuntimeError("no free port with a free cluster bus port")


class PrivateRedis:
    """A redis-server of this test's own, on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.datadir = Path(tempfile.mkdtemp(prefix="stab-redis-"))
        self.executor = RedisExecutor(
            executable=shutil.which("redis-server") or "redis-server",
            databases=4,
            redis_timeout=30,
            loglevel="warning",
            host="127.0.0.1",
            port=self.port,
            datadir=self.datadir,
        )
        self.hung = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> PrivateRedis:
        self.executor.start()
        return self

    def stop(self) -> None:
        """Shut down cleanly: connections are then refused."""
        if self.hung:
            self.resume()
        self.executor.stop()

    def kill(self) -> None:
        if self.hung:
            self.resume()
        self.executor.kill()

    def restart(self) -> None:
        if self.executor.running():
            self.stop()
        self.executor.start()

    def hang(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers."""
        assert self.executor.process is not None
        os.kill(self.executor.process.pid, signal.SIGSTOP)
        self.hung = True

    def resume(self) -> None:
        assert self.executor.process is not None
        os.kill(self.executor.process.pid, signal.SIGCONT)
        self.hung = False

    def slow(self, seconds: float) -> threading.Thread:
        """Keep the server busy for ``seconds``: a script that spins, from another client.

        (DEBUG SLEEP would do, but Redis 7 disables DEBUG by default.)
        """

        def sleep() -> None:
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=seconds + 5)
            try:
                client.eval(_SPIN, 0, int(seconds * 1_000_000))
            except redis.RedisError:
                pass  # the test may stop the server before the spin ends

        thread = threading.Thread(target=sleep, daemon=True)
        thread.start()
        time.sleep(0.05)  # let the command reach the server
        return thread

    def close(self) -> None:
        try:
            if self.executor.running() or self.hung:
                self.kill()
        finally:
            shutil.rmtree(self.datadir, ignore_errors=True)


class RedisClusterOnLoopback:
    """Three Redis masters in cluster mode on free loopback ports."""

    def __init__(self, masters: int = 3) -> None:
        self.ports = [free_cluster_port() for _ in range(masters)]
        self.datadir = Path(tempfile.mkdtemp(prefix="stab-cluster-"))
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> RedisClusterOnLoopback:
        try:
            return self._start()
        except BaseException:
            self.close()  # never leave half a cluster running
            raise

    def _start(self) -> RedisClusterOnLoopback:
        for port in self.ports:
            node_dir = self.datadir / str(port)
            node_dir.mkdir()
            self.processes.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(node_dir / "nodes.conf"),
                        "--cluster-node-timeout",
                        "2000",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(node_dir),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            _wait_for(port)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in self.ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = redis.Redis(port=self.ports[0]).cluster("info")
            if info.get("cluster_state") == "ok":
                return self
            time.sleep(0.1)
        raise RuntimeError("the test cluster did not become ready")

    def close(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(self.datadir, ignore_errors=True)


def _wait_for(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port, socket_timeout=1).ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on port {port} did not start")


def count_connects(pool: redis.ConnectionPool) -> list[int]:
    """Count the socket connects ``pool`` makes from now on (``counter[0]``).

    The pool's open connections are dropped first, so that every later use has
    to connect: a count of 0 proves that no network I/O was attempted.
    """
    counter = [0]
    original = pool.make_connection

    def make_connection() -> Any:
        connection = original()
        connect = connection.connect

        def counted() -> None:
            counter[0] += 1
            connect()

        connection.connect = counted  # type: ignore[method-assign]
        return connection

    pool.make_connection = make_connection  # type: ignore[method-assign]
    pool.disconnect()
    return counter
