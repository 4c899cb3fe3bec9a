"""Pictures of a search: a contact sheet of thumbnails, or a timeline when there are none.

Thumbnails come from ``SRC/thumbs/<title_id>/<shot>.jpg`` (written by ``mediafm extract``,
docs/DESIGN.md §3.8, with the shot index zero-padded to five digits, ``00012.jpg``; an unpadded
``12.jpg`` is read too). The sheet is a grid of equal panels, the query first (framed), then the
neighbours in rank order, each labelled with rank, score, title, shot and time; a panel
whose thumbnail is missing is drawn grey with "no thumbnail". With no thumbnail at all, a
timeline plot shows where in each title the neighbours fall.

Files are written atomically (a temporary file renamed into place) and tagged in their PNG
metadata, so a later run may replace a sheet it wrote but nothing else without
``overwrite``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mediafm_jax import outputs
from mediafm_jax.data import source
from mediafm_jax.data.store import ShotStore
from mediafm_jax.search import Hit, Query, SearchError

SOFTWARE_TAG = "mediafm-jax search sheet"
THUMB_W, THUMB_H = 256, 144
LABEL_H = 54
PAD = 8
HEADER_H = 30
MAX_COLS = 5
BACKGROUND = (255, 255, 255)
QUERY_FRAME = (230, 120, 0)
MISSING = (90, 90, 90)


# -- paths -----------------------------------------------------------------------------------
def is_our_png(path: str | Path) -> bool:
    """True when ``path`` is a PNG this module wrote (its metadata carries our tag)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get("Software") == SOFTWARE_TAG
    except (OSError, ValueError):
        return False


def check_sheet_path(
    path: str | Path, overwrite: bool = False, inputs: Sequence[str | Path | None] = ()
) -> Path:
    """The absolute sheet path, or a one-line ``SearchError`` before any work is done.

    Refused: a name not ending in ``.png``; a path inside one of ``inputs`` (the stores,
    the source folder: never written by search); an existing file we did not write,
    unless ``overwrite``; a folder; a folder we cannot write in.
    """
    out = Path(path).absolute()
    if out.suffix.lower() != ".png":
        raise SearchError(f"{path}: a sheet is written as PNG; give a name ending in .png")
    for folder in inputs:
        if folder is None or "://" in str(folder):
            continue
        base = Path(folder).resolve()
        if out.resolve() == base or base in out.resolve().parents:
            raise SearchError(f"{path}: points into the input {folder}; write the sheet elsewhere")
    if out.is_dir():
        raise SearchError(f"{path}: is a folder")
    if out.exists() and not overwrite and not is_our_png(out):
        raise SearchError(
            f"{path}: already exists and is not a sheet written by mediafm search "
            "(pass --overwrite to replace it)"
        )
    if not out.parent.is_dir():
        raise SearchError(f"{path}: folder {out.parent} does not exist")
    outputs.check_writable(out)
    return out


# -- contact sheet --------------------------------------------------------------------------
def grid(panels: int) -> tuple[int, int]:
    """(columns, rows) of a sheet with ``panels`` panels."""
    cols = min(MAX_COLS, panels)
    return cols, -(-panels // cols)


def panel_box(index: int, panels: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of panel ``index``'s thumbnail area on the sheet."""
    cols, _ = grid(panels)
    row, col = divmod(index, cols)
    left = PAD + col * (THUMB_W + 2 * PAD)
    top = HEADER_H + PAD + row * (THUMB_H + LABEL_H + 2 * PAD)
    return left, top, left + THUMB_W, top + THUMB_H


def sheet_size(panels: int) -> tuple[int, int]:
    cols, rows = grid(panels)
    return cols * (THUMB_W + 2 * PAD) + PAD, HEADER_H + rows * (THUMB_H + LABEL_H + 2 * PAD) + PAD


def _clock(t: float | None) -> str:
    if t is None:
        return ""
    minutes, seconds = divmod(t, 60)
    return f"{int(minutes)}:{seconds:04.1f}"


def _fit(path: Path):
    """The thumbnail letterboxed into THUMB_W x THUMB_H, or None when unreadable/missing."""
    from PIL import Image

    if not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMB_W, THUMB_H))
    except (OSError, ValueError):
        return None
    box = Image.new("RGB", (THUMB_W, THUMB_H), (0, 0, 0))
    box.paste(image, ((THUMB_W - image.width) // 2, (THUMB_H - image.height) // 2))
    return box


def contact_sheet(
    out: Path,
    header: str,
    panels: list[tuple[str, str, str]],
    thumbs: list,
    frame_first: bool = True,
) -> None:
    """A grid of thumbnails (None: drawn grey) with three label lines each, written whole;
    ``frame_first`` frames the first panel (a search's query)."""
    from PIL import Image, ImageDraw, ImageFont
    from PIL.PngImagePlugin import PngInfo

    sheet = Image.new("RGB", sheet_size(len(panels)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    draw.text((PAD, 8), header, fill=(0, 0, 0), font=font)
    for index, ((line1, line2, line3), thumb) in enumerate(zip(panels, thumbs, strict=True)):
        left, top, right, bottom = panel_box(index, len(panels))
        if thumb is None:
            draw.rectangle((left, top, right - 1, bottom - 1), fill=MISSING)
            draw.text((left + 8, top + 8), "no thumbnail", fill=(230, 230, 230), font=font)
        else:
            sheet.paste(thumb, (left, top))
        if index == 0 and frame_first:  # the query: framed outside its thumbnail area
            draw.rectangle((left - 4, top - 4, right + 3, bottom + 3), outline=QUERY_FRAME, width=3)
        for j, line in enumerate((line1, line2, line3)):
            draw.text((left, bottom + 4 + 16 * j), line, fill=(0, 0, 0), font=font)
    info = PngInfo()
    info.add_text("Software", SOFTWARE_TAG)
    outputs.atomic_file(out, lambda p: sheet.save(p, format="PNG", pnginfo=info))


# -- timeline ------------------------------------------------------------------------------
def _timeline(out: Path, header: str, query: Query, hits: Sequence[Hit], store: ShotStore) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = [query.title] + [h.title for h in hits]
    order = list(dict.fromkeys(titles))  # the query's title first, then by best hit
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(order) + 1.6))
    for y, title in enumerate(order):
        ax.barh(y, store.title_length(title), color="0.9", height=0.6)
    ax.barh(
        order.index(query.title),
        query.end - query.start,
        left=query.start,
        color="tab:orange",
        height=0.6,
        label="query",
    )
    scores = [h.score for h in hits]
    points = ax.scatter(
        [h.shot for h in hits],
        [order.index(h.title) for h in hits],
        c=scores,
        cmap="viridis",
        zorder=3,
        label="neighbours",
    )
    for h in hits:
        ax.annotate(
            str(h.rank),
            (h.shot, order.index(h.title)),
            xytext=(0, 7),
            textcoords="offset points",
            ha="center",
            fontsize=7,
        )
    fig.colorbar(points, ax=ax, label="cosine")
    ax.set_yticks(range(len(order)), [store.title_ids[t] for t in order])
    ax.invert_yaxis()
    ax.set_xlabel("shot index in title")
    ax.set_title(header, fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    outputs.atomic_file(
        out, lambda p: fig.savefig(p, format="png", dpi=100, metadata={"Software": SOFTWARE_TAG})
    )
    plt.close(fig)


# -- entry point -----------------------------------------------------------------------------
def write_sheet(
    path: str | Path,
    query: Query,
    hits: Sequence[Hit],
    store: ShotStore,
    src: str | Path | None,
    header: str = "",
    overwrite: bool = False,
    inputs: Sequence[str | Path | None] = (),
) -> tuple[str, int]:
    """Writes the sheet; returns ("thumbnails" | "timeline", number of panels or rows)."""
    out = check_sheet_path(path, overwrite, inputs)
    what = f"clip {query.start}:{query.end}" if query.is_clip else f"shot {query.start}"
    panels = [
        ("query", query.title_id, f"{what}  {_clock(query.start_s)}"),
        *(
            (f"#{h.rank}  cos {h.score:.3f}", h.title_id, f"shot {h.shot}  {_clock(h.start_s)}")
            for h in hits
        ),
    ]
    thumbs = []
    if src is not None:
        shots = [(query.title_id, query.start)] + [(h.title_id, h.shot) for h in hits]
        thumbs = [_fit(source.find_thumb(src, t, s)) for t, s in shots]
    if not any(t is not None for t in thumbs):
        _timeline(out, header, query, hits, store)
        return "timeline", len(dict.fromkeys([query.title] + [h.title for h in hits]))
    contact_sheet(out, header, panels, thumbs)
    return "thumbnails", len(panels)


def title_sheet(src: str | Path, title_id: str, png: str | Path) -> Path:
    """Every shot of one extracted title: its thumbnail, times and text (the video demo)."""
    import textwrap

    starts, ends = source.read_times(src, title_id)
    texts = source.read_text(src, title_id)
    panels = [
        (f"shot {i}", f"{_clock(a)} - {_clock(b)}", textwrap.shorten(text, 34) if text else "")
        for i, (a, b, text) in enumerate(zip(starts, ends, texts, strict=True))
    ]
    thumbs = [_fit(source.find_thumb(src, title_id, i)) for i in range(len(panels))]
    header = f"{title_id}: {len(panels)} shots"
    contact_sheet(Path(png), header, panels, thumbs, frame_first=False)
    return Path(png)
