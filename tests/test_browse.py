"""`mediafm browse` in a real browser: Playwright for Python driving Debian's Chromium.

Two catalogs: a small extract of the wheel media (thumbnails, speech, subtitles, the
source videos) and the tiny synthetic store with in-context embeddings (no thumbnails:
the page draws colour swatches). Each app runs on a free port of 127.0.0.1 on a thread
and is stopped by its handle. Set MEDIAFM_BROWSE_SCREENSHOTS=docs/images to refresh the
README's screenshots.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="needs the [extract] extra")

from faults import assert_one_line_error, tree_hashes  # noqa: E402

from mediafm_jax import embed, outputs, search  # noqa: E402
from mediafm_jax.browse import BrowseServer, Catalog  # noqa: E402
from mediafm_jax.data import ingest  # noqa: E402
from mediafm_jax.extract import extract, media  # noqa: E402
from mediafm_jax.probe import report as report_lib  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
SPOKEN = "Ever tried. Ever failed."  # beckett.wav's first words, spoken at 4 s in speech.mp4
SRT = (
    "1\n00:00:00,500 --> 00:00:01,000\nCafé crème\n\n"
    "2\n00:00:02,000 --> 00:00:03,500\nWe leave tonight, before the rain.\n\n"
)
SCREENSHOTS = os.environ.get("MEDIAFM_BROWSE_SCREENSHOTS")


def ensure_chromium() -> str:
    """Debian's Chromium, installed when missing (CI runs as root); Playwright's own
    browser download cannot work offline."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (as root), or make test")
    import fcntl

    with open("/tmp/mediafm-chromium-install.lock", "w") as lock:  # xdist workers: one apt
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(CHROMIUM):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
            subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=ensure_chromium(), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture(scope="module")
def video_catalog(tmp_path_factory):
    """speech.mp4 (beckett's first words at 4 s) and subbed.mp4 (bikes + an .srt)."""
    root = tmp_path_factory.mktemp("browse")
    videos = root / "videos"
    media.mux_clip(videos / "speech.mp4", speech_at_s=4.0, speech_span_s=(0.0, 3.2))
    shutil.copy(media.bikes(), videos / "subbed.mp4")
    (videos / "subbed.srt").write_text(SRT, encoding="utf-8")
    summary = extract([videos], root / "src", log=lambda *_: None)
    assert not summary.failed
    ingest.ingest(root / "src", str(root / "store"), progress=False)
    return root


REAL_REPORT = Path(__file__).parent.parent / "experiments" / "ablations" / "demo_report"


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """The demo's real probe results, written by the probe's own report writer."""
    results = json.loads((REAL_REPORT / "report.json").read_text())["tasks"]
    out = tmp_path_factory.mktemp("report") / "report"
    report_lib.write_report(results, out)
    return out


def _start(catalog: Catalog) -> BrowseServer:
    return BrowseServer(catalog, "127.0.0.1", 0).start()


@pytest.fixture(scope="module")
def video_app(video_catalog, report_dir):
    """The app over the video catalog; when the module is done, every file of the store,
    the source (thumbnails, text, extract.json), the videos and the report is unchanged."""
    before = tree_hashes(video_catalog), tree_hashes(report_dir)
    server = _start(Catalog(str(video_catalog / "store"), report=str(report_dir)))
    yield server
    server.stop()
    assert (tree_hashes(video_catalog), tree_hashes(report_dir)) == before, "browse wrote"


@pytest.fixture(scope="module")
def emb(embedder, store, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("emb") / "emb")
    return embed.embed_store(embedder, store, out, progress=False)


@pytest.fixture(scope="module")
def synth_app(tiny_store, emb):
    server = _start(Catalog(tiny_store, emb.root))
    yield server
    server.stop()


def shoot(page, name: str, tmp_path: Path) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)


def open_view(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready]")


def hits_of(page) -> list[tuple[int, int, float]]:
    page.wait_for_selector("#hits .hit")
    return [
        (int(h.get_attribute("data-title")), int(h.get_attribute("data-shot")),
         float(h.query_selector(".score").inner_text()))
        for h in page.query_selector_all("#hits .hit")
    ]  # fmt: skip


# -- catalog -----------------------------------------------------------------------------------
def test_catalog_lists_titles_and_filters(page, video_app, tmp_path):
    open_view(page, video_app.url)
    rows = page.locator("#catalog-table tbody tr")
    assert sorted(rows.all_inner_texts())[0].startswith("speech")
    assert [r.split("\t")[0] for r in rows.all_inner_texts()] == ["speech", "subbed"]
    assert "6" in rows.first.inner_text()  # shots, as the store says
    shoot(page, "browse_catalog.png", tmp_path)
    page.fill("#filter", "SUB")
    page.wait_for_function("document.querySelectorAll('#catalog-table tbody tr').length === 1")
    assert rows.first.inner_text().startswith("subbed")


def test_catalog_pages(page, synth_app, store):
    open_view(page, synth_app.url + "#/?page=1")
    assert page.locator("#catalog-table tbody tr").count() == store.num_titles  # 12 < 50
    for size, pages in ((5, 3), (12, 1)):
        import urllib.request

        with urllib.request.urlopen(f"{synth_app.url}api/titles?size={size}&page=3") as reply:
            data = json.load(reply)
        assert data["pages"] == pages and data["page"] == min(3, pages)
        first = (data["page"] - 1) * size
        assert [t["title_id"] for t in data["titles"]] == store.title_ids[first : first + size]
        lengths = [store.title_length(i) for i in range(first, min(first + size, 12))]
        assert [t["shots"] for t in data["titles"]] == lengths


def test_catalog_pages_read_no_shot_vectors(tiny_store, monkeypatch):
    """A catalog of any size opens from its small arrays; a title page reads that title's
    rows only (experiments/benchmarks/browse.py times 1M shots)."""
    from mediafm_jax.data.store import ShotStore

    reads: list[tuple[int, int]] = []
    monkeypatch.setattr(ShotStore, "read_rows", lambda self, a, b: reads.append((a, b)) or 1 / 0)
    catalog = Catalog(tiny_store)
    assert catalog.titles("", page=2, size=5)["total"] == 12
    assert catalog.titles("3")["titles"]
    assert reads == []
    with pytest.raises(ZeroDivisionError):
        catalog.title(4)
    assert reads == [catalog.store.title_rows(4)]


def test_neighbours_k_follows_the_search_rule(video_catalog):
    """k below 1 is an error and k beyond the catalog is cut and said, as in ``mediafm
    search`` (``search.capped_k``); the page's own bound is MAX_K cards."""
    catalog = Catalog(str(video_catalog / "store"))
    shots = catalog.store.num_shots
    assert 2 < shots < 50, shots  # two short videos
    for k in (0, -2):
        with pytest.raises(search.SearchError, match=f"k={k}: need at least 1 neighbour"):
            catalog.neighbours(0, 1, k, method="concat")
    with pytest.raises(search.SearchError, match="k=101: at most 100"):
        catalog.neighbours(0, 1, 101, method="concat")
    answer = catalog.neighbours(0, 1, 2, method="concat")
    assert len(answer["hits"]) == 2 and answer["note"] == ""
    answer = catalog.neighbours(0, 1, 50, method="concat")
    assert sorted(h["row"] for h in answer["hits"]) == list(range(shots))
    assert answer["note"] == f"k=50: only {shots} shots can be returned; returning {shots}"
    others = shots - catalog.store.title_length(0)
    answer = catalog.neighbours(0, 1, 50, method="concat", exclude_title=True)
    assert len(answer["hits"]) == others and f"only {others} other titles' shots" in answer["note"]


# -- title -------------------------------------------------------------------------------------
def test_title_page_loads_every_thumbnail_and_text(page, video_app, video_catalog, tmp_path):
    open_view(page, video_app.url + "#/title/0")
    page.wait_for_selector("#shots .card")
    cards = page.locator("#shots .card")
    assert cards.count() == 6
    for i in range(cards.count()):
        cards.nth(i).scroll_into_view_if_needed()
    page.wait_for_function(
        "[...document.querySelectorAll('#shots img.thumb')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert page.locator("#shots img.thumb").count() == 6
    assert "Ever tried," in page.inner_text("#shots")
    assert page.locator("#strip > div").count() == 6
    assert page.locator("#player").count() == 1  # the source video is where extract left it


def test_clicking_a_shot_plays_it_and_shows_neighbours(page, video_app, tmp_path):
    open_view(page, video_app.url + "#/title/0")
    page.click("#shots .card[data-shot='2']")
    hits = hits_of(page)
    assert len(hits) == 10  # k
    assert hits[0] == (0, 2, 1.0)  # the shot itself, cosine 1
    assert all(a[2] >= b[2] for a, b in zip(hits, hits[1:], strict=False))
    # the video element seeked into the shot (3.04-5.48 s) through range requests
    page.wait_for_function(
        "(() => { const v = document.getElementById('player');"
        " return v.readyState >= 1 && v.currentTime >= 3.0; })()"
    )
    assert page.evaluate("document.getElementById('player').error") is None
    shoot(page, "browse_title.png", tmp_path)


def test_in_context_neighbours_and_switches(page, synth_app, store, emb):
    """The page shows what ``search.Searcher`` finds, for each switch."""
    title, shot = 3, 5
    open_view(page, synth_app.url + f"#/title/{title}/{shot}")
    page.wait_for_selector("#shots .swatch")  # no thumbnails: coloured swatches and strip
    assert page.locator("#strip > div").count() == store.title_length(title)

    def expected(method, exclude):
        found = search.Searcher(store, emb, method=method, backend="exact").search(
            title, shot, k=10, exclude_title=exclude
        )
        return [(h.title, h.shot, round(h.score, 4)) for h in found]

    def same(shown, wanted):
        assert [h[:2] for h in shown] == [h[:2] for h in wanted]
        np.testing.assert_allclose([h[2] for h in shown], [h[2] for h in wanted], atol=1e-4)

    shown = hits_of(page)
    assert shown[0] == (title, shot, 1.0)
    same(shown, expected("context", False))
    page.check("#exclude-title")
    page.wait_for_function(f"!document.querySelector('#hits .hit[data-title=\"{title}\"]')")
    shown = hits_of(page)
    assert all(t != title for t, _, _ in shown)
    same(shown, expected("context", True))
    page.check("#method-concat")
    page.wait_for_selector("#neighbours >> text=concat vectors")
    same(hits_of(page), expected("concat", True))


# -- say it --------------------------------------------------------------------------------------
def test_say_it_finds_the_shot_where_it_is_said(page, video_app, tmp_path):
    open_view(page, video_app.url + "#/say")
    for phrase, title_id, words in ((SPOKEN, "speech", ("tried", "failed")),
                                    ("we leave tonight", "subbed", ("leave",))):  # fmt: skip
        page.fill("#say-box", phrase)
        page.click("#say-go")
        page.wait_for_function(  # the first query loads the text encoder
            f"document.getElementById('say-results').dataset.phrase === {json.dumps(phrase)}",
            timeout=180_000,
        )
        first = page.locator("#say-results .say-hit").first
        assert first.locator(".hit-title").inner_text().startswith(title_id)
        line = first.locator(".line").inner_text().lower()
        assert any(w in line for w in words), line
        if title_id == "speech":
            shoot(page, "browse_say.png", tmp_path)


# -- report ----------------------------------------------------------------------------------------
def test_report_page_shows_the_table_and_plot(page, video_app, report_dir, tmp_path):
    results = json.loads((report_dir / "report.json").read_text())["tasks"]
    open_view(page, video_app.url + "#/report")
    table = page.locator("#report-table")
    methods = report_lib.methods_of(results)
    assert table.locator("thead th").all_inner_texts() == ["task", "metric", *methods]
    rows = table.locator("tbody tr").all_inner_texts()
    assert [r.split("\t")[:2] for r in rows] == [[t, results[t]["metric"]] for t in results]
    for row, task in zip(rows, results.values(), strict=True):
        cells = row.split("\t")[2:]
        for method, cell in zip(methods, cells, strict=True):
            value, (low, high) = task["results"][method], task["ci95"][method]
            assert cell == f"{value:.3f} ({low:.3f}–{high:.3f})"
    paired = page.locator("#paired-concat tbody tr").all_inner_texts()
    assert len(paired) == sum(len(t.get("vs_concat", {})) for t in results.values())
    page.wait_for_function("document.querySelector('img.plot').naturalWidth > 0")
    shoot(page, "browse_report.png", tmp_path)


# -- safety -----------------------------------------------------------------------------------------
def raw_get(server: BrowseServer, target: str, host: str = "127.0.0.1") -> int:
    """The status of GET ``target`` sent as is (no client-side normalization of ``..``)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.putrequest("GET", target, skip_host=True)
    connection.putheader("Host", host)
    connection.endheaders()
    status = connection.getresponse().status
    connection.close()
    return status


def test_only_files_the_catalog_names_are_served(page, video_app, video_catalog, tmp_path):
    assert raw_get(video_app, "/media/thumb/0/1") == 200
    assert raw_get(video_app, "/media/video/1") == 200
    refused = [
        "/media/thumb/0/../../../store/manifest.json",
        "/media/thumb/0/..%2f..%2fextract.json",
        "/media/thumb/%2e%2e/%2e%2e/extract.json",
        "/static/..%2fcatalog.py",
        "/static/%2e%2e%2f%2e%2e%2fcli.py",
        "/../../etc/passwd",
        "/media/video/2",
        "/media/video/-1",
        "/media/thumb/0/6",
        "/src/extract.json",
        "/store/manifest.json",
        "/%2e%2e/%2e%2e/etc/passwd",
    ]
    assert {t: raw_get(video_app, t) for t in refused} == dict.fromkeys(refused, 404)
    assert raw_get(video_app, "/api/info", host="attacker.example") == 400  # DNS rebinding
    # in the browser too
    assert (
        page.goto(video_app.url + "media/thumb/0/..%2f..%2f..%2fstore%2fmanifest.json").status
        == 404
    )
    # a thumbnail replaced by a symlink (to a real image elsewhere) is not served
    src = tmp_path / "src"
    shutil.copytree(video_catalog / "src", src)
    outside = tmp_path / "outside.jpg"
    shutil.copy(src / "thumbs" / "speech" / "00001.jpg", outside)
    (src / "thumbs" / "speech" / "00001.jpg").unlink()
    (src / "thumbs" / "speech" / "00001.jpg").symlink_to(outside)
    (src / "thumbs" / "subbed").rename(tmp_path / "subbed")
    (src / "thumbs" / "subbed").symlink_to(tmp_path / "subbed")  # a symlinked folder
    server = _start(Catalog(str(video_catalog / "store"), src=str(src)))
    try:
        assert raw_get(server, "/media/thumb/0/0") == 200
        assert raw_get(server, "/media/thumb/0/1") == 404
        assert raw_get(server, "/media/thumb/1/0") == 404
    finally:
        server.stop()


def test_damaged_text_is_said_not_hidden(video_catalog, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(video_catalog / "src", src)
    (src / "text" / "speech.json").write_text('{"source": "speech", "shots": ["cut short"')
    (src / "text" / "subbed.json").write_text('{"source": "x", "shots": ["one"]}')
    catalog = Catalog(str(video_catalog / "store"), src=str(src))
    assert "unreadable" in catalog.title(0)["text_note"]
    assert "has 1 shots, the store 6" in catalog.title(1)["text_note"]
    assert [s["text"] for s in catalog.title(1)["shots_detail"]] == [""] * 6


def test_a_moved_video_is_not_played(page, video_catalog, tmp_path):
    """A source video that changed since extract is neither served nor offered."""
    store = str(video_catalog / "store")
    catalog = Catalog(store)
    path, _ = catalog.video_state(0)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    try:
        server = _start(Catalog(store))
        try:
            assert raw_get(server, "/media/video/0") == 404
            open_view(page, server.url + "#/title/0")
            assert "changed since it was extracted" in page.inner_text("#video-note")
        finally:
            server.stop()
    finally:
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns - 10**9))


# -- start-up ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD_STARTS = {  # case: (arguments after --store, what the line names)
    "missing store": (["{tmp}/nope"], "not a complete shot store"),
    "an ingest source as the store": (["{src}"], "is an ingest source, not a shot store (make"),
    "a run folder as the store": (["{tmp}/run"], "run: is a run folder, not a shot store"),
    "damaged store": (["{tmp}/damaged"], "manifest"),
    "embeddings of another store": (["{store}", "--emb", "{emb}"], "not aligned"),
    "not an embedding store": (["{store}", "--emb", "{store}"], "not a complete embedding store"),
    "report folder without report.json": (["{store}", "--report", "{tmp}"], "report.json"),
    "src not a folder": (["{store}", "--src", "{store}/manifest.json"], "is not a folder"),
    "port in use": (["{store}", "--port", "{busy}"], "cannot listen there"),
    "port out of range": (["{store}", "--port", "65536"], "--port 65536: not a port"),
    "negative port": (["{store}", "--port", "-1"], "--port -1: not a port"),
}


@pytest.mark.parametrize("case", BAD_STARTS)
def test_bad_inputs_are_one_line_at_start_up(case, video_catalog, emb, tmp_path, capsys):
    """One line naming the input, exit code 2, nothing touched, before any server."""
    store = video_catalog / "store"
    shutil.copytree(store, tmp_path / "damaged")
    manifest = tmp_path / "damaged" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"shots"', '"shotz"', 1))
    (tmp_path / "run").mkdir()
    outputs.write_marker(tmp_path / "run", "run")  # what `mediafm train` leaves
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        names = {"tmp": tmp_path, "store": store, "emb": emb.root, "busy": busy.getsockname()[1],
                 "src": video_catalog / "src"}  # fmt: skip
        args, needle = BAD_STARTS[case]
        argv = ["browse", "--store", *(a.format(**names) for a in args)]
        line = assert_one_line_error(argv, capsys, video_catalog, needle)
    assert line.startswith("mediafm browse: error: ")


def test_the_command_serves_until_stopped(video_catalog):
    """`mediafm browse` prints its URL, serves, and stops on SIGINT (its handle)."""
    import signal
    import urllib.request

    port = _free_port()
    # a suite started in the background inherits SIGINT ignored: the child restores
    # Python's Ctrl-C handler, as a terminal would find it (no preexec_fn: JAX threads)
    start = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from mediafm_jax.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", start, "browse", "--store", str(video_catalog / "store"),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        assert line.startswith(f"browse: http://127.0.0.1:{port}/"), line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info") as reply:
            assert b'"titles":2' in reply.read()
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    assert code == 130, process.stderr.read()
    assert process.stderr.read().strip().splitlines()[-1] == "mediafm browse: interrupted"


def test_a_cached_index_is_used_but_never_written(store, emb, tmp_path, capsys):
    """The browser is read-only: it loads the faiss index `mediafm search` cached in
    EMB/search_index/, and otherwise builds one in memory."""
    pytest.importorskip("faiss")
    copy = tmp_path / "emb"
    shutil.copytree(emb.root, copy)
    cache = copy / "search_index"
    read = search.Searcher(store, str(copy), backend="faiss", index_cache="read")
    assert not cache.exists() and "in memory" in capsys.readouterr().err
    search.Searcher(store, str(copy), backend="faiss", index_cache=True)  # what search does
    assert (cache / "context.faiss").is_file()
    capsys.readouterr()
    loaded = search.Searcher(store, str(copy), backend="faiss", index_cache="read")
    assert "building" not in capsys.readouterr().err
    assert loaded.search(2, 3, k=5) == read.search(2, 3, k=5)
