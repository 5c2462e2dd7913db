"""An open-loop load generator for loopback servers, bounded in count and time.

Each stream sends requests at a fixed rate whether or not earlier ones were
answered (as real visitors do), each on its own connection, each with its own
client timeout. Outcomes are counted by status; a request that got no answer
in time has status None.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Outcome:
    status: int | None
    retry_after: str | None
    latency: float
    content_type: str | None = None


@dataclass
class Stream:
    """``rate`` requests per second to ``path`` for the run's duration."""

    name: str
    path: str
    rate: float
    timeout: float
    headers: Callable[[], dict[str, str]] = field(default=dict)
    max_outstanding: int = 400


@dataclass
class Result:
    outcomes: dict[str, list[Outcome]]

    def statuses(self, name: str) -> Counter[int | None]:
        return Counter(o.status for o in self.outcomes[name])

    def sent(self, name: str) -> int:
        return len(self.outcomes[name])

    def success_rate(self, name: str) -> float:
        sent = self.sent(name)
        return self.statuses(name)[200] / sent if sent else 0.0

    def latencies(self, name: str, status: int = 200) -> list[float]:
        return sorted(o.latency for o in self.outcomes[name] if o.status == status)

    def percentile(self, name: str, q: float) -> float | None:
        values = self.latencies(name)
        if not values:
            return None
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def fetch(port: int, path: str, headers: dict[str, str], timeout: float) -> Outcome:
    start = time.perf_counter()
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        left = timeout - (time.perf_counter() - start)
        data = await asyncio.wait_for(reader.read(), max(0.001, left))
    except (TimeoutError, OSError):
        return Outcome(None, None, time.perf_counter() - start)
    finally:
        if writer is not None:
            writer.close()
    latency = time.perf_counter() - start
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    try:
        status = int(head[0].split()[1])
    except (IndexError, ValueError):
        return Outcome(None, None, latency)
    fields = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return Outcome(status, fields.get("retry-after"), latency, fields.get("content-type"))


async def _run(port: int, streams: Sequence[Stream], duration: float) -> Result:
    outcomes: dict[str, list[Outcome]] = {s.name: [] for s in streams}
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(stream: Stream) -> None:
        outcomes[stream.name].append(
            await fetch(port, stream.path, stream.headers(), stream.timeout)
        )

    async def feed(stream: Stream) -> None:
        interval = 1.0 / stream.rate
        n = 0
        outstanding: set[asyncio.Task[None]] = set()
        while True:
            due = start + n * interval
            if due >= start + duration:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))
            n += 1
            if len(outstanding) >= stream.max_outstanding:
                outcomes[stream.name].append(Outcome(None, None, 0.0))
                continue
            task = asyncio.create_task(one(stream))
            outstanding.add(task)
            task.add_done_callback(outstanding.discard)
            tasks.append(task)

    await asyncio.gather(*(feed(s) for s in streams))
    await asyncio.gather(*tasks)
    return Result(outcomes)


def run_load(port: int, streams: Sequence[Stream], duration: float) -> Result:
    """Send every stream for ``duration`` s; wait for the answers (each bounded by its timeout)."""
    return asyncio.run(_run(port, streams, duration))
