"""Sidecar subtitles (.srt / .vtt): decoded whatever their encoding, parsed, placed on shots.

Decoding: a byte-order mark decides (UTF-8, UTF-16 LE/BE, UTF-32); otherwise
``charset-normalizer`` picks among UTF-8 and the legacy code pages, so a cp1252 or
UTF-16 file is not read as mojibake (or as zero cues). Parsing accepts SRT and WebVTT
timing lines (``00:01:02,500 --> 00:01:04,000``, ``01:02.500 --> ...``), strips markup
(``<i>``, ``{\\an8}``) and skips VTT NOTE/STYLE blocks. A cue goes to every shot it overlaps.
"""

from __future__ import annotations

import codecs
import dataclasses
import re
from pathlib import Path

import numpy as np

from mediafm_jax.errors import ExtractError

SUFFIXES = (".srt", ".vtt")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
LEGACY_TIE = 0.1  # chaos difference within which candidate code pages count as tied
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[,.](\d{1,3})"  # real files write 00:00:2,000 too
_TIMING = re.compile(_TIME + r"\s*-->\s*" + _TIME)
_MARKUP = re.compile(r"<[^>]*>|\{\\[^}]*\}")


@dataclasses.dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def sidecar(video: Path) -> Path | None:
    """``film.srt`` or ``film.vtt`` next to ``film.mp4`` (the first that exists)."""
    for suffix in SUFFIXES:
        candidate = video.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def decode_text(data: bytes, path: Path, encoding: str | None = None) -> tuple[str, str]:
    """(text, encoding name): ``encoding`` if given, a BOM, UTF-8, else charset-normalizer.

    Single-byte code pages are hard to tell apart on a few lines of text (charset-normalizer
    scores cp1250, cp1252 and cp1257 alike on short French); among its near-best candidates
    cp1252, the usual legacy code page of subtitle files, wins. Pass ``encoding`` (the
    ``--subtitle-encoding`` flag) for anything else, e.g. cp1250 for Czech.
    """
    if encoding:
        try:
            return data.decode(encoding), encoding
        except (UnicodeDecodeError, LookupError) as err:
            raise ExtractError(f"{path}: cannot be read as {encoding} ({err})") from None
    for bom, name in _BOMS:
        if data.startswith(bom):
            return data.decode(name), name
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        raise ExtractError(f"{path}: cannot tell its text encoding (not a subtitle file?)")
    best_chaos = min(m.chaos for m in matches)
    near = [m for m in matches if m.chaos <= best_chaos + LEGACY_TIE]
    chosen = next((m for m in near if m.encoding == "cp1252"), None) or from_bytes(data).best()
    assert chosen is not None
    return str(chosen), chosen.encoding


def _seconds(hours: str | None, minutes: str, seconds: str, fraction: str) -> float:
    return (
        int(hours or 0) * 3600
        + int(minutes) * 60
        + int(seconds)
        + int(fraction.ljust(3, "0")) / 1000
    )


def parse(text: str, name: str = "subtitles", problems: list[str] | None = None) -> list[Cue]:
    """Cues of an SRT or WebVTT document, in file order, markup stripped, empty ones dropped.

    A timing line (one holding ``-->``) that cannot be read, with minutes or seconds past
    59, or ending before it starts is an ExtractError naming ``name`` and the line: a cue
    silently dropped would leave its shots without their dialogue. A caller that reports
    them itself (a research import of hundreds of films) passes ``problems``: such a cue
    is then skipped and its ``line N: reason`` appended there.
    """
    cues: list[Cue] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    block: list[tuple[int, str]] = []
    for number, line in enumerate([*lines, ""], start=1):
        if line.strip():
            block.append((number, line.strip()))
            continue
        for i, (at, timing) in enumerate(block):
            if "-->" not in timing:
                continue
            problem, start, end = _timing(timing)
            if problem is not None:
                if problems is None:
                    raise ExtractError(f"{name}: line {at}: {problem}")
                problems.append(f"line {at}: {problem}")
                break
            body = " ".join(_MARKUP.sub("", t).strip() for _, t in block[i + 1 :])
            body = " ".join(body.split())
            if body:
                cues.append(Cue(start, end, body))
            break
        block = []
    return cues


def _timing(line: str) -> tuple[str | None, float, float]:
    """(what is wrong with the timing line or None, start s, end s)."""
    match = _TIMING.search(line)
    if match is None:
        return f"cannot read the timing {line!r}", 0.0, 0.0
    g = match.groups()
    if max(int(g[1]), int(g[2]), int(g[5]), int(g[6])) > 59:
        return f"minutes or seconds past 59 in {line!r}", 0.0, 0.0
    start, end = _seconds(*g[:4]), _seconds(*g[4:])
    if end < start:
        return f"the cue ends before it starts ({line!r})", start, end
    return None, start, end


def read_cues(
    path: Path, encoding: str | None = None, problems: list[str] | None = None
) -> tuple[list[Cue], str]:
    """Cues and the encoding used; a file with no cue (empty included) is an ExtractError.
    ``problems``: skip broken cues and list them there (see ``parse``)."""
    data = path.read_bytes()
    text, encoding = decode_text(data, path, encoding)
    cues = parse(text, str(path), problems)
    if not text.strip():
        raise ExtractError(
            f"{path}: is empty (delete it to transcribe the speech instead, or fill it)"
        )
    if not cues:
        raise ExtractError(f"{path}: no subtitle cue found (decoded as {encoding})")
    return cues, encoding


def cues_to_shots(cues: list[Cue], starts_s: np.ndarray, ends_s: np.ndarray) -> list[str]:
    """Each shot's text: the cues that overlap it, in order (a cue may span shots)."""
    texts: list[list[str]] = [[] for _ in starts_s]
    for cue in cues:
        first = max(0, int(np.searchsorted(ends_s, cue.start_s, side="right")))
        for i in range(first, len(starts_s)):
            if starts_s[i] >= cue.end_s:
                break
            texts[i].append(cue.text)
    return [" ".join(t) for t in texts]
