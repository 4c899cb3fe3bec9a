"""The probe report: report.json (DESIGN.md §3.5), report.md (the table), report.png."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(results: dict, out: str | Path) -> dict[str, Path]:
    """``results[task] = {"metric", "n_train", "n_test", "results": {method: score}}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "report.png"}
    paths["json"].write_text(json.dumps({"tasks": results}, indent=1) + "\n")
    paths["md"].write_text(markdown_table(results) + "\n")
    plot(results, paths["png"])
    return paths


def methods_of(results: dict) -> list[str]:
    methods: list[str] = []
    for task in results.values():
        methods += [m for m in task["results"] if m not in methods]
    return methods


def markdown_table(results: dict) -> str:
    methods = methods_of(results)
    lines = [
        "| task | metric | " + " | ".join(methods) + " |",
        "|---|---|" + "---:|" * len(methods),
    ]
    for name, task in results.items():
        scores = task["results"]
        if not scores:
            lines.append(f"| {name} | {task['metric']} | skipped: {task.get('skipped', '')} |")
            continue
        best = max(scores.values())
        cells = []
        for m in methods:
            value = scores.get(m)
            text = "" if value is None else f"{value:.3f}"
            cells.append(f"**{text}**" if value is not None and value == best else text)
        lines.append(f"| {name} | {task['metric']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = methods_of(results)
    tasks = list(results)
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks)), 3.8))
    for i, method in enumerate(methods):
        values = [results[t]["results"].get(method, np.nan) for t in tasks]
        ax.bar(
            np.arange(len(tasks)) + (i - (len(methods) - 1) / 2) * width,
            values,
            width,
            label=method,
        )
    ax.set_xticks(np.arange(len(tasks)))
    ax.set_xticklabels([f"{t}\n({results[t]['metric']})" for t in tasks])
    ax.set_ylabel("score")
    ax.legend(fontsize=8, ncol=min(len(methods), 4))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
