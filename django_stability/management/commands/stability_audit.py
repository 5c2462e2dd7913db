"""``manage.py stability_audit``: the system checks, then live probes of every integration point.

For a deploy pipeline: the exit status is 1 when a check or a probe found an
error (with ``--fail-level warning``, a warning too), 0 otherwise. ``--json``
prints everything as one JSON document.
"""

from __future__ import annotations

import json
from typing import Any

from django.core import checks
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_stability.audit import ERROR, LEVELS, WARNING, Probe, probe_all, targets

from .stability_status import render_table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


class Command(BaseCommand):
    help = (
        "Run the system checks and probe every integration point the settings name: DNS and "
        "connect times, TLS certificate days left, and whether each guard has a timeout. "
        "Exits with 1 on errors."
    )
    # The checks run below, as part of the report, not before it.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
        parser.add_argument(
            "--fail-level",
            choices=(ERROR, WARNING),
            default=ERROR,
            help="The level that makes the command exit with 1 (default: error).",
        )
        parser.add_argument(
            "--deploy", action="store_true", help="Include Django's deployment checks."
        )
        parser.add_argument(
            "--skip-checks-run",
            action="store_true",
            help="Only probe; do not run the system checks.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        messages: list[checks.CheckMessage] = []
        if not options["skip_checks_run"]:
            messages = checks.run_checks(include_deployment_checks=options["deploy"])
        probes = probe_all(targets())
        check_level = [
            ERROR if m.level >= checks.ERROR else WARNING if m.level >= checks.WARNING else "info"
            for m in messages
        ]
        levels = set(check_level) | {p.level for p in probes}
        worst = next((level for level in (ERROR, WARNING) if level in levels), "ok")
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "level": worst,
                        "checks": [
                            {"id": m.id, "level": level, "message": m.msg, "hint": m.hint}
                            for m, level in zip(messages, check_level, strict=True)
                        ],
                        "probes": [p.as_dict() for p in probes],
                    },
                    indent=2,
                )
            )
        else:
            self._report(messages, probes)
        failing = LEVELS.index(worst) >= LEVELS.index(options["fail_level"])
        if failing:
            raise CommandError(f"The stability audit found {worst}s.", returncode=1)

    def _report(self, messages: list[checks.CheckMessage], probes: list[Probe]) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING("System checks"))
        if not messages:
            self.stdout.write("No issues.")
        for message in messages:
            style = self.style.ERROR if message.is_serious() else self.style.WARNING
            self.stdout.write(style(str(message)))
        self.stdout.write(self.style.MIGRATE_HEADING("\nIntegration points"))
        if not probes:
            self.stdout.write(
                "None found: name your HTTP dependencies in STABILITY['AUDIT_ENDPOINTS']."
            )
            return
        rows = [
            {
                "name": p.target.name,
                "address": p.target.address,
                "dns ms": _ms(p.dns_seconds),
                "connect ms": _ms(p.connect_seconds),
                "tls days": "-" if p.tls_days_left is None else f"{p.tls_days_left:.0f}",
                "timeout": p.timeout or "-",
                "verdict": p.level,
            }
            for p in probes
        ]
        columns = [(key, (lambda row, key=key: row[key])) for key in rows[0]]
        for line in render_table(columns, rows):
            self.stdout.write(line)
        for p in probes:
            for level, text in p.findings:
                style = self.style.ERROR if level == ERROR else self.style.WARNING
                self.stdout.write(style(f"{p.target.name}: {level}: {text}"))
