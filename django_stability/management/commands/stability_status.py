"""``manage.py stability_status``: the state of every protection, as tables in the terminal.

The same state as the Stability page (``status.collect()``), read from the
reports every serving process writes to the store; this command's own process
serves no request, so it is left out unless no other process reports.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_stability.status import PROVIDERS, collect

Column = tuple[str, Callable[[Mapping[str, Any]], Any]]


def cell(value: Any) -> str:
    """A value as the tables show it."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {v}" for k, v in sorted(value.items()) if v) or "-"
    return str(value)


def render_table(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Columns padded to their widest cell, a rule under the header."""
    body = [[cell(get(row)) for _, get in columns] for row in rows]
    header = [title for title, _ in columns]
    widths = [max(len(text) for text in column) for column in zip(header, *body, strict=False)]
    lines = ["  ".join(text.ljust(width) for text, width in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    for row in body:
        lines.append("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)))
    return [line.rstrip() for line in lines]


def _get(key: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda row: row.get(key)


TABLES: dict[str, tuple[str, list[Column]]] = {
    "processes": (
        "Processes",
        [
            ("process", _get("id")),
            ("in flight", _get("in_flight")),
            ("limit", _get("limit")),
            ("store", _get("store")),
            ("up (s)", _get("uptime")),
            ("reported (s ago)", _get("report_age")),
        ],
    ),
    "breakers": (
        "Circuit breakers",
        [
            ("name", _get("name")),
            ("state", _get("state")),
            ("mode", _get("mode")),
            ("scope", _get("scope")),
            ("failure %", _get("failure_rate")),
            ("slow %", _get("slow_call_rate")),
            ("calls", _get("calls")),
            ("open for (s)", _get("time_left_open")),
            ("processes", _get("processes")),
        ],
    ),
    "ratelimits": (
        "Rate limits",
        [
            ("policy", _get("name")),
            ("rate", _get("rate")),
            ("mode", _get("mode")),
            ("decisions", _get("decisions")),
            ("refused", _get("refusals")),
            ("shadow", _get("shadow_refusals")),
            ("limited now", _get("limited_count")),
            (
                "most limited",
                lambda row: ", ".join(f"{i['key']} ({i['retry_in']:g} s)" for i in row["limited"]),
            ),
        ],
    ),
    "features": (
        "Feature switches",
        [
            ("feature", _get("name")),
            ("state", _get("state")),
            ("brownout", _get("brownout")),
            ("off in processes", _get("off_in_processes")),
        ],
    ),
    "concurrency": (
        "Concurrency limits",
        [
            ("policy", _get("name")),
            ("limit", _get("limit")),
            ("holding", _get("holders")),
            ("waiting", _get("waiting")),
            ("mode", _get("mode")),
        ],
    ),
    "bulkheads": (
        "Bulkheads",
        [
            ("name", _get("name")),
            ("mode", _get("mode")),
            ("scope", _get("scope")),
            ("limit", _get("limit")),
            ("in use", _get("in_use")),
            ("cluster", _get("cluster_in_use")),
            ("waiting", _get("waiting")),
            ("refused", _get("refused")),
        ],
    ),
}


class Command(BaseCommand):
    help = "Show the live state of every protection of the site (the Stability page, as tables)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the status as JSON.")
        parser.add_argument(
            "--section",
            action="append",
            choices=[name for name, _ in PROVIDERS],
            help="Show only this section (may be given several times).",
        )
        parser.add_argument(
            "--include-self",
            action="store_true",
            help="Count this command's own process among the processes.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        status = collect(include_self=options["include_self"], sections=options["section"])
        if options["json"]:
            self.stdout.write(json.dumps(status, indent=2, sort_keys=True))
            return
        self.stdout.write(f"Stability status at {status['generated_at']}")
        store = status.get("store")
        if store:
            trip = store.get("round_trip_ms")
            self.stdout.write(
                f"Store: {store['kind']}, {store['state']}"
                + (f", round trip {trip:g} ms" if trip is not None else "")
                + (f" ({store['error']})" if store.get("error") else "")
            )
        for name, _ in PROVIDERS:
            if name not in status:
                continue
            if name in status["errors"]:
                self.stdout.write(self.style.ERROR(f"\n{name}: failed: {status['errors'][name]}"))
                continue
            self._section(name, status[name])

    def _section(self, name: str, data: Any) -> None:
        if name in TABLES:
            title, columns = TABLES[name]
            self._table(title, columns, data)
        elif name == "shedding":
            self.stdout.write(self.style.MIGRATE_HEADING("\nLoad shedding"))
            limit = data["limit_total"]
            self.stdout.write(
                f"mode {data['mode']}; in flight {data['in_flight_total']}"
                + (f" of {limit}" if limit else " (no in-flight limit)")
                + f" in {data['processes']} process(es); shed by reason: "
                f"{cell(data['shed_by_reason'])}; brownout in {data['browned_out_processes']}"
            )
            rows = [
                {
                    "class": c,
                    "in flight": data["in_flight"][c],
                    "shedding in": data["processes_shedding"][c],
                    "shed": data["shed"][c],
                }
                for c in data["in_flight"]
            ]
            self._table("", [(key, _get(key)) for key in rows[0]], rows, heading=False)
        elif name == "cache":
            self._table(
                "Cache",
                [(key, _get(key)) for key in ("name", "hits", "stale", "recomputes", "errors")],
                data["policies"],
            )
            if data["servers"]:
                self._table(
                    "Cache servers",
                    [("server", _get("name")), ("state", _get("state"))],
                    data["servers"],
                )
        elif name == "jobs":
            if data["queues"]:
                self._table(
                    "Job queues",
                    [("queue", _get("name")), ("depth", _get("depth")), ("problem", _get("error"))],
                    data["queues"],
                )
            keys = ("name", "queued", "running", "succeeded", "failed", "refused")
            self._table(
                f"Jobs (ended in the last {data['window_minutes']} min)",
                [(key, _get(key)) for key in keys],
                data["by_name"],
            )

    def _table(
        self,
        title: str,
        columns: Sequence[Column],
        rows: Sequence[Mapping[str, Any]],
        *,
        heading: bool = True,
    ) -> None:
        if heading:
            self.stdout.write(self.style.MIGRATE_HEADING(f"\n{title}"))
        if not rows:
            self.stdout.write("(none)")
            return
        for line in render_table(columns, rows):
            self.stdout.write(line)
