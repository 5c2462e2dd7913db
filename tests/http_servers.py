"""Real HTTP dependencies on loopback for the integration-point tests.

``Dependency`` is a threaded HTTP server on a free port whose paths answer,
sleep, fail or throttle; it counts the requests that reached it. ``HungServer``
accepts connections and never answers (the book's hung integration point).
Both stop when the test ends.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.redis_servers import free_port


class Dependency:
    """An HTTP server: /ok, /slow?seconds=S, /fail (503, Retry-After: 0), /throttle (429),
    and /users/<id> (JSON; 404 for id 404; 503 while ``down`` is set)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: dict[str, int] = {}
        self.down = False
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                with owner.lock:
                    owner.hits[url.path] = owner.hits.get(url.path, 0) + 1
                query = parse_qs(url.query)
                if url.path.startswith("/users/"):
                    user_id = url.path.rsplit("/", 1)[-1]
                    if owner.down:
                        self.answer(503, b"down")
                    elif user_id == "404":
                        self.answer(404, b"no such user")
                    else:
                        body = json.dumps({"id": int(user_id), "name": f"user {user_id}"})
                        self.answer(200, body.encode(), {"Content-Type": "application/json"})
                elif url.path == "/slow":
                    time.sleep(float(query.get("seconds", ["0.3"])[0]))
                    self.answer(200, b"slow but fine")
                elif url.path == "/fail":
                    self.answer(503, b"down", {"Retry-After": "0"})
                elif url.path == "/throttle":
                    self.answer(429, b"slow down", {"Retry-After": "0"})
                else:
                    self.answer(200, b"ok")

            do_POST = do_GET

            def answer(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def start(self) -> Dependency:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HungServer:
    """Accepts every connection and never sends a byte; counts connections held at once."""

    def __init__(self) -> None:
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port), backlog=128)
        self.held: list[socket.socket] = []
        self.most_at_once = 0
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> HungServer:
        self.thread.start()
        return self

    def _accept(self) -> None:
        self.listener.settimeout(0.05)
        while not self.closed.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                self._drop_closed()
                continue
            with self.lock:
                self.held.append(connection)
            self._drop_closed()

    def _drop_closed(self) -> None:
        """Forget connections the client gave up on (they read as closed)."""
        with self.lock:
            alive = []
            for connection in self.held:
                connection.setblocking(False)
                try:
                    # Read (and drop) the request; an empty read means the client hung up.
                    gone = connection.recv(65536) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    connection.close()
                else:
                    alive.append(connection)
            self.held = alive
            self.most_at_once = max(self.most_at_once, len(alive))

    def close(self) -> None:
        self.closed.set()
        self.thread.join(timeout=5)
        with self.lock:
            for connection in self.held:
                connection.close()
            self.held = []
        self.listener.close()
