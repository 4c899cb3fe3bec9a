"""Output folders we own: a marker of their kind, overwrite only ours, swap in atomically.

Every folder the project writes (shot store, embeddings, probe report, run, demo,
ingest source) carries ``.mediafm.json`` naming its kind. ``--overwrite`` replaces only a
folder with the right marker; anything else is refused with a few of its entries listed,
and no output may equal, sit inside or contain one of the command's inputs. A folder
replaced as a whole is built beside its target (``NAME.partial-<pid>``) and swapped in
with two renames; a crash between them leaves ``NAME.old-<pid>``, which the next run puts
back. Leftovers of dead processes are removed with a one-line message.

Remote outputs (``gs://``, ``s3://``) cannot be renamed; they are written in place and
only the store's own manifest guards them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from mediafm_jax.errors import UsageError

MARKER = ".mediafm.json"
KINDS = ("source", "store", "embeddings", "report", "run", "demo")
_LEGACY_DEMO_MARKER = ".mediafm-demo"


def is_local(path: str | os.PathLike) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def _local_path(path: str | os.PathLike) -> Path:
    text = str(path)
    return Path(text.removeprefix("file://")).absolute()


def _marked_kind(folder: Path) -> str | None:
    try:
        kind = json.loads((folder / MARKER).read_text())["kind"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return kind if isinstance(kind, str) else None


def kind_of(path: str | os.PathLike) -> str | None:
    """The kind of a folder we wrote, or None. Folders from before markers are recognised
    by their own files (a store's or embeddings' manifest, a run's checkpoints)."""
    folder = _local_path(path)
    try:
        return json.loads((folder / MARKER).read_text())["kind"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if (folder / _LEGACY_DEMO_MARKER).exists():
        return "demo"
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = None
    if isinstance(manifest, dict):
        if manifest.get("kind") == "embeddings":
            return "embeddings"
        if "modalities" in manifest and "title_ids" in manifest:
            return "store"
    if (folder / "checkpoints").is_dir() and (folder / "config.json").is_file():
        return "run"
    return None


def write_marker(folder: str | os.PathLike, kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    record = {"kind": kind, "written_by": "mediafm-jax", "created": time.time()}
    (_local_path(folder) / MARKER).write_text(json.dumps(record) + "\n")


def _entries(folder: Path, limit: int = 3) -> str:
    names = sorted(p.name for p in folder.iterdir())
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_no_overlap(output: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuses an output equal to, inside, or containing any input."""
    if not is_local(output):
        for item in inputs:
            if str(item).rstrip("/") == str(output).rstrip("/"):
                raise UsageError(f"{output}: the output is also an input")
        return
    out = _local_path(output).resolve()
    for item in inputs:
        if item is None or not is_local(item):
            continue
        path = _local_path(item).resolve()
        if out == path:
            raise UsageError(f"{output}: the output is also an input")
        if path in out.parents:
            raise UsageError(f"{output}: the output lies inside the input {item}")
        if out in path.parents:
            raise UsageError(f"{output}: the output contains the input {item}")


def check_output(
    output: str | os.PathLike,
    kind: str,
    *,
    overwrite: bool = False,
    reuse: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
) -> None:
    """Raises ``UsageError`` unless ``output`` may be written as a ``kind`` folder.

    Missing or empty: fine. Ours and of this kind: fine with ``overwrite`` (replaced) or
    ``reuse`` (added to, e.g. a run that resumes); otherwise "already exists". Anything
    else (a file, a folder of another kind or of someone else's files): refused. So is a
    path inside another output of ours (a demo folder excepted): ``--overwrite`` of that
    output would delete it.
    """
    check_no_overlap(output, inputs)
    if not is_local(output):
        return
    path = _local_path(output)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{output}: {parent} is a file, not a folder")
            break
    for parent in path.parents:  # replacing that output later would delete this one
        found = _marked_kind(parent)  # the marker only: a foreign folder may look like a run
        if found is not None and found != "demo":  # a demo folder holds its own outputs
            raise UsageError(
                f"{output}: lies inside the mediafm {found} {parent}; choose a path outside it"
            )
    if not path.exists():
        return
    if not path.is_dir():
        raise UsageError(f"{output}: is a file, not a {kind} folder; choose another path")
    if not any(path.iterdir()):
        return
    found = kind_of(path)
    if found is None:
        raise UsageError(
            f"{output}: is not empty and was not written by mediafm ({_entries(path)}); "
            "choose another path"
        )
    if found != kind:
        raise UsageError(f"{output}: holds a mediafm {found}, not a {kind}; choose another path")
    if not (overwrite or reuse):
        raise UsageError(f"{output}: already exists (pass --overwrite to replace it)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_leftovers(output: str | os.PathLike) -> None:
    """Puts back an output lost between the two renames of a swap; removes dead partials.

    Only siblings named ``NAME.partial-<pid>`` / ``NAME.old-<pid>`` whose process is gone
    and which carry our marker are touched; each action prints one line.
    """
    if not is_local(output):
        return
    path = _local_path(output)
    if not path.parent.is_dir():
        return
    leftovers = []
    for sibling in path.parent.iterdir():
        for tag in ("partial", "old"):
            prefix = f"{path.name}.{tag}-"
            if sibling.name.startswith(prefix) and sibling.name[len(prefix) :].isdigit():
                leftovers.append((tag, int(sibling.name[len(prefix) :]), sibling))
    for tag, pid, sibling in sorted(leftovers, key=lambda x: x[0]):  # 'old' before 'partial'
        if _pid_alive(pid) or kind_of(sibling) is None:
            continue
        if tag == "old" and not path.exists():
            os.rename(sibling, path)
            print(f"mediafm: restored {path} from an interrupted replacement", file=sys.stderr)
        else:
            shutil.rmtree(sibling)
            print(f"mediafm: removed {sibling} left by an interrupted run", file=sys.stderr)


@contextlib.contextmanager
def atomic_output(
    output: str | os.PathLike,
    kind: str,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
) -> Iterator[str]:
    """Yields a folder to write ``output`` into; on success it replaces ``output`` whole.

    On failure (or a kill) the previous ``output`` is intact and the partial folder is
    removed (or, after a kill, by the next run). Remote outputs are yielded as they are.
    """
    inputs = list(inputs)
    if is_local(output):
        recover_leftovers(output)
    check_output(output, kind, overwrite=overwrite, inputs=inputs)
    if not is_local(output):
        yield str(output)
        return
    path = _local_path(output)
    partial = path.parent / f"{path.name}.partial-{os.getpid()}"
    if partial.exists():  # ours: same pid, an earlier call of this process that failed
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    write_marker(partial, kind)
    try:
        yield str(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _swap(partial, path)


def _swap(partial: Path, path: Path) -> None:
    old = path.parent / f"{path.name}.old-{os.getpid()}"
    if path.exists():
        os.rename(path, old)
    os.rename(partial, path)
    if old.exists():
        shutil.rmtree(old)


def claim_folder(
    output: str | os.PathLike, kind: str, *, inputs: Iterable[str | os.PathLike] = ()
) -> Path:
    """Creates (or reuses one of ours of this kind) a folder that is written to in place,
    such as a run directory that resumes; marks it as ours."""
    check_output(output, kind, reuse=True, inputs=inputs)
    path = _local_path(output)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / MARKER).exists():
        write_marker(path, kind)
    return path


def atomic_file(path: str | os.PathLike, save) -> None:
    """Writes one file whole or not at all: ``save(temp)`` beside ``path``, then a rename;
    the temporary file is removed if ``save`` fails."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
