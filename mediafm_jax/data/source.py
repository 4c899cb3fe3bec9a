"""The ingest-source layout (docs/DESIGN.md §3.1 and §3.8): its names, a writer, a reader.

Everything that writes a source goes through here (``mediafm synth``, ``mediafm extract``,
the MovieNet preparation) and everything that reads one finds its files here (ingest,
the search sheet, the demo's contact sheet), so the layout is spelled once::

    SRC/titles.jsonl                  {"title_id", "split"?, ...free metadata} per line
    SRC/shots/<title_id>.npz          video/audio/text [n, d]; start_s, end_s [n]; title_embedding [d]
    SRC/probes.json, SRC/clips.jsonl  probe tasks and their labelled clips
    SRC/thumbs/<title_id>/00012.jpg   one thumbnail per shot (extract)
    SRC/text/<title_id>.json          {"source", "shots": [text per shot]} (extract)

Single files are written whole or not at all (``outputs.atomic_file``): a kill mid-write
never leaves a truncated npz or JSON read back as good.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mediafm_jax import outputs
from mediafm_jax.errors import IngestError

TITLES = "titles.jsonl"
SHOTS = "shots"
PROBES = "probes.json"
CLIPS = "clips.jsonl"
THUMBS = "thumbs"
TEXT = "text"
MODALITIES = ("video", "audio", "text")  # the store's column order
OPTIONAL_KEYS = ("start_s", "end_s", "title_embedding")
SPLITS = ("train", "val", "test")
MAX_NAME_BYTES = 255 - len(".npz")  # the usual file-name limit, less the suffix


# -- where things are --------------------------------------------------------------------
def shots_path(src: str | Path, title_id: str) -> Path:
    return Path(src) / SHOTS / f"{title_id}.npz"


def text_path(src: str | Path, title_id: str) -> Path:
    return Path(src) / TEXT / f"{title_id}.json"


def thumbs_dir(src: str | Path, title_id: str) -> Path:
    return Path(src) / THUMBS / title_id


def thumb_name(shot: int) -> str:
    """A shot's thumbnail file name: its index zero-padded to five digits (``00012.jpg``)."""
    return f"{shot:05d}.jpg"


def find_thumb(src: str | Path, title_id: str, shot: int) -> Path:
    """Where a shot's thumbnail is: the zero-padded name, else the plain index (``12.jpg``,
    for sources brought by hand)."""
    padded = thumbs_dir(src, title_id) / thumb_name(shot)
    return padded if padded.is_file() else thumbs_dir(src, title_id) / f"{shot}.jpg"


# -- writer --------------------------------------------------------------------------------
def write_shots(src: str | Path, title_id: str, arrays: Mapping[str, np.ndarray]) -> Path:
    """``shots/<title_id>.npz`` from modality arrays [n, d] (an absent modality left out)
    and the optional keys; the caller picks dtypes (float16 halves a catalog's size)."""
    unknown = set(arrays) - set(MODALITIES) - set(OPTIONAL_KEYS)
    if unknown:
        raise ValueError(f"not in the source layout: {sorted(unknown)}")
    path = shots_path(src, title_id)
    path.parent.mkdir(parents=True, exist_ok=True)

    def save(temp: Path) -> None:
        with temp.open("wb") as f:  # a file object: np.savez would add ".npz" to a name
            np.savez(f, **arrays)

    outputs.atomic_file(path, save)
    return path


def write_lines(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """One JSON object per line (titles.jsonl, clips.jsonl), written whole."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    outputs.atomic_file(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False, indent=1) + "\n"
    outputs.atomic_file(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def write_titles(src: str | Path, titles: Iterable[Mapping[str, Any]]) -> None:
    write_lines(Path(src) / TITLES, titles)


def write_probes(src: str | Path, probes: Mapping[str, Any], clips: Iterable[Mapping]) -> None:
    """``probes.json`` ({"tasks": [...], ...}) and ``clips.jsonl``."""
    write_json(Path(src) / PROBES, probes)
    write_lines(Path(src) / CLIPS, clips)


def write_text(src: str | Path, title_id: str, source: str, texts: list[str]) -> None:
    """``text/<title_id>.json``: each shot's text and where it came from."""
    path = text_path(src, title_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"source": source, "shots": texts})


# -- reader --------------------------------------------------------------------------------
def title_id_problem(title_id: str) -> str | None:
    """Why ``title_id`` cannot name ``shots/<title_id>.npz`` (None when it can)."""
    try:
        size = len(title_id.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode"
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes long, a file name allows {MAX_NAME_BYTES} before '.npz'"
    if any(c in title_id for c in "/\\\0") or any(ord(c) < 32 for c in title_id):
        return "contains a path separator, NUL or control character"
    if title_id.startswith("."):
        return "starts with '.'"
    return None


def read_titles(src: str | Path) -> list[tuple[str, str | None]]:
    """(title_id, split) per line of ``titles.jsonl``, checked; an IngestError names the line."""
    path = Path(src) / TITLES
    if not path.is_file():
        raise IngestError(f"{path}: missing (one JSON object per title with 'title_id')")
    titles: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise IngestError(f"{path}: cannot be read as UTF-8 text ({err})") from None
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise IngestError(f"{path} line {line_no}: invalid JSON ({err.msg})") from None
        title_id = record.get("title_id") if isinstance(record, dict) else None
        if not isinstance(title_id, str) or not title_id:
            raise IngestError(f"{path} line {line_no}: needs a non-empty string 'title_id'")
        problem = title_id_problem(title_id)
        if problem:
            shown = title_id if len(title_id) <= 60 else title_id[:57] + "..."
            raise IngestError(
                f"{path} line {line_no}: title_id {shown!r} {problem}, so it cannot name "
                "its shots/<title_id>.npz"
            )
        if title_id in seen:
            raise IngestError(f"{path} line {line_no}: duplicate title_id {title_id!r}")
        split = record.get("split")
        if split is not None and split not in SPLITS:
            raise IngestError(
                f"{path} line {line_no}: title {title_id!r} has split {split!r}, "
                f"expected one of {', '.join(SPLITS)}"
            )
        seen.add(title_id)
        titles.append((title_id, split))
    if not titles:
        raise IngestError(f"{path}: lists no titles")
    return titles


def read_text(src: str | Path, title_id: str) -> list[str]:
    """Each shot's text from ``text/<title_id>.json`` (extract's transcript)."""
    return json.loads(text_path(src, title_id).read_text(encoding="utf-8"))["shots"]


def read_times(src: str | Path, title_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(start_s, end_s) of a title's shots."""
    with np.load(shots_path(src, title_id)) as data:
        return np.asarray(data["start_s"]), np.asarray(data["end_s"])


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of an npz's arrays, read from headers only.

    Also checks that each member holds as many bytes as its header promises, so a
    truncated array is reported here, before anything is written.
    """
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    header_bytes = f.tell()
                name = info.filename.removesuffix(".npy")
                dtype = np.dtype(dtype)
                if dtype.hasobject:
                    raise IngestError(
                        f"{path}: '{name}' holds Python objects (dtype object), expected numbers"
                    )
                needed = header_bytes + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if info.file_size < needed:
                    raise IngestError(
                        f"{path}: '{name}' is truncated ({info.file_size} bytes, its header "
                        f"{tuple(shape)} {dtype} needs {needed})"
                    )
                headers[name] = (tuple(shape), dtype)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        if isinstance(err, IngestError):
            raise
        raise IngestError(f"{path}: not a readable .npz file ({err})") from None
    return headers
