"""The probe report: report.json (docs/DESIGN.md §3.5), report.md (the table), report.png."""

from __future__ import annotations

import json
from pathlib import Path

PAIRED_WITH = ("concat", "title_mean", "novelty")  # the report's paired-difference tables


def write_report(results: dict, out: str | Path) -> dict[str, Path]:
    """``results[task] = {"metric", "n_train", "n_test", "results": {method: score}}``,
    optionally ``"ci95": {method: [lo, hi]}`` and ``"vs_concat"`` / ``"vs_title_mean"`` / ``"vs_novelty"``:
    ``{method: {delta, ci95}}``, paired differences over the same resampled titles.
    """
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
            text = f"**{text}**" if value is not None and value == best else text
            if value is not None and m in task.get("ci95", {}):
                low, high = task["ci95"][m]
                text += f" ({low:.3f}-{high:.3f})"
            cells.append(text)
        lines.append(f"| {name} | {task['metric']} | " + " | ".join(cells) + " |")
    if any("ci95" in task for task in results.values()):
        lines += ["", "In brackets: 95% interval over resampled test titles."]
    for reference in PAIRED_WITH:
        differences = [
            f"| {name} | {m} | {d['delta']:+.3f} | {d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f} |"
            for name, task in results.items()
            for m, d in task.get("vs_" + reference, {}).items()
        ]
        if differences:
            lines += [
                "",
                f"| task | method | minus {reference} (paired) | 95% interval |",
                "|---|---|---:|---:|",
                *differences,
            ]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = methods_of(results)
    tasks = list(results)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks)), 3.8))
    if not methods:  # every task skipped (too few titles): say so instead of bars
        ax.axis("off")
        ax.text(0.5, 0.5, "every task was skipped: see report.md", ha="center", va="center")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = np.array([results[t]["results"].get(method, np.nan) for t in tasks])
        bounds = np.array(
            [results[t].get("ci95", {}).get(method, [np.nan, np.nan]) for t in tasks]
        ).reshape(len(tasks), 2)
        errors = np.abs(bounds - values[:, None]).T
        ax.bar(
            np.arange(len(tasks)) + (i - (len(methods) - 1) / 2) * width,
            values,
            width,
            yerr=None if np.isnan(errors).all() else np.nan_to_num(errors),
            capsize=2,
            label=method,
        )
    ax.set_xticks(np.arange(len(tasks)))
    ax.set_xticklabels([f"{t}\n({results[t]['metric']})" for t in tasks])
    ax.set_ylabel("score")
    ax.legend(  # below the axes, clear of bars and interval whiskers
        fontsize=8, ncol=min(len(methods), 4), loc="upper center", bbox_to_anchor=(0.5, -0.2)
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
