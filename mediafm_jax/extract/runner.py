"""``mediafm extract``: many videos -> one ingest source (docs/DESIGN.md §3.1 and §3.8).

Finds the videos, checks the output folder is ours, skips what an earlier run already
extracted with the same settings from the same unchanged file (size and mtime), runs the
rest in worker processes, records each video's outcome in ``extract.json`` as it
finishes (so an interrupted run resumes), and writes ``titles.jsonl`` from that record.
A video that fails costs one line; the others go on, and the summary lists the failures.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import errno
import importlib.metadata
import json
import multiprocessing
import os
import shutil
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mediafm_jax import outputs
from mediafm_jax.data import source
from mediafm_jax.errors import ExtractError, Terminated, sigterm_raises
from mediafm_jax.extract import encoders, speech, title
from mediafm_jax.extract.settings import Settings

FORMAT = "mediafm-extract/1"
MANIFEST = "extract.json"
LOCK = ".extract.lock"
# what extract writes in OUT_SRC (its marker lists it: a demo's --overwrite keeps other files)
LAYOUT = (
    source.TITLES,
    MANIFEST,
    LOCK,
    *(f"{d}/" for d in (source.SHOTS, source.THUMBS, source.TEXT)),
    ".tmp/",
)
VIDEO_SUFFIXES = frozenset(
    [
        ".mp4",
        ".m4v",
        ".mkv",
        ".mov",
        ".avi",
        ".webm",
        ".mpg",
        ".mpeg",
        ".ts",
        ".m2ts",
        ".mts",
        ".wmv",
        ".flv",
        ".ogv",
        ".3gp",
    ]
)
PACKAGES = (
    "mediafm-jax",
    "av",
    "scenedetect-headless",
    "onnxruntime",
    "faster-whisper",
    "ctranslate2",
    "sentence-transformers",
    "torch",
    "charset-normalizer",
    "numpy",
)


@dataclasses.dataclass(frozen=True)
class Video:
    title_id: str
    path: Path
    size: int
    mtime_ns: int


@dataclasses.dataclass
class Summary:
    out: Path
    done: list[str]
    skipped: list[str]
    failed: dict[str, str]
    seconds: float
    kept: list[str] = dataclasses.field(default_factory=list)  # failed redo, earlier title kept


def find_videos(inputs: list[Path]) -> tuple[list[Video], dict[str, str]]:
    """Files as given, folders searched recursively for video suffixes; ids from file stems.

    Also returns what was passed over, with why: an entry with a video suffix that is no
    regular file (a FIFO, a broken link, a link loop) and a folder that cannot be read.
    The caller reports and counts them; an input folder that cannot be read is an error.
    """
    paths: list[Path] = []
    passed_over: dict[str, str] = {}
    for item in inputs:
        if item.is_dir():
            try:
                os.listdir(item)
            except OSError as err:
                raise ExtractError(f"{item}: cannot read the folder ({err.strerror})") from None
            paths += sorted(_walk_videos(item, passed_over))
        elif item.is_file():
            paths.append(item)
        elif item.exists() or item.is_symlink():
            raise ExtractError(f"{item}: {_not_a_file(item)}")
        else:
            raise ExtractError(f"{item}: no such file or folder")
    videos: dict[str, Video] = {}
    for p in paths:
        p = p.resolve()
        title_id = p.stem
        if title_id in videos and videos[title_id].path != p:
            raise ExtractError(
                f"title id {title_id!r} comes from two files: {videos[title_id].path} and {p} "
                "(title ids are file stems; rename one)"
            )
        stat = p.stat()
        videos[title_id] = Video(title_id, p, stat.st_size, stat.st_mtime_ns)
    if not videos:
        skipped = f" ({len(passed_over)} entries skipped: {_first(passed_over)})"
        raise ExtractError(
            f"no video files found in {', '.join(map(str, inputs))}"
            + (skipped if passed_over else "")
        )
    return list(videos.values()), passed_over


def _first(passed_over: dict[str, str]) -> str:
    path, why = next(iter(passed_over.items()))
    return f"{path}: {why}"


def _walk_videos(root: Path, passed_over: dict[str, str]) -> Iterator[Path]:
    """Regular files with a video suffix under ``root``, hidden entries left out; links
    to folders are not followed (as rglob)."""

    def unreadable(err: OSError) -> None:
        passed_over[str(err.filename)] = f"cannot read the folder ({err.strerror})"

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(folder, name)
            if name.startswith(".") or path.suffix.lower() not in VIDEO_SUFFIXES:
                continue
            why = _not_a_file(path)
            if why is None:
                yield path
            else:
                passed_over[str(path)] = why


def _not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a video file, or None for a regular file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a broken symbolic link" if path.is_symlink() else "vanished"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"cannot be read ({err.strerror})"
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a folder"}
    kind = next((name for test, name in kinds.items() if test(mode)), "a device")
    return f"{kind}, not a regular file"


def check_out_dir(out: Path, inputs: list[Path]) -> None:
    """Refuses an OUT_SRC that is not ours, or that overlaps the inputs.

    ``outputs.check_output`` refuses a folder not written by mediafm, one of another
    kind, and one equal to, inside or containing an input (its files would become inputs
    of the next run, or a rerun could overwrite an input video). On top: a source folder
    of ours must be an extract output (``extract.json``), so synth catalogs are not mixed in.
    """
    outputs.check_output(out, "source", reuse=True, inputs=inputs)
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExtractError(
            f"{out}: is a source folder but not an extract output (no {MANIFEST}); "
            "choose a new or empty folder"
        )


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def load_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ExtractError(
            f"{path}: not valid JSON ({err.msg}); it was not written by us"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExtractError(f"{path}: not an extract manifest (format != {FORMAT})")
    return manifest


def _any_ok(manifest: dict[str, Any]) -> bool:
    videos = manifest.get("videos")
    return isinstance(videos, dict) and any(
        isinstance(r, dict) and r.get("status") == "ok" for r in videos.values()
    )


def _undecodable_note(record: dict[str, Any]) -> str:
    """'; skipped 1 undecodable audio packet' for a title with packets FFmpeg could not
    decode (recorded per stream in extract.json), else ''."""
    counts = record.get("undecodable_packets") or {}
    said = [f"{n} {kind}" for kind, n in sorted(counts.items()) if n]
    return f"; skipped undecodable packets: {', '.join(said)}" if said else ""


def _complete(record: dict[str, Any] | None, out: Path, title_id: str) -> bool:
    """An earlier good extract of this title is on disk (what a failed redo must keep)."""
    return (
        record is not None
        and record.get("status") == "ok"
        and source.shots_path(out, title_id).is_file()
        and source.text_path(out, title_id).is_file()
    )


def is_done(record: dict[str, Any] | None, video: Video, out: Path) -> bool:
    return (
        record is not None
        and record.get("status") == "ok"
        and record.get("path") == str(video.path)
        and record.get("size") == video.size
        and record.get("mtime_ns") == video.mtime_ns
        and source.shots_path(out, video.title_id).is_file()
    )


# Worker processes: each loads its models once and reports a progress-bar slot.
_WORKER: dict[str, Any] = {}


def _init_worker(
    settings: Settings, threads: int, slots: Any, stop: Any = None, models: Any = None
) -> None:
    _WORKER["models"] = models or title.Models(settings, threads)
    _WORKER["slot"] = slots.get() if slots is not None else 0
    _WORKER["stop"], _WORKER["parent"] = stop, os.getppid()
    if stop is not None:  # a worker process: it stops when the parent says so or dies
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; parent decides
        signal.signal(signal.SIGTERM, _exit_on_signal)
        threading.Thread(target=_watch_parent, args=(stop, os.getppid()), daemon=True).start()


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds the title in progress: its temp folder goes


def _watch_parent(stop: Any, parent: int) -> None:
    """Stops this worker when the parent asks (Ctrl-C, SIGTERM) or is gone (killed)."""
    while not stop.wait(0.5):
        if os.getppid() != parent:
            break
    os.kill(os.getpid(), signal.SIGTERM)
    if os.getppid() != parent:  # nobody will send the pool's exit sentinel
        time.sleep(5)  # time to unwind the title in progress
        os._exit(1)


def _run_one(video: Video, out: Path) -> tuple[str, dict[str, Any] | None]:
    """Extracts one video in a worker; any failure becomes a record with a one-line error.
    None instead of a record: the run is stopping and the video was not started."""
    stop = _WORKER.get("stop")
    if stop is not None and (stop.is_set() or os.getppid() != _WORKER["parent"]):
        return video.title_id, None  # stopping, or the parent is gone: start nothing new
    record: dict[str, Any] = {
        "path": str(video.path),
        "size": video.size,
        "mtime_ns": video.mtime_ns,
    }
    bar = tqdm(
        desc=video.title_id[:24],
        unit="s",
        position=_WORKER.get("slot", 0) + 1,
        leave=False,
        disable=None,
        bar_format="{desc}: {n:.0f}s of video [{elapsed}, {rate_fmt}]",
    )
    try:
        record.update(title.extract_video(video.path, video.title_id, out, _WORKER["models"], bar))
    except Exception as err:  # noqa: BLE001 - one video's failure must not stop the batch
        message = str(err).splitlines()[0] if str(err) else ""
        if not isinstance(err, ExtractError):
            message = f"{type(err).__name__}: {message}"
        record.update(status="failed", error=message)
    finally:
        bar.close()
    return video.title_id, record


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One extract at a time per OUT_SRC (a second would delete the first's temp folders
    and overwrite its records); the OS drops the lock when its process ends, however."""
    import fcntl

    with open(out / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            raise ExtractError(
                f"{out}: another mediafm extract{f' (pid {holder})' if holder else ''} is "
                "writing here; wait for it to finish or choose another OUT_SRC"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def _plan(
    out: Path, videos: list[Video], settings: Settings
) -> tuple[dict[str, Any], list[Video], list[str]]:
    """(records of earlier runs, videos to extract, title ids already done)."""
    manifest = load_manifest(out)
    if manifest is not None and not _any_ok(manifest):
        manifest = None  # no title was written with the old settings: nothing to mismatch
    if manifest is not None and manifest.get("settings_key") != settings.key():
        old = manifest.get("settings", {})
        changed = [
            f"{k}: {old.get(k)!r} -> {v!r}"
            for k, v in settings.to_dict().items()
            if old.get(k) != v
        ]
        raise ExtractError(
            f"{out}: was extracted with other settings ({'; '.join(changed)}); its titles "
            "would not match, so write to a new OUT_SRC"
        )
    records: dict[str, Any] = dict(manifest["videos"]) if manifest else {}
    for v in videos:
        taken = records.get(v.title_id)
        if taken and taken.get("path") != str(v.path) and taken.get("status") == "ok":
            raise ExtractError(
                f"title id {v.title_id!r}: {out / MANIFEST} already has it from {taken['path']}, "
                f"not {v.path} (rename one)"
            )
    todo = [v for v in videos if not is_done(records.get(v.title_id), v, out)]
    skipped = [v.title_id for v in videos if v not in todo]
    return records, todo, skipped


def extract(
    inputs: list[str | Path],
    out: str | Path,
    settings: Settings | None = None,
    dry_run: bool = False,
    log: Any = print,
) -> Summary:
    """Extracts every video under ``inputs`` into ``out`` with ``settings`` (checked when
    they were built; ``settings.workers`` processes); returns what was done.

    Ctrl-C or SIGTERM stops it (KeyboardInterrupt; ``errors.Terminated``) with the finished
    videos recorded and nothing half-written; worker processes stop with it. With
    ``settings.ray`` set, the videos run as a Ray Data job (``ray_job``); the rest (lock,
    resume, records, summary) is the same.
    """
    started = time.perf_counter()
    settings = settings or Settings()
    input_paths = [Path(p) for p in inputs]
    out = Path(out).resolve()
    videos, passed_over = find_videos(input_paths)
    check_out_dir(out, input_paths)
    for path, why in passed_over.items():  # said before any work, counted as failed
        log(f"skipped {path}: {why}")
    records, todo, skipped = _plan(out, videos, settings)
    if dry_run:
        for v in videos:
            action = "extract" if v in todo else "skip"
            log(f"{action:<8} {v.title_id:<30} {v.path}")
        log(f"dry run: {len(todo)} to extract, {len(skipped)} already done, into {out}")
        return Summary(out, [], skipped, dict(passed_over), time.perf_counter() - started)

    described = [
        encoders.resolve(kind, getattr(settings, f"{kind}_encoder")).describe()
        for kind in encoders.KINDS
    ]
    if settings.speech:
        described.append(speech.WhisperTinyEn.describe())
    check_encoders(out, described)
    if settings.ray is not None and todo:  # a head that is not there: one line, nothing written
        from mediafm_jax.extract import ray_job

        ray_job.check_address(settings.ray)
    models = title.Models(settings, _threads(settings))
    if todo:  # damaged weights: one line now, not a failure per video after its decoding
        models.check_loads()
    outputs.claim_folder(out, "source", owns=LAYOUT, inputs=input_paths)
    with _locked(out), sigterm_raises():
        records, todo, skipped = _plan(out, videos, settings)  # as of now, under the lock
        return _run(
            out, settings, described, records, todo, skipped, passed_over, log, started, models
        )


def _threads(settings: Settings) -> int:
    """CPU threads of each worker: the cores shared out."""
    return max(1, (os.cpu_count() or 1) // settings.workers)


def check_encoders(out: Path, described: list[dict[str, Any]]) -> None:
    """Refuses an encoder whose weights changed under the same name since titles were
    written (a hub ``main`` that moved, a replaced local folder): they would not match."""
    manifest = load_manifest(out)
    if manifest is None or not _any_ok(manifest):
        return
    before = {e.get("kind"): e for e in manifest.get("encoders", []) if isinstance(e, dict)}
    for now in described:
        was = before.get(now["kind"])
        if was is None or was.get("name") != now["name"]:
            continue  # a new encoder name is a settings change, refused with the settings
        for field in ("dim", "revision", "sha256"):
            if was.get(field) != now.get(field):
                raise ExtractError(
                    f"{out}: its titles were embedded with {now['name']} at {field} "
                    f"{was.get(field)}, which is now {now.get(field)}; write to a new OUT_SRC"
                )


def _run(
    out: Path,
    settings: Settings,
    described: list[dict[str, Any]],
    records: dict[str, Any],
    todo: list[Video],
    skipped: list[str],
    passed_over: dict[str, str],
    log: Any,
    started: float,
    models: title.Models,
) -> Summary:
    if (out / ".tmp").is_dir():  # half-built titles of an interrupted run (ours)
        shutil.rmtree(out / ".tmp")
    manifest = {
        "format": FORMAT,
        "settings": settings.to_dict(),
        "settings_key": settings.key(),
        "encoders": described,
        "versions": _versions(),
        "videos": records,
    }
    source.write_json(out / MANIFEST, manifest)
    done: list[str] = []
    failed: dict[str, str] = dict(passed_over)  # FIFOs, broken links: failed inputs too
    kept: list[str] = []

    def finish(title_id: str, record: dict[str, Any] | None, overall: tqdm) -> None:
        if record is None:  # not started: the run is stopping
            return
        earlier = records.get(title_id)
        redo_failed = record["status"] != "ok" and _complete(earlier, out, title_id)
        if redo_failed:  # a title is replaced only by a complete new one
            kept.append(title_id)
            records[title_id] = {**earlier, "redo_failed": record}
        else:
            if record["status"] != "ok":  # a failed first try: nothing of it may stay
                title.remove_title(out, title_id)
            records[title_id] = record
        source.write_json(out / MANIFEST, manifest)
        overall.update(1)
        say = overall.write if log is print else log  # tqdm.write keeps the bars intact
        if redo_failed:
            failed[title_id] = f"{record['error']} (kept its earlier extract)"
            say(f"FAILED {title_id}: {failed[title_id]}")
        elif record["status"] == "ok":
            done.append(title_id)
            speed = record["duration_s"] / max(record["wall_s"], 1e-9)
            say(
                f"ok     {title_id}: {record['shots']} shots, {record['duration_s']:.1f}s of video "
                f"in {record['wall_s']:.1f}s ({speed:.1f}x real time), text: {record['text_source']}"
                + _undecodable_note(record)
            )
        else:
            failed[title_id] = record["error"]
            say(f"FAILED {title_id}: {record['error']}")

    workers = settings.workers
    threads = _threads(settings)
    overall = tqdm(total=len(todo), desc="videos", unit="video", position=0, disable=None)
    try:
        if settings.ray is not None and todo:
            from mediafm_jax.extract import ray_job

            models.clear()  # the actors load their own
            ray_job.run(out, settings, todo, threads, lambda r: finish(*r, overall))
        elif workers == 1 or len(todo) <= 1:
            _init_worker(settings, threads, None, models=models)  # the ones checked: no reload
            for v in todo:
                finish(*_run_one(v, out), overall)
        else:
            models.clear()  # the workers load their own
            _run_pool(out, settings, todo, threads, lambda r: finish(*r, overall), log)
    except KeyboardInterrupt as stop:
        log(
            f"{'terminated' if isinstance(stop, Terminated) else 'interrupted'}: {len(done)} "
            "extracted in this run are kept, the video(s) in progress were discarded; rerun "
            "the same command to resume"
        )
        raise
    finally:
        overall.close()
        if (out / ".tmp").is_dir() and not any((out / ".tmp").iterdir()):
            (out / ".tmp").rmdir()
        ok = [t for t, r in records.items() if r.get("status") == "ok"]
        source.write_titles(
            out, [{"title_id": t, "source": records[t]["path"]} for t in sorted(ok)]
        )
    summary = Summary(out, done, skipped, failed, time.perf_counter() - started, kept)
    packets: dict[str, int] = {}  # undecodable packets skipped, per stream, in this run
    for title_id in done:
        for kind, n in (records[title_id].get("undecodable_packets") or {}).items():
            packets[kind] = packets.get(kind, 0) + n
    said = ", ".join(f"{n} {kind}" for kind, n in sorted(packets.items()) if n)
    extracted = f"extracted {len(done)}" + (
        f" (undecodable packets skipped: {said})" if said else ""
    )
    notes = [f"{len(kept)} kept their earlier extract"] if kept else []
    notes += [f"{len(passed_over)} entries not readable as files"] if passed_over else []
    notes_text = f" ({'; '.join(notes)})" if notes else ""
    log(
        f"{extracted}, skipped {len(skipped)} already done, "
        f"failed {len(failed)}{notes_text}; {len(ok)} titles in {out} ({summary.seconds:.1f}s)"
    )
    for title_id, error in failed.items():
        log(f"  failed: {title_id}: {error}")
    return summary


OMP = "OMP_NUM_THREADS"


@contextlib.contextmanager
def _one_omp_thread() -> Iterator[str]:
    """``OMP_NUM_THREADS=1`` in the environment worker processes are spawned with, unless
    the user set it, as Ray does for its workers: each worker already runs ``threads``
    encoder threads, and OpenMP pools sized to every core on top of them oversubscribe
    (measured in docs/CATALOGS.md). Yields what was done, for the log line."""
    given = os.environ.get(OMP)
    if given is not None:
        yield f"{OMP}={given} as set"
        return
    os.environ[OMP] = "1"
    try:
        yield f"{OMP}=1 in each (as Ray's workers; set {OMP} to choose)"
    finally:
        if os.environ.get(OMP) == "1":
            del os.environ[OMP]


def _run_pool(
    out: Path,
    settings: Settings,
    todo: list[Video],
    threads: int,
    finish: Any,
    log: Any = print,
) -> None:
    """``todo`` across worker processes; on an interrupt the workers unwind and exit
    before this returns (none is left running or writing into ``out``)."""
    context = multiprocessing.get_context("spawn")
    slots, stop = context.Queue(), context.Event()
    for i in range(settings.workers):
        slots.put(i)
    count = min(settings.workers, len(todo))
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=count,
        mp_context=context,
        initializer=_init_worker,
        initargs=(settings, threads, slots, stop),
    )
    with _one_omp_thread() as omp:  # spawned at the first submit, with this environment
        log(f"{count} worker processes, {threads} threads each, {omp}")
        futures = [pool.submit(_run_one, v, out) for v in todo]
    handled: set[concurrent.futures.Future] = set()
    try:
        for future in concurrent.futures.as_completed(futures):
            handled.add(future)
            try:
                result = future.result()
            except (SystemExit, concurrent.futures.process.BrokenProcessPool) as err:
                raise ExtractError(
                    f"a worker process was stopped from outside ({type(err).__name__}: {err}); "
                    "rerun the same command to resume"
                ) from None
            finish(result)
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        for future in futures:  # finished while stopping: recorded, not redone
            ready = future not in handled and future.done() and not future.cancelled()
            if ready and future.exception() is None:
                finish(future.result())
        raise
    finally:
        pool.shutdown(wait=True)
