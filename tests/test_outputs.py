"""Output safety: overwrite only what we wrote, never an input, swap atomically, clean up.

Each case runs the real command line and hashes every file under the test folder before
and after, so "nothing else was touched" is checked, not assumed.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from faults import fault_held

from mediafm_jax import cli, outputs


def tree_digest(root: Path, skip: Path | None = None) -> dict[str, str]:
    """sha256 of every file under root (except under ``skip``)."""
    digests = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and (skip is None or skip not in path.parents):
            digests[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


@pytest.fixture()
def world(tmp_path, tiny_source, tiny_store, tiny_run):
    """Copies of a source, a store and a run, plus a folder of someone's own files."""
    shutil.copytree(tiny_source, tmp_path / "src")
    shutil.copytree(tiny_store, tmp_path / "store")
    shutil.copytree(tiny_run, tmp_path / "run")
    personal = tmp_path / "personal"
    personal.mkdir()
    (personal / "thesis.tex").write_text("years of work")
    (personal / "photos").mkdir()
    (personal / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return tmp_path


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def embed_args(world, out, *extra):
    return ["embed", "--workdir", world / "run", "--store", world / "store", "--out", out, *extra]


REFUSED = [
    # (command builder, expected message fragment)
    (lambda w: ["ingest", w / "src", w / "src", "--overwrite"], "is also an input"),
    (lambda w: ["ingest", w / "src", w / "src" / "store", "--overwrite"], "inside the input"),
    (lambda w: ["ingest", w / "src", w, "--overwrite"], "contains the input"),
    (lambda w: ["ingest", w / "src", w / "personal", "--overwrite"], "not written by mediafm"),
    (lambda w: ["ingest", w / "src", w / "run", "--overwrite"], "holds a mediafm run"),
    (lambda w: embed_args(w, w / "store", "--overwrite"), "is also an input"),
    (lambda w: embed_args(w, w / "run", "--overwrite"), "is also an input"),
    (lambda w: embed_args(w, w / "personal", "--overwrite"), "not written by mediafm"),
    (lambda w: embed_args(w, w / "personal" / "thesis.tex", "--overwrite"), "is a file"),
    (lambda w: ["synth", w / "personal", "--titles", "3"], "not written by mediafm"),
    (lambda w: ["synth", w / "src", "--titles", "3"], "already exists"),
    (lambda w: ["synth", w / "store", "--titles", "3", "--overwrite"], "holds a mediafm store"),
    (
        lambda w: [
            "train",
            "--config",
            "experiments/configs/tiny.py",
            "--store",
            w / "store",
            "--workdir",
            w / "personal",
        ],
        "not written by mediafm",
    ),
    (
        lambda w: [
            "probe",
            "--workdir",
            w / "run",
            "--store",
            w / "store",
            "--tasks",
            w / "src" / "probes.json",
            "--clips",
            w / "src" / "clips.jsonl",
            "--out",
            w / "src",
            "--overwrite",
        ],
        "contains the input",
    ),
    (lambda w: ["demo", "--out", w / "personal"], "not written by mediafm"),
    # inside another output: its --overwrite would delete the new one
    (lambda w: ["ingest", w / "src", w / "run" / "store2"], "lies inside the mediafm run"),
    (lambda w: ["synth", w / "store" / "more", "--titles", "3"], "inside the mediafm store"),
    (lambda w: embed_args(w, w / "src" / "x" / "emb"), "lies inside the mediafm source"),
]


@pytest.mark.parametrize("case", range(len(REFUSED)))
def test_refused_outputs_touch_nothing(world, capsys, case):
    build, fragment = REFUSED[case]
    before = tree_digest(world)
    code, err = run_cli(capsys, *build(world))
    assert code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1, err
    assert tree_digest(world) == before
    assert not [p for p in world.iterdir() if ".partial-" in p.name or ".old-" in p.name]
    fault_held()


def test_refusal_lists_what_is_there(world, capsys):
    code, err = run_cli(capsys, "ingest", world / "src", world / "personal", "--overwrite")
    assert code == 2 and "photos, thesis.tex" in err


def test_overwrite_replaces_only_our_own_kind(world, capsys):
    emb = world / "emb"
    assert run_cli(capsys, *embed_args(world, emb))[0] == 0
    assert outputs.kind_of(emb) == "embeddings"
    code, err = run_cli(capsys, *embed_args(world, emb))
    assert code == 2 and "already exists" in err
    first = tree_digest(emb)
    assert run_cli(capsys, *embed_args(world, emb, "--overwrite"))[0] == 0
    assert tree_digest(emb).keys() == first.keys()  # replaced whole, same layout
    store2 = world / "store2"
    assert run_cli(capsys, "ingest", world / "src", store2)[0] == 0
    assert run_cli(capsys, "ingest", world / "src", store2, "--overwrite")[0] == 0
    assert outputs.kind_of(store2) == "store"


def test_stores_written_before_markers_are_recognised(world):
    (world / "store" / outputs.MARKER).unlink(missing_ok=True)
    assert outputs.kind_of(world / "store") == "store"
    (world / "run" / outputs.MARKER).unlink(missing_ok=True)
    assert outputs.kind_of(world / "run") == "run"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_run_are_cleaned_and_a_lost_swap_is_restored(world, capsys):
    store = world / "store"
    dead = _dead_pid()
    # A kill between the two renames of a swap: the old store sits at .old-<pid>.
    old = world / f"store.old-{dead}"
    os.rename(store, old)
    partial = world / f"store.partial-{dead}"
    partial.mkdir()
    outputs.write_marker(partial, "store")
    (partial / "half.bin").write_bytes(b"0" * 100)
    # Someone else's folder with a similar name is not ours: it stays.
    foreign = world / f"store.partial-{dead + 1}"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    before = tree_digest(old)
    code, err = run_cli(capsys, "ingest", world / "src", store)
    assert code == 2 and "already exists" in err  # the restored store is there again
    assert "restored" in err and "removed" in err
    assert tree_digest(store) == before
    assert not old.exists() and not partial.exists()
    assert (foreign / "notes.txt").read_text() == "mine"


def test_overwrite_through_a_link_replaces_the_folder_it_points_to(world, capsys):
    """A store reached through a link: the swap renames the folder, never the user's link
    (it used to be renamed to .old-<pid>, then rmtree refused it: a traceback, and every
    later run tripped on the leftover)."""
    real = world / "stores" / "main"
    assert run_cli(capsys, "ingest", world / "src", real)[0] == 0
    link = world / "store_link"
    link.symlink_to(real)
    (real / "manifest.json").write_text("{}")  # so that the replacement is seen
    personal = tree_digest(world / "personal")
    code, err = run_cli(capsys, "ingest", world / "src", link, "--overwrite")
    assert code == 0, err
    assert link.is_symlink() and link.resolve() == real
    assert outputs.kind_of(real) == "store" and (real / "manifest.json").read_text() != "{}"
    leftovers = [p.name for d in (world, real.parent) for p in d.iterdir() if "-" in p.name]
    assert not [n for n in leftovers if ".old-" in n or ".partial-" in n], leftovers
    assert tree_digest(world / "personal") == personal
    # A link named like a leftover (what that bug left) is the user's: never removed.
    stray = world / f"store_link.old-{_dead_pid()}"
    stray.symlink_to(world / "store")
    store = tree_digest(world / "store")
    assert run_cli(capsys, "ingest", world / "src", link, "--overwrite")[0] == 0
    assert stray.is_symlink() and tree_digest(world / "store") == store


def test_demo_rerun_through_a_link_keeps_the_link(world):
    """demo --out LINK to an earlier demo: the folder is renewed, the link stays (rmtree on
    the link was an OSError traceback)."""
    from mediafm_jax import demo

    out = _demo_folder(world)
    link = world / "demo_link"
    link.symlink_to(out)
    demo._fresh_out(link)
    assert link.is_symlink() and link.resolve() == out
    assert outputs.kind_of(out) == "demo" and sorted(p.name for p in out.iterdir()) == [
        outputs.MARKER
    ]


def test_failed_write_keeps_the_previous_output(world, monkeypatch):
    target = world / "out"
    target.mkdir()
    outputs.write_marker(target, "report", owns=["report.json"])
    (target / "report.json").write_text("{}")
    before = tree_digest(target)
    with (
        pytest.raises(RuntimeError),
        outputs.atomic_output(target, "report", overwrite=True) as tmp,
    ):
        Path(tmp, "report.json").write_text("half")
        raise RuntimeError("killed")
    assert tree_digest(target) == before
    assert [p.name for p in world.iterdir() if p.name.startswith("out")] == ["out"]


def _user_file_in(world, capsys, name: str):
    """Builds each whole-folder output of ours with a user's file saved inside it."""
    emb = world / "emb"
    assert run_cli(capsys, *embed_args(world, emb))[0] == 0
    synth = world / "synth"
    assert run_cli(capsys, "synth", synth, "--titles", "3", "--dims", "4,4,4,4")[0] == 0
    store2 = world / "store2"
    assert run_cli(capsys, "ingest", world / "src", store2)[0] == 0
    chunk_dir = next(p for p in store2.rglob("*") if p.is_dir())
    places = {
        "embed": (emb / "analysis.txt", embed_args(world, emb, "--overwrite")),
        "synth": (
            synth / "notes.txt",
            ["synth", synth, "--titles", "3", "--dims", "4,4,4,4", "--overwrite"],
        ),
        "ingest": (chunk_dir / "mine.txt", ["ingest", world / "src", store2, "--overwrite"]),
    }
    path, argv = places[name]
    path.write_text("the user's own work")
    return path, argv


@pytest.mark.parametrize("command", ["embed", "synth", "ingest"])
def test_overwrite_refuses_a_folder_holding_a_users_file(world, capsys, command):
    """--overwrite of our output holding a file the user saved there: refused, naming it"""
    path, argv = _user_file_in(world, capsys, command)
    before = tree_digest(world)
    code, err = run_cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "did not write" in err and path.name in err, err
    assert tree_digest(world) == before
    fault_held()
    path.unlink()  # moved out: the same command replaces the folder
    assert run_cli(capsys, *argv)[0] == 0


def _demo_folder(world) -> Path:
    """A demo folder as a finished demo leaves it: nested outputs with their own markers."""
    from mediafm_jax import demo

    out = world / "demo"
    outputs.claim_folder(out, "demo", owns=demo.DEMO_LAYOUT)
    shutil.copytree(world / "store", out / "store")
    shutil.copytree(world / "run", out / "run")
    (out / "contact_sheet.png").write_bytes(b"png")
    return out


@pytest.mark.parametrize("where", ["notes.txt", "run/notes.txt", "store/notes.txt"])
def test_demo_rerun_refuses_a_users_file(world, capsys, where):
    """demo --out of an earlier demo holding a user's file (top level or in a nested output)"""
    out = _demo_folder(world)
    (out / where).write_text("mine")
    before = tree_digest(world)
    code, err = run_cli(capsys, "demo", "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and where in err, err
    assert tree_digest(world) == before
    fault_held()


def test_only_what_we_wrote_counts_as_ours(world):
    """A demo with a killed ingest's partial, a run's temp files and readout: all ours;
    a marker without a file list (an earlier mediafm) cannot be judged."""
    out = _demo_folder(world)
    partial = out / f"embeddings.partial-{_dead_pid()}"
    partial.mkdir()
    outputs.write_marker(partial, "embeddings", owns=["*"])
    (partial / "half.bin").write_bytes(b"0")
    (out / "run" / ".readout.json.tmp-123").write_text("{")
    (out / "run" / "metrics.jsonl.tmp").write_text("")
    assert outputs.foreign_files(out) == []
    (out / "run" / "checkpoints-old").mkdir()
    (out / "run" / "checkpoints-old" / "x").write_text("")
    (out / "store" / "chunks.bak").write_text("")
    assert outputs.foreign_files(out) == ["run/checkpoints-old/x", "store/chunks.bak"]
    (out / outputs.MARKER).write_text('{"kind": "demo"}')
    assert outputs.foreign_files(out) is None


def test_overwrite_of_an_output_from_before_file_lists(world, capsys):
    """--overwrite of a store from before markers listed files: judged by its manifest's
    file table; without one (store format 1) it is refused"""
    store, manifest_path = world / "store", world / "store" / "manifest.json"
    (store / outputs.MARKER).write_text('{"kind": "store"}')
    (store / "notes.txt").write_text("mine")
    argv = ["ingest", world / "src", store, "--overwrite"]
    before = tree_digest(world)
    code, err = run_cli(capsys, *argv)
    assert code == 2 and "did not write (notes.txt)" in err, err
    manifest = json.loads(manifest_path.read_text())
    del manifest["files"]
    manifest_path.write_text(json.dumps(manifest))
    (store / "notes.txt").unlink()
    before = tree_digest(world)
    code, err = run_cli(capsys, *argv)
    assert code == 2 and "did not record its files" in err, err
    assert tree_digest(world) == before
    fault_held()


def _can_write(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


@pytest.fixture()
def read_only():
    """Makes folders read-only for this process: mode 555, or for root (which ignores
    modes) the immutable attribute; undone after the test."""
    locked: list[Path] = []

    def lock(folder: Path) -> Path:
        folder.mkdir(exist_ok=True)
        locked.append(folder)
        folder.chmod(0o555)
        if _can_write(folder) and shutil.which("chattr"):
            subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
        if _can_write(folder):
            pytest.skip("root without chattr +i here: no way to make a folder read-only")
        return folder

    yield lock
    for folder in locked:
        if shutil.which("chattr"):
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)
        folder.chmod(0o755)


def _probe_args(w, out):
    return ["probe", "--workdir", w / "run", "--store", w / "store", "--out", out] + [
        "--tasks",
        w / "src" / "probes.json",
        "--clips",
        w / "src" / "clips.jsonl",
    ]


UNWRITABLE = {
    "train": lambda w, ro: [
        "train",
        "--config",
        "experiments/configs/tiny.py",
        "--store",
        w / "store",
        "--workdir",
        ro / "run",
    ],
    "embed": lambda w, ro: embed_args(w, ro / "emb"),
    "ingest": lambda w, ro: ["ingest", w / "src", ro / "store"],
    "synth": lambda w, ro: ["synth", ro / "deep" / "synth", "--titles", "3"],
    "probe": lambda w, ro: _probe_args(w, ro / "report"),
    "search --sheet": lambda w, ro: [
        "search",
        "--emb",
        w / "emb",
        "--store",
        w / "store",
        "--title",
        "title_00000",
        "--shot",
        "1",
        "--sheet",
        ro / "sheet.png",
    ],
    "demo": lambda w, ro: ["demo", "--out", ro / "demo"],
    "extract": lambda w, ro: ["extract", w / "videos", ro / "src"],
}


@pytest.mark.parametrize("command", list(UNWRITABLE))
def test_an_unwritable_output_is_one_line_before_any_work(world, capsys, read_only, command):
    """Output in a folder we may not write in: one line naming it, before any work"""
    if command == "search --sheet":
        assert run_cli(capsys, *embed_args(world, world / "emb"))[0] == 0
    if command == "extract":
        from mediafm_jax.extract import media

        (world / "videos").mkdir()
        shutil.copy(media.bikes(), world / "videos" / "bikes.mp4")
    locked = read_only(world / "locked")
    argv = UNWRITABLE[command](world, locked)
    before = tree_digest(world)
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    printed = capsys.readouterr()
    assert code == 2 and len(printed.err.strip().splitlines()) == 1, printed.err
    assert f"cannot write in {locked}" in printed.err, printed.err
    assert printed.out == ""  # no results, no progress: nothing ran
    assert tree_digest(world) == before
    fault_held()


def test_a_read_only_run_is_refused_before_resuming(world, capsys, read_only):
    """train on an earlier run that became read-only: one line, the run untouched"""
    argv = ["train", "--config", "experiments/configs/tiny.py", "--store", world / "store"]
    read_only(world / "run")
    before = tree_digest(world)
    code, err = run_cli(capsys, *argv, "--workdir", world / "run")
    assert code == 2 and f"cannot write in {world / 'run'}" in err, err
    assert tree_digest(world) == before
    fault_held()
