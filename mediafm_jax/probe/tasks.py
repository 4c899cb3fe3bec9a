"""Probe tasks and clips (docs/DESIGN.md §3.1), validated, with train/val/test splits by title."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from mediafm_jax.data.store import SPLITS, ShotStore
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


def _is_int(value: object) -> bool:
    """An int that is not a bool (JSON ``true`` would pass ``isinstance(x, int)``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ProbeInputError(f"{path}: cannot read {what} ({err})") from None


def load_tasks(path: str | Path) -> list[Task]:
    path = Path(path)
    try:
        spec = json.loads(_read_text(path, "probe tasks"))
    except json.JSONDecodeError as err:
        raise ProbeInputError(f"{path}: invalid JSON ({err})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("tasks"), list):
        raise ProbeInputError(f'{path}: expected an object {{"tasks": [...]}}')
    tasks: list[Task] = []
    for i, item in enumerate(spec["tasks"]):
        where = f"{path} task {i}"
        if not isinstance(item, dict):
            raise ProbeInputError(f"{where}: expected an object, got {item!r}")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ProbeInputError(f"{where}: needs a non-empty string 'name'")
        where = f"{path} task {i} ({name!r})"
        if any(t.name == name for t in tasks):
            raise ProbeInputError(f"{where}: a second task with this name")
        kind, metric = item.get("kind"), item.get("metric")
        if kind not in KINDS:
            raise ProbeInputError(f"{where}: kind {kind!r}, expected one of {KINDS}")
        if metric not in METRICS:
            raise ProbeInputError(f"{where}: metric {metric!r}, expected one of {METRICS}")
        if (kind == "ranking") != (metric == "kendall_tau"):
            raise ProbeInputError(
                f"{where}: metric {metric!r} does not fit kind {kind!r} "
                "(ranking tasks use kendall_tau; the others an AP metric)"
            )
        num_classes = item.get("num_classes")
        if kind == "multilabel" and not (_is_int(num_classes) and num_classes >= 1):
            raise ProbeInputError(
                f"{where}: a multilabel task needs an integer num_classes >= 1, got {num_classes!r}"
            )
        folds = item.get("folds", 10)
        if not (_is_int(folds) and folds >= 2):
            raise ProbeInputError(f"{where}: folds {folds!r}, expected an integer >= 2")
        tasks.append(Task(name, kind, metric, num_classes, folds))
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
    for line_no, line in enumerate(_read_text(path, "clips").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {line_no}"
        try:
            clip = json.loads(line)
        except json.JSONDecodeError as err:
            raise ProbeInputError(f"{where}: invalid JSON ({err.msg})") from None
        if not isinstance(clip, dict):
            raise ProbeInputError(f"{where}: expected a JSON object, got {type(clip).__name__}")
        if not isinstance(clip.get("task"), str):
            raise ProbeInputError(f"{where}: needs a string 'task'")
        task = by_name.get(clip["task"])
        if task is None:
            continue  # clips of tasks not asked for are skipped
        title_id = clip.get("title_id")
        try:
            title = store.title_index(title_id if isinstance(title_id, str) else "")
        except ValueError:
            raise ProbeInputError(f"{where}: title_id {title_id!r} is not in the store") from None
        start, end = clip.get("shot_start"), clip.get("shot_end")
        length = store.title_length(title)
        if not (_is_int(start) and _is_int(end) and 0 <= start < end <= length):
            raise ProbeInputError(
                f"{where}: shots [{start!r}, {end!r}) are not a non-empty range of "
                f"title {title_id!r} ({length} shots)"
            )
        split = clip.get("split")
        if split is not None and split not in SPLITS:
            raise ProbeInputError(f"{where}: split {split!r}, expected one of {SPLITS} or none")
        split = split or store.splits[title] or _default_split(title_id)
        if task.kind == "multilabel":
            labels = clip.get("labels")
            if not isinstance(labels, list) or any(
                not _is_int(x) or not 0 <= x < task.num_classes for x in labels
            ):
                raise ProbeInputError(
                    f"{where}: 'labels' must be a list of ints in [0, {task.num_classes}), "
                    f"got {labels!r}"
                )
            target = np.zeros(task.num_classes, np.int8)
            target[labels] = 1
        elif task.kind == "binary":
            label = clip.get("label")
            if not (_is_int(label) and label in (0, 1)):
                raise ProbeInputError(f"{where}: 'label' must be the integer 0 or 1, got {label!r}")
            target = label
        else:
            value = clip.get("target")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ProbeInputError(f"{where}: 'target' must be a number, got {value!r}")
            try:
                target = float(value)
            except OverflowError:
                target = float("inf")
            if not np.isfinite(target):
                raise ProbeInputError(f"{where}: 'target' is {value!r}, expected a finite number")
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
