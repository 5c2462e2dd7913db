"""``manage.py stability_drill --quick``: every scenario, without and with protection, measured.

One short drill (a second or two of load per run), as ``make drill`` runs the
long one: it starts its own redis-server, gateway and gunicorn servers on free
loopback ports, and must leave none of them running. The table, the JSON and
the charts are checked, and the verdicts are recomputed from the measures in
the JSON, not taken from the command's word.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_demo import session_members

ROOT = Path(__file__).resolve().parents[1]

SCENARIOS = {
    "integration-points",
    "blocked-threads",
    "users",
    "self-denial-cache",
    "self-denial-cron",
    "unbalanced-capacities",
    "scaling-effects",
}


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_quick_drill_shows_every_defence_winning(tmp_path: Path) -> None:
    results = tmp_path / "drill"
    env = {**os.environ}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py sets the shop's
    process = subprocess.Popen(
        [sys.executable, "manage.py", "stability_drill", "--quick", "--results", str(results)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so that whatever it started can be found afterwards
    )
    try:
        output, _ = process.communicate(timeout=360)
    finally:
        left = session_members(process.pid)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert process.returncode == 0, output[-5000:]
    assert not left, f"the drill left processes running: {left}"

    data = json.loads((results / "drill.json").read_text())
    assert data["quick"] is True
    scenarios = {scenario["name"]: scenario for scenario in data["scenarios"]}
    assert set(scenarios) == SCENARIOS
    for name, scenario in scenarios.items():
        judged = [m for m in scenario["measures"] if m["judged"]]
        assert judged, name
        for measure in judged:
            off = scenario["unprotected"][measure["key"]]
            on = scenario["protected"][measure["key"]]
            better = on > off if measure["better"] == "higher" else on < off
            assert better, f"{name}: {measure['label']} without {off}, with {on}"
        assert scenario["verdict"] is True

    # What each scenario is about, measured as such.
    integration = scenarios["integration-points"]
    assert integration["unprotected"]["stuck"] >= integration["protected"]["stuck"]
    cache = scenarios["self-denial-cache"]
    assert cache["protected"]["computes"] == 1
    assert cache["unprotected"]["computes"] > 1
    cron = scenarios["self-denial-cron"]
    assert cron["unprotected"]["most_at_once"] > cron["protected"]["most_at_once"]
    assert cron["protected"]["spread"] > 1.0  # the jitter moved the starts apart
    scaling = scenarios["scaling-effects"]
    # The store's keys expire as soon as they carry nothing (a full bucket).
    assert scaling["protected"]["keys_left"] <= scaling["protected"]["clients"] // 100

    table = (results / "table.txt").read_text()
    assert table == output[output.index("scenario ") :].split("\n\nDrill done")[0] + "\n"
    for scenario in scenarios.values():
        assert scenario["antipattern"] in table
    assert f"{len(SCENARIOS)} of {len(SCENARIOS)} scenarios" in table
    assert "NOT BETTER" not in table
    assert "| scenario | measure |" in (results / "table.md").read_text()

    for chart in ["drill", *SCENARIOS]:
        png = (results / f"{chart}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), chart
        assert len(png) > 5_000, chart
    assert not (results / "work").exists()  # the drill's database, logs and Redis dir
