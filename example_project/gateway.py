"""A simulated payment gateway: the shop's integration point, on 127.0.0.1.

Its latency and failure rate change at run time, so the demo and the drill can
make it slow, failing or hung while the shop runs::

    python -m example_project.gateway --port 8001

    POST /charge              {"order": 7, "amount_cents": 1999} -> 200 {"charge_id": ...}
                              after `latency` seconds; 503 with probability `failure_rate`
    GET  /control             the current settings and counters, as JSON
    POST /control             {"latency": 3, "failure_rate": 0.5} (JSON or a form);
                              {"hang": true} never answers until changed again
    POST /control/reset       counters back to zero
    GET  /health              200 "ok"

A charge waits in small steps and looks at the latency again at each step:
lowering it (healing a hung gateway) releases the calls already waiting, as a
real service that comes back would.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

#: What "hung" means: an answer after an hour, i.e. none within any caller's patience.
HANG_SECONDS = 3600.0
#: How often a waiting charge looks at the latency again.
STEP = 0.05


class GatewayState:
    """The gateway's behaviour (latency, failure rate) and what it has seen, thread-safe."""

    def __init__(self, latency: float = 0.05, failure_rate: float = 0.0) -> None:
        self.lock = threading.Lock()
        self.latency = latency
        self.failure_rate = failure_rate
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.calls = 0
            self.failures = 0
            self.in_flight = 0
            self.most_in_flight = 0

    def configure(self, values: dict[str, Any]) -> None:
        """Apply ``latency`` (seconds), ``failure_rate`` (0 to 1) or ``hang``; ValueError if bad."""
        latency, failure_rate = self.latency, self.failure_rate
        if "latency" in values and values["latency"] not in ("", None):
            latency = float(values["latency"])
            if not 0 <= latency <= HANG_SECONDS:
                raise ValueError(f"latency is seconds between 0 and {HANG_SECONDS:g}")
        if "failure_rate" in values and values["failure_rate"] not in ("", None):
            failure_rate = float(values["failure_rate"])
            if not 0 <= failure_rate <= 1:
                raise ValueError("failure_rate is a share between 0 and 1")
        if str(values.get("hang", "")).lower() in ("1", "true", "on", "yes"):
            latency = HANG_SECONDS
        with self.lock:
            self.latency, self.failure_rate = latency, failure_rate

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "latency": self.latency,
                "failure_rate": self.failure_rate,
                "hung": self.latency >= HANG_SECONDS,
                "calls": self.calls,
                "failures": self.failures,
                "in_flight": self.in_flight,
                "most_in_flight": self.most_in_flight,
            }

    def charge(self) -> bool:
        """Wait as the gateway is set to wait; True for a successful charge."""
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            # A little spread, as a real service has.
            factor = random.uniform(0.9, 1.1)
        started = time.monotonic()
        try:
            while True:
                with self.lock:
                    wait = self.latency * factor - (time.monotonic() - started)
                if wait <= 0:
                    break
                time.sleep(min(STEP, wait))
            with self.lock:
                failed = random.random() < self.failure_rate
                if failed:
                    self.failures += 1
            return not failed
        finally:
            with self.lock:
                self.in_flight -= 1


def make_server(host: str, port: int, state: GatewayState) -> ThreadingHTTPServer:
    """The gateway's HTTP server (not started)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "SimulatedGateway/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the shop logs its side; thousands of drill calls would flood a terminal

        def read_values(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not raw:
                return {}
            if "json" in (self.headers.get("Content-Type") or ""):
                loaded = json.loads(raw)
                if not isinstance(loaded, dict):
                    raise ValueError("expected a JSON object")
                return loaded
            return {k: v[-1] for k, v in parse_qs(raw.decode()).items()}

        def answer(self, status: int, data: Any) -> None:
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/health":
                self.answer(200, "ok")
            elif self.path == "/control":
                self.answer(200, state.snapshot())
            else:
                self.answer(404, {"error": "no such path"})

        def do_POST(self) -> None:
            try:
                values = self.read_values()
            except (ValueError, UnicodeDecodeError) as error:
                self.answer(400, {"error": f"unreadable body: {error}"})
                return
            if self.path == "/charge":
                if state.charge():
                    self.answer(200, {"charge_id": f"ch_{uuid.uuid4().hex[:16]}", "status": "paid"})
                else:
                    self.answer(503, {"error": "the gateway failed to charge"})
            elif self.path == "/control":
                try:
                    state.configure(values)
                except (TypeError, ValueError) as error:
                    self.answer(400, {"error": str(error)})
                    return
                self.answer(200, state.snapshot())
            elif self.path == "/control/reset":
                state.reset()
                self.answer(200, state.snapshot())
            else:
                self.answer(404, {"error": "no such path"})

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        # Hung charges hold their connections; let many more wait to be accepted.
        request_queue_size = 256

    return Server((host, port), Handler)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    state = GatewayState(args.latency, args.failure_rate)
    server = make_server(args.host, args.port, state)
    # SIGTERM (the demo's and the drill's stop) ends serve_forever like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"payment gateway on http://{args.host}:{args.port}/", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
