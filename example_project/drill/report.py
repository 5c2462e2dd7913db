"""The drill's results: a table for the terminal, Markdown for the docs, JSON, and PNG charts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .scenarios import Measure, Scenario

COLUMNS = (32, 34, 11, 11)


def _rows(scenario: Scenario, result: dict[str, Any]) -> list[tuple[Measure, str, str, str]]:
    rows = []
    for measure in scenario.measures:
        off = measure.format(result["unprotected"].get(measure.key))
        on = measure.format(result["protected"].get(measure.key))
        mark = ""
        if measure.judged:
            won = measure.beats(
                float(result["protected"][measure.key]), float(result["unprotected"][measure.key])
            )
            mark = "protected wins" if won else "NOT BETTER"
        rows.append((measure, off, on, mark))
    return rows


def table(scenarios: list[Scenario], results: list[dict[str, Any]]) -> str:
    """The plain-text table printed at the end of a drill."""
    a, b, c, d = COLUMNS
    lines = [
        f"{'scenario':<{a}} {'measure':<{b}} {'without':>{c}} {'with':>{d}}  verdict",
        "-" * (a + b + c + d + 20),
    ]
    for scenario, result in zip(scenarios, results, strict=True):
        label = f"{scenario.antipattern}: {scenario.title}"
        for index, (measure, off, on, mark) in enumerate(_rows(scenario, result)):
            name = label[:a] if index == 0 else (label[a : a * 2] if index == 1 else "")
            lines.append(f"{name:<{a}} {measure.label:<{b}} {off:>{c}} {on:>{d}}  {mark}")
    won = sum(1 for result in results if result["verdict"])
    lines.append("-" * (a + b + c + d + 20))
    lines.append(
        f"{won} of {len(results)} scenarios: the protected run beats the unprotected one "
        "on every judged measure."
    )
    return "\n".join(lines)


def markdown(scenarios: list[Scenario], results: list[dict[str, Any]], *, heading: bool) -> str:
    """The same table in Markdown (for the docs)."""
    lines = [
        "| scenario | measure | without protection | with protection | |",
        "|---|---|---|---|---|",
    ]
    for scenario, result in zip(scenarios, results, strict=True):
        for index, (measure, off, on, mark) in enumerate(_rows(scenario, result)):
            name = f"{scenario.antipattern}: {scenario.title}" if index == 0 else ""
            verdict = "**protected wins**" if mark == "protected wins" else mark
            lines.append(f"| {name} | {measure.label} | {off} | {on} | {verdict} |")
    if heading:
        won = sum(1 for result in results if result["verdict"])
        lines.append("")
        lines.append(
            f"{won} of {len(results)} scenarios: the protected run beats the unprotected one "
            "on every judged measure (a measure without a verdict is shown for context)."
        )
    return "\n".join(lines) + "\n"


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def chart(path: Path, scenarios: list[Scenario], results: list[dict[str, Any]]) -> None:
    """One pair of bars per judged measure: without and with protection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (scenario, measure, result)
        for scenario, result in zip(scenarios, results, strict=True)
        for measure in scenario.measures
        if measure.judged
    ]
    columns = min(4, len(panels))
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.0 * rows), squeeze=False)
    for slot, (scenario, measure, result) in enumerate(panels):
        ax = axes[slot // columns][slot % columns]
        values = [
            float(result["unprotected"][measure.key]),
            float(result["protected"][measure.key]),
        ]
        scale = 100.0 if measure.unit == "share" else 1.0
        bars = ax.bar(
            ["without", "with"], [v * scale for v in values], color=["#c0504d", "#3a66db"]
        )
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(
                measure.format(value),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        better = "higher is better" if measure.better == "higher" else "lower is better"
        ax.set_title(f"{scenario.antipattern}\n{measure.label}", fontsize=9)
        ax.set_ylabel(f"{'%' if measure.unit == 'share' else measure.unit} ({better})", fontsize=7)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.2)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for slot in range(len(panels), rows * columns):
        axes[slot // columns][slot % columns].axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
