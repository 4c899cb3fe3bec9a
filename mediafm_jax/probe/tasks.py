"""Probe tasks and clips (DESIGN.md §3.1), validated, with train/val/test splits by title."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from mediafm_jax.data.store import ShotStore
from mediafm_jax.errors import ProbeInputError

KINDS = ("multilabel", "binary", "ranking")
METRICS = ("micro_ap", "macro_ap", "ap", "kendall_tau")


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    kind: str
    metric: str
    num_classes: int | None = None
    folds: int = 10


@dataclasses.dataclass
class Clips:
    """The clips of one task, as arrays."""

    task: Task
    title: np.ndarray  # int [N] store title index
    start: np.ndarray  # int [N]
    end: np.ndarray  # int [N], exclusive
    split: np.ndarray  # str [N]
    target: np.ndarray  # [N, C] 0/1 for multilabel, [N] 0/1 for binary, [N] float for ranking

    def __len__(self) -> int:
        return len(self.title)


def load_tasks(path: str | Path) -> list[Task]:
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ProbeInputError(f"{path}: cannot read probe tasks ({err})") from None
    tasks = []
    for i, item in enumerate(spec.get("tasks", [])):
        where = f"{path} task {i}"
        if item.get("kind") not in KINDS:
            raise ProbeInputError(f"{where}: kind {item.get('kind')!r}, expected one of {KINDS}")
        if item.get("metric") not in METRICS:
            raise ProbeInputError(
                f"{where}: metric {item.get('metric')!r}, expected one of {METRICS}"
            )
        if item["kind"] == "multilabel" and not isinstance(item.get("num_classes"), int):
            raise ProbeInputError(f"{where}: a multilabel task needs an integer num_classes")
        tasks.append(
            Task(
                item["name"],
                item["kind"],
                item["metric"],
                item.get("num_classes"),
                item.get("folds", 10),
            )
        )
    if not tasks:
        raise ProbeInputError(f"{path}: lists no tasks")
    return tasks


def _default_split(title_id: str, seed: int = 0) -> str:
    """A seeded 70/15/15 split by title id, for catalogs that give none."""
    u = int(hashlib.sha256(f"{seed}:{title_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if u < 0.7 else ("val" if u < 0.85 else "test")


def load_clips(path: str | Path, tasks: list[Task], store: ShotStore) -> dict[str, Clips]:
    """Reads clips.jsonl; every clip is checked against its task and the store."""
    path = Path(path)
    by_name = {t.name: t for t in tasks}
    rows: dict[str, list[tuple]] = {t.name: [] for t in tasks}
    if not path.is_file():
        raise ProbeInputError(f"{path}: missing")
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {line_no}"
        try:
            clip = json.loads(line)
        except json.JSONDecodeError as err:
            raise ProbeInputError(f"{where}: invalid JSON ({err.msg})") from None
        task = by_name.get(clip.get("task"))
        if task is None:
            continue  # clips of tasks not asked for are skipped
        title_id = clip.get("title_id")
        try:
            title = store.title_index(title_id)
        except ValueError:
            raise ProbeInputError(f"{where}: title_id {title_id!r} is not in the store") from None
        start, end = clip.get("shot_start"), clip.get("shot_end")
        length = store.title_length(title)
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= length):
            raise ProbeInputError(
                f"{where}: shots [{start}, {end}) are not a non-empty range of title "
                f"{title_id!r} ({length} shots)"
            )
        split = clip.get("split") or store.splits[title] or _default_split(title_id)
        if task.kind == "multilabel":
            labels = clip.get("labels")
            if not isinstance(labels, list) or any(
                not isinstance(x, int) or not 0 <= x < task.num_classes for x in labels
            ):
                raise ProbeInputError(f"{where}: 'labels' must be ints in [0, {task.num_classes})")
            target = np.zeros(task.num_classes, np.int8)
            target[labels] = 1
        elif task.kind == "binary":
            if clip.get("label") not in (0, 1):
                raise ProbeInputError(f"{where}: 'label' must be 0 or 1")
            target = clip["label"]
        else:
            if not isinstance(clip.get("target"), int | float):
                raise ProbeInputError(f"{where}: 'target' must be a number")
            target = float(clip["target"])
        rows[task.name].append((title, start, end, split, target))
    out = {}
    for name, items in rows.items():
        if not items:
            raise ProbeInputError(f"{path}: no clips for task {name!r}")
        title, start, end, split, target = zip(*items, strict=True)
        out[name] = Clips(
            by_name[name],
            np.array(title),
            np.array(start),
            np.array(end),
            np.array(split),
            np.array(target),
        )
    return out
