"""Careless ingest and probe inputs: one line naming the file (and title or line), exit 2,
no store or report left behind, nothing else touched."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from faults import assert_one_line_error, fault_held, run_cli, tree_hashes

from mediafm_jax.data.store import ShotStore
from mediafm_jax.probe import ProbeInputError, run_probes


# -- ingest --------------------------------------------------------------------------------
def _source(tmp_path: Path, title_ids=("t0", "t1")) -> Path:
    src = tmp_path / "src"
    (src / "shots").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for title_id in title_ids:
        np.savez(
            src / "shots" / f"{title_id}.npz",
            video=rng.normal(size=(5, 4)).astype(np.float32),
            text=rng.normal(size=(5, 3)).astype(np.float32),
            start_s=np.arange(5.0),
            end_s=np.arange(5.0) + 1,
            title_embedding=rng.normal(size=6).astype(np.float32),
        )
    (src / "titles.jsonl").write_text(
        "".join(json.dumps({"title_id": t}) + "\n" for t in title_ids)
    )
    return src


def _rewrite_title(src: Path, title_id: str, **changes) -> None:
    path = src / "shots" / f"{title_id}.npz"
    with np.load(path, allow_pickle=True) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


def _truncate_member(src: Path) -> None:
    """``video.npy`` keeps its header but loses its last 40 bytes of data."""
    path = src / "shots" / "t1.npz"
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["video.npy"] = members["video.npy"][:-40]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _bad_crc(src: Path) -> None:
    """A flipped byte in a stored member's data: the zip CRC no longer matches."""
    path = src / "shots" / "t1.npz"
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("video.npy")
    # past the local file header (30 bytes + name + extra) and the 128-byte npy header
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 150
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def _bad_crc_late(src: Path) -> None:
    """The same in a member large enough that the header pass does not reach the damage."""
    rng = np.random.default_rng(1)
    for title_id in ("t0", "t1"):
        _rewrite_title(src, title_id, video=rng.normal(size=(5, 2000)).astype(np.float32))
    path = src / "shots" / "t1.npz"
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("video.npy")
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 30_000
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def _titles(src: Path, *records) -> None:
    (src / "titles.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


LONG_ID = "x" * 300
INGEST_CASES = {
    "npy member shorter than its header": (_truncate_member, "t1.npz: 'video' is truncated"),
    "member with a bad CRC": (_bad_crc, "t1.npz: not a readable .npz file (Bad CRC-32"),
    "member with a bad CRC past the header": (_bad_crc_late, "t1.npz: cannot read 'video'"),
    "object start_s": (
        lambda s: _rewrite_title(s, "t0", start_s=np.array([0.0, 1, 2, 3, "4"], dtype=object)),
        "t0.npz: 'start_s' holds Python objects",
    ),
    "string start_s": (
        lambda s: _rewrite_title(s, "t0", start_s=np.array(["0", "1", "2", "3", "4"])),
        "t0.npz: 'start_s' has dtype <U1, expected numbers of seconds",
    ),
    "numeric-string end_s": (
        lambda s: _rewrite_title(s, "t1", end_s=np.array(["1.5", "2", "3", "4", "5"])),
        "t1.npz: 'end_s' has dtype <U3",
    ),
    "bool times": (
        lambda s: _rewrite_title(s, "t0", end_s=np.ones(5, bool)),
        "'end_s' has dtype bool",
    ),
    "times beyond float32": (
        lambda s: _rewrite_title(
            s, "t0", start_s=np.array([0, 1, 2, 3, 1e39]), end_s=np.array([1, 2, 3, 4, 2e39])
        ),
        "t0.npz: 'start_s' is negative, not finite or too large at shot 4",
    ),
    "title id too long": (
        lambda s: _titles(s, {"title_id": "t0"}, {"title_id": LONG_ID}),
        "line 2: title_id 'xxx",
    ),
    "title id with a NUL": (
        lambda s: _titles(s, {"title_id": "t\u00000"}),
        "contains a path separator, NUL or control character",
    ),
    "title id with a backslash": (
        lambda s: _titles(s, {"title_id": "a\\b"}),
        "contains a path separator",
    ),
    "title id not valid unicode": (
        lambda s: (s / "titles.jsonl").write_text('{"title_id": "\\ud800"}\n'),
        "line 1: title_id '\\ud800' is not valid Unicode",
    ),
    "titles.jsonl not utf-8": (
        lambda s: (s / "titles.jsonl").write_bytes(b'{"title_id": "t\xff"}\n'),
        "titles.jsonl: cannot be read as UTF-8 text",
    ),
    "title embedding overflows fp16": (
        lambda s: _rewrite_title(s, "t1", title_embedding=np.array([0, 0, 1e6, 0, 0, 0])),
        "title 't1' 'title_embedding'[2] = 1e+06 overflows float16",
    ),
    "empty title embedding": (
        lambda s: _rewrite_title(s, "t1", title_embedding=np.zeros(0)),
        "'title_embedding' must be a non-empty float vector",
    ),
    "zero-width modality": (
        lambda s: [_rewrite_title(s, t, text=np.zeros((5, 0), np.float32)) for t in ("t0", "t1")],
        "t0.npz: 'text' has width 0",
    ),
}


@pytest.mark.parametrize("case", sorted(INGEST_CASES))
def test_bad_ingest_input(tmp_path, capsys, case):
    damage, needle = INGEST_CASES[case]
    src = _source(tmp_path)
    damage(src)
    store = tmp_path / "store"
    assert_one_line_error(["ingest", str(src), str(store)], capsys, tmp_path, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no store, no partial


def test_a_title_absent_in_every_modality_is_named(tmp_path, capsys):
    """A title whose every shot is zero in every modality: ingested with a warning naming it"""
    src = _source(tmp_path, ("t0", "t1", "t2"))
    zeros = {"video": np.zeros((5, 4), np.float32), "text": np.zeros((5, 3), np.float32)}
    _rewrite_title(src, "t1", **zeros)
    code, err = run_cli(["ingest", str(src), str(tmp_path / "store")], capsys)
    assert code == 0 and len(err) == 1, err
    assert "t1: absent in every modality in every shot" in err[0] and "t0" not in err[0], err
    store = ShotStore(str(tmp_path / "store"))
    assert store.present[store.offsets[1] : store.offsets[2]].sum() == 0
    assert store.present[: store.offsets[1]].all()
    fault_held()  # the documented outcome: kept, and named in one line


def test_title_id_at_the_length_limit_is_accepted(tmp_path, capsys):
    long_id = "y" * 251  # 251 + len(".npz") = 255 bytes, the usual file-name limit
    src = _source(tmp_path, title_ids=("t0", long_id))
    code, err = run_cli(["ingest", str(src), str(tmp_path / "store")], capsys)
    assert code == 0, err
    assert ShotStore(str(tmp_path / "store")).title_ids == ["t0", long_id]


# -- probe tasks and clips -----------------------------------------------------------------
def _tasks(tmp_path: Path, tiny_source: Path, edit) -> Path:
    spec = json.loads((tiny_source / "probes.json").read_text())
    spec = edit(spec) or spec
    path = tmp_path / "probes.json"
    path.write_text(json.dumps(spec))
    return path


def _task(spec: dict, name: str) -> dict:
    return next(t for t in spec["tasks"] if t["name"] == name)


def _clip_line(tiny_source: Path, task: str, edit) -> tuple[list[str], int]:
    """The clips with the first clip of ``task`` replaced by ``edit(clip)``."""
    lines = (tiny_source / "clips.jsonl").read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if json.loads(line)["task"] == task)
    clip = json.loads(lines[index])
    new = edit(clip)
    lines[index] = new if isinstance(new, str) else json.dumps(clip)
    return lines, index + 1


TASK_CASES = {
    "probes.json is a list": (lambda s: s["tasks"], 'expected an object {"tasks": [...]}'),
    "task without name": (lambda s: _task(s, "tone").pop("name") and None, "task 2: needs"),
    "folds as a word": (
        lambda s: _task(s, "popularity").update(folds="ten"),
        "task 1 ('popularity'): folds 'ten', expected an integer >= 2",
    ),
    "zero folds": (lambda s: _task(s, "popularity").update(folds=0), "folds 0, expected"),
    "two tasks with one name": (
        lambda s: _task(s, "genre").update(name="tone"),
        "task 3 ('tone'): a second task with this name",
    ),
    "ranking scored by ap": (
        lambda s: _task(s, "popularity").update(metric="ap"),
        "metric 'ap' does not fit kind 'ranking'",
    ),
    "boolean num_classes": (
        lambda s: _task(s, "tone").update(num_classes=True),
        "needs an integer num_classes >= 1, got True",
    ),
}

CLIP_CASES = {
    "a JSON array": ("tone", lambda c: json.dumps([c]), "expected a JSON object, got list"),
    "labels [true]": ("tone", lambda c: c.update(labels=[True]), "got [True]"),
    "NaN ranking target": (
        "popularity",
        lambda c: c.update(target=float("nan")),
        "'target' is nan, expected a finite number",
    ),
    "shot_start false": (
        "tone",
        lambda c: c.update(shot_start=False),
        "shots [False, ",
    ),
    "boolean binary label": ("retrieval", lambda c: c.update(label=True), "got True"),
    "float binary label": ("retrieval", lambda c: c.update(label=1.0), "got 1.0"),
    "split bogus": ("tone", lambda c: c.update(split="bogus"), "split 'bogus', expected one of"),
    "title id a list": ("tone", lambda c: c.update(title_id=["x"]), "title_id ['x'] is not in"),
    "task a list": ("tone", lambda c: c.update(task=["tone"]), "needs a string 'task'"),
}


def _assert_probe_error(store, tasks, clips, out: Path, needle: str, root: Path) -> None:
    before = tree_hashes(root)
    with pytest.raises(ProbeInputError) as info:
        run_probes(None, store, tasks, clips, out, bootstrap=0)
    message = str(info.value)
    assert "\n" not in message and needle in message, message
    assert tree_hashes(root) == before and not out.exists()
    fault_held()  # the library call: a ProbeInputError is what the CLI exits 2 with


@pytest.mark.parametrize("case", sorted(TASK_CASES))
def test_bad_probe_tasks(tiny_store, tiny_source, tmp_path, case):
    edit, needle = TASK_CASES[case]
    tasks = _tasks(tmp_path, tiny_source, edit)
    store = ShotStore(tiny_store)
    out = tmp_path / "report"
    _assert_probe_error(store, tasks, tiny_source / "clips.jsonl", out, f"{tasks}", tmp_path)
    _assert_probe_error(store, tasks, tiny_source / "clips.jsonl", out, needle, tmp_path)


@pytest.mark.parametrize("case", sorted(CLIP_CASES))
def test_bad_probe_clips(tiny_store, tiny_source, tmp_path, case):
    task, edit, needle = CLIP_CASES[case]
    lines, line_no = _clip_line(tiny_source, task, edit)
    clips = tmp_path / "clips.jsonl"
    clips.write_text("\n".join(lines) + "\n")
    _assert_probe_error(
        ShotStore(tiny_store),
        tiny_source / "probes.json",
        clips,
        tmp_path / "report",
        f"{clips} line {line_no}: ",
        tmp_path,
    )
    _assert_probe_error(
        ShotStore(tiny_store),
        tiny_source / "probes.json",
        clips,
        tmp_path / "report",
        needle,
        tmp_path,
    )


def test_clips_not_utf8(tiny_store, tiny_source, tmp_path):
    clips = tmp_path / "clips.jsonl"
    clips.write_bytes(b'{"task": "t\xff"}\n')
    _assert_probe_error(
        ShotStore(tiny_store),
        tiny_source / "probes.json",
        clips,
        tmp_path / "report",
        "cannot read clips",
        tmp_path,
    )


def test_a_negative_bootstrap_is_one_line_before_any_work(
    tiny_store, tiny_source, tmp_path, capsys
):
    """probe --bootstrap -3 (was a ValueError from zip() after every probe had run); said
    before the run is read (its workdir need not exist)"""
    argv = ["probe", "--workdir", str(tmp_path / "no run"), "--store", str(tiny_store)]
    argv += ["--tasks", str(tiny_source / "probes.json")]
    argv += ["--clips", str(tiny_source / "clips.jsonl")]
    argv += ["--out", str(tmp_path / "report"), "--bootstrap", "-3"]
    assert_one_line_error(argv, capsys, tmp_path, "--bootstrap -3: expected a count >= 0")
    assert not (tmp_path / "report").exists()
