"""Views for the load-shedding tests: slow and fast, sync and async, with counters.

The counters live in the serving process, so a test against a real server
reads them through ``/stats/`` (classified critical, so it is never shed).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from django_stability import concurrency_limit, feature_enabled, waiting_room

_lock = threading.Lock()
runs: Counter[str] = Counter()
running: Counter[str] = Counter()
peak: Counter[str] = Counter()


def _start(label: str) -> None:
    with _lock:
        runs[label] += 1
        running[label] += 1
        peak[label] = max(peak[label], running[label])


def _end(label: str) -> None:
    with _lock:
        running[label] -= 1


def _seconds(request: HttpRequest) -> float:
    return min(5.0, float(request.GET.get("s", "0") or 0))


def work(request: HttpRequest, label: str) -> HttpResponse:
    _start(label)
    try:
        time.sleep(_seconds(request))
    finally:
        _end(label)
    return HttpResponse(f"{label} done")


async def awork(request: HttpRequest, label: str) -> HttpResponse:
    _start(label)
    try:
        await asyncio.sleep(_seconds(request))
    finally:
        _end(label)
    return HttpResponse(f"{label} done")


def stats(request: HttpRequest) -> JsonResponse:
    with _lock:
        return JsonResponse({"runs": dict(runs), "running": dict(running), "peak": dict(peak)})


def reset(request: HttpRequest) -> JsonResponse:
    with _lock:
        runs.clear()
        running.clear()
        peak.clear()
    return JsonResponse({"reset": True})


def in_flight(request: HttpRequest) -> JsonResponse:
    """The admission state of the serving process (this request counts itself)."""
    from django_stability.shedding import status

    return JsonResponse(status())


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for i in range(3):
            yield f"chunk {i}\n".encode()

    return StreamingHttpResponse(chunks())


def room(request: HttpRequest) -> HttpResponse:
    runs["room"] += 1
    return HttpResponse("in the shop")


def room_leave(request: HttpRequest) -> HttpResponse:
    return HttpResponse("left" if waiting_room.release(request, "sale") else "not in")


@concurrency_limit("exports")
def export(request: HttpRequest) -> HttpResponse:
    _start("export")
    try:
        time.sleep(_seconds(request))
    finally:
        _end("export")
    return HttpResponse("exported")


@concurrency_limit("exports")
def export_stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(iter([b"a", b"b"]))


def product(request: HttpRequest) -> HttpResponse:
    extra = " with recommendations" if feature_enabled("recommendations") else ""
    return HttpResponse(f"product{extra}")
