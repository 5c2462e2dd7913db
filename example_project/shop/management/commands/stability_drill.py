"""``manage.py stability_drill`` (``make drill``): every anti-pattern, measured, with and without.

Starts on 127.0.0.1 what it needs (a private redis-server it may hang, the
simulated payment gateway, gunicorn serving the example shop on free ports),
runs each scenario for a few seconds without protection and then with it,
prints a table, and writes ``drill.json``, ``drill.png`` (one chart), one
PNG per scenario, and the table as text and Markdown into the results
directory. It exits with an error when a scenario's protected run does not
beat its unprotected run on every judged measure.

It lives in the example shop, not in the package: it drives the shop's
pages, its gateway and its settings, which a project of yours does not have.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from example_project.drill import report
from example_project.drill.processes import ROOT, Gateway, RedisServer, child_env, run_python
from example_project.drill.scenarios import SCENARIOS, Drill, verdict


class Command(BaseCommand):
    help = "Run every anti-pattern against the example shop, without and with protection."
    # It touches no database of its own; the shop it drills is checked in its children.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--quick", action="store_true", help="a second or two per run (for the tests)"
        )
        parser.add_argument(
            "--results",
            default=str(ROOT / "build" / "drill"),
            help="where the table, drill.json and the charts go (default: build/drill)",
        )
        parser.add_argument(
            "--only",
            action="append",
            choices=[scenario.name for scenario in SCENARIOS],
            help="run only this scenario (may be repeated)",
        )
        parser.add_argument(
            "--publish",
            action="store_true",
            help="also copy the charts and tables into the docs (docs/assets/drill, "
            "benchmarks/figures)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        results_dir = Path(options["results"]).resolve()
        workdir = results_dir / "work"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        chosen = [s for s in SCENARIOS if not options["only"] or s.name in options["only"]]
        redis = RedisServer(workdir)
        gateway = Gateway(workdir)
        results: list[dict[str, Any]] = []
        try:
            self.log("Starting a private redis-server and the payment gateway ...")
            redis.start()
            gateway.start()
            database = workdir / "drill.sqlite3"
            env = child_env(REDIS_URL=redis.url, SHOP_DB=str(database))
            self.log("Migrating and seeding the drill's shop ...")
            run_python(["manage.py", "migrate", "--noinput", "-v", "0"], env, 300)
            run_python(["manage.py", "shop_seed"], env, 300)
            drill = Drill(workdir, options["quick"], redis, gateway, database, log=self.log)
            for scenario in chosen:
                self.log(f"{scenario.antipattern}: {scenario.title}")
                begun = time.monotonic()
                off, on = scenario.run(drill)
                results.append(
                    {
                        "name": scenario.name,
                        "antipattern": scenario.antipattern,
                        "title": scenario.title,
                        "what": scenario.what,
                        "measures": [
                            {
                                "key": m.key,
                                "label": m.label,
                                "unit": m.unit,
                                "better": m.better,
                                "judged": m.judged,
                            }
                            for m in scenario.measures
                        ],
                        "unprotected": off,
                        "protected": on,
                        "verdict": verdict(scenario, off, on),
                        "seconds": round(time.monotonic() - begun, 1),
                    }
                )
        finally:
            gateway.stop()
            redis.stop()
        elapsed = time.monotonic() - started
        text = report.table(chosen, results)
        data = {
            "quick": options["quick"],
            "seconds": round(elapsed, 1),
            "machine": {
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
            },
            "scenarios": results,
        }
        report.write_json(results_dir / "drill.json", data)
        (results_dir / "table.txt").write_text(text + "\n")
        (results_dir / "table.md").write_text(report.markdown(chosen, results, heading=True))
        report.chart(results_dir / "drill.png", chosen, results)
        for scenario, result in zip(chosen, results, strict=True):
            report.chart(results_dir / f"{scenario.name}.png", [scenario], [result])
        shutil.rmtree(workdir, ignore_errors=True)
        self.stdout.write("\n" + text)
        self.stdout.write(f"\nDrill done in {elapsed:.0f} s; results in {results_dir}")
        if options["publish"]:
            self.publish(chosen, results, results_dir)
        lost = [r["name"] for r in results if not r["verdict"]]
        if lost:
            raise CommandError(f"The protected run did not win in: {', '.join(lost)}")

    def publish(self, chosen: list[Any], results: list[dict[str, Any]], results_dir: Path) -> None:
        assets = ROOT / "docs" / "assets" / "drill"
        figures = ROOT / "benchmarks" / "figures"
        assets.mkdir(parents=True, exist_ok=True)
        for scenario, result in zip(chosen, results, strict=True):
            shutil.copy(results_dir / f"{scenario.name}.png", assets / f"{scenario.name}.png")
            (figures / f"drill-{scenario.name}.md").write_text(
                report.markdown([scenario], [result], heading=False)
            )
        shutil.copy(results_dir / "drill.png", assets / "drill.png")
        shutil.copy(results_dir / "table.md", figures / "drill.md")
        self.log(f"Published the charts to {assets} and the tables to {figures}")

    def log(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()
