"""Output folders we own: a marker of their kind, overwrite only ours, swap in atomically.

Every folder the project writes (shot store, embeddings, probe report, run, demo,
ingest source) carries ``.mediafm.json`` naming its kind and listing what we wrote
(``owns``: the files of a folder built whole; the layout, e.g. ``checkpoints/``, of a
folder written in place). ``--overwrite`` replaces only a folder with the right marker
that holds nothing else: a file the user saved inside (notes, an analysis) stops the
command with one line naming it, before any work. We refuse rather than carry it over: a
note about the old output would sit silently beside a new one it no longer describes,
and moving user files across a swap would put them at risk of a kill. Anything else is
refused with a few of its entries listed, and no output may equal, sit inside or contain
one of the command's inputs. A folder
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
import tempfile
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


def write_marker(folder: str | os.PathLike, kind: str, owns: Iterable[str] = ()) -> None:
    """Marks ``folder`` as a ``kind`` of ours that owns ``owns``: relative file paths, a
    ``dir/`` owning its whole subtree, or ``*`` (a folder we created empty, being built)."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    record = {
        "kind": kind,
        "written_by": "mediafm-jax",
        "created": time.time(),
        "owns": sorted(set(owns)),
    }
    (_local_path(folder) / MARKER).write_text(json.dumps(record) + "\n")


def _owns(folder: Path) -> list[str] | None:
    """The marker's list of what we wrote. A folder from before the list is judged by the
    file table of its manifest (stores have one); None when neither exists (we cannot tell)."""
    try:
        owns = json.loads((folder / MARKER).read_text())["owns"]
    except (OSError, ValueError, KeyError, TypeError):
        owns = None
    if isinstance(owns, list):
        return [str(e) for e in owns]
    try:
        table = json.loads((folder / "manifest.json").read_text())["files"]
        return ["manifest.json"] + [str(entry["path"]) for entry in table]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _temp_of(name: str) -> str:
    """``.X.tmp-<pid>`` (``atomic_file``) and ``X.tmp`` are ours when ``X`` is."""
    if name.startswith(".") and ".tmp-" in name:
        return name[1:].rsplit(".tmp-", 1)[0]
    return name.removesuffix(".tmp")


def _is_owned(rel: str, owns: list[str]) -> bool:
    head, _, name = rel.rpartition("/")
    candidates = {rel, f"{head}/{_temp_of(name)}" if head else _temp_of(name)}
    for entry in owns:
        if entry == "*" or entry in candidates:
            return True
        if entry.endswith("/") and rel.startswith(entry):
            return True
    return False


def foreign_files(folder: str | os.PathLike) -> list[str] | None:
    """Files under one of our folders that we did not write (paths relative to it), or
    None when its marker lists nothing (we cannot tell). A folder inside that carries its
    own marker (a demo's store, run, ...) is judged by that marker."""
    root = _local_path(folder)
    owns = _owns(root)
    if owns is None:
        return None
    found: list[str] = []
    # (folder, its path from root, its path from the output that owns it, that output's list)
    stack = [(root, "", "", owns)]
    while stack:
        here, shown, rel_here, owned = stack.pop()
        for entry in os.scandir(here):
            path, name = Path(entry.path), entry.name
            rel = rel_here + name
            if entry.is_dir(follow_symlinks=False):
                if _is_owned(rel + "/", owned):
                    continue
                if (path / MARKER).is_file():  # an output of ours inside this one
                    nested = _owns(path)
                    if nested is None:
                        found.append(shown + name + "/")
                    else:
                        stack.append((path, shown + name + "/", "", nested))
                    continue
                stack.append((path, shown + name + "/", rel + "/", owned))
            elif not (rel == MARKER or _is_owned(rel, owned)):
                found.append(shown + name)
    return sorted(found)


def _owned_files(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative paths), for the marker of a folder built whole."""
    return sorted(
        str(Path(dirpath, name).relative_to(folder).as_posix())
        for dirpath, _, names in os.walk(folder)
        for name in names
        if not (name == MARKER and Path(dirpath) == folder)
    )


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


def check_writable(output: str | os.PathLike, *, in_place: bool = False) -> None:
    """Raises ``UsageError`` unless we can create files where ``output`` goes: in the
    nearest folder that exists above it (a new output, or the partial built beside an
    output replaced whole) and, for one written ``in_place``, in the folder itself.

    A probe file, created and removed at once, is the one test that holds for root,
    read-only mounts and ACLs alike (``os.access`` is wrong for all three)."""
    if not is_local(output):
        return
    path = _local_path(output)
    above = path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    for folder in ([path] if in_place and path.is_dir() else []) + [above]:
        try:
            handle, probe = tempfile.mkstemp(prefix=".mediafm-probe-", dir=folder)
        except OSError as err:
            why = err.strerror or type(err).__name__
            raise UsageError(f"{output}: cannot write in {folder} ({why})") from None
        os.close(handle)
        os.unlink(probe)


def check_output(
    output: str | os.PathLike,
    kind: str,
    *,
    overwrite: bool = False,
    reuse: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
) -> None:
    """Raises ``UsageError`` unless ``output`` may be written as a ``kind`` folder, and
    can be: a folder we may not write in is refused here, before any work.

    Missing or empty: fine. Ours and of this kind: fine with ``overwrite`` (replaced) or
    ``reuse`` (added to, e.g. a run that resumes); otherwise "already exists". Anything
    else (a file, a folder of another kind or of someone else's files): refused. So is a
    path inside another output of ours (a demo folder excepted): ``--overwrite`` of that
    output would delete it.
    """
    _check_kind(output, kind, overwrite=overwrite, reuse=reuse, inputs=inputs)
    check_writable(output, in_place=reuse)


def _check_kind(
    output: str | os.PathLike,
    kind: str,
    *,
    overwrite: bool,
    reuse: bool,
    inputs: Iterable[str | os.PathLike],
) -> None:
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
    if overwrite:
        _check_only_ours(output, path)


def _check_only_ours(output: str | os.PathLike, path: Path) -> None:
    """``--overwrite`` deletes the whole folder: refuse while it holds a file we did not
    write (the user moves it out; see the module docstring for why not carry it over)."""
    foreign = foreign_files(path)
    if foreign is None:
        raise UsageError(
            f"{output}: was written by an earlier mediafm that did not record its files, so "
            "--overwrite cannot tell them from yours; delete it yourself or choose another path"
        )
    if foreign:
        more = f", ... ({len(foreign)} files)" if len(foreign) > 3 else ""
        raise UsageError(
            f"{output}: holds files mediafm did not write ({', '.join(foreign[:3])}{more}); "
            "--overwrite would delete them: move them out or choose another path"
        )


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
        if sibling.is_symlink() or _pid_alive(pid) or kind_of(sibling) is None:
            continue  # we never leave a link behind: it is the user's
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
        output = _link_target(output)
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
    write_marker(partial, kind, owns=["*"])  # all ours while it is being built
    try:
        yield str(partial)
        write_marker(partial, kind, owns=_owned_files(partial))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _swap(partial, path)


def _link_target(output: str | os.PathLike) -> str | os.PathLike:
    """The folder a link at ``output`` points to (followed to the end), else ``output``.
    A swap renames names: done on the link it would replace the user's link with a folder
    and leave the old output behind under ``NAME.old-<pid>``; done on the target the link
    keeps pointing at the new output."""
    path = _local_path(output)
    return os.path.realpath(path) if path.is_symlink() else output


def _swap(partial: Path, path: Path) -> None:
    old = path.parent / f"{path.name}.old-{os.getpid()}"
    if path.exists():
        os.rename(path, old)
    os.rename(partial, path)
    if old.exists():
        shutil.rmtree(old)


def claim_folder(
    output: str | os.PathLike,
    kind: str,
    *,
    owns: Iterable[str],
    inputs: Iterable[str | os.PathLike] = (),
) -> Path:
    """Creates (or reuses one of ours of this kind) a folder that is written to in place,
    such as a run directory that resumes; marks it as ours, owning the layout ``owns``
    (what the command writes there, e.g. ``checkpoints/``, ``config.json``)."""
    check_output(output, kind, reuse=True, inputs=inputs)
    path = _local_path(output)
    path.mkdir(parents=True, exist_ok=True)
    existing = _owns(path)
    if existing is None or not set(owns) <= set(existing):
        write_marker(path, kind, owns=set(owns) | set(existing or ()))
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
