"""mediafm search: exact and indexed nearest shots, clip queries, contact sheets, errors."""

import importlib.util
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import mediafm_jax
from mediafm_jax import cli, embed, search, sheet
from mediafm_jax.data import store as store_lib
from mediafm_jax.data.embeddings import EmbeddingStore
from mediafm_jax.data.store import ShotStore


@pytest.fixture(scope="module")
def emb(embedder, store, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("emb") / "emb")
    return embed.embed_store(embedder, store, out, progress=False)


@pytest.fixture(scope="module")
def context(store, emb):
    return search.Searcher(store, emb, method="context", backend="exact")


def brute_force(vectors, query, k, skip=None):
    """float64 reference: unit rows, cosine, order by (-score, row)."""
    v = np.asarray(vectors, np.float64)
    v = v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-12)
    q = np.asarray(query, np.float64)
    q = q / np.linalg.norm(q)
    scores = v @ q
    if skip is not None:
        scores[skip[0] : skip[1]] = -np.inf
    order = np.lexsort((np.arange(len(v)), -scores))[:k]
    return order, scores[order]


def assert_same_up_to_ties(ids, scores, ref_ids, ref_scores, tol=1e-5):
    np.testing.assert_allclose(scores, ref_scores, atol=tol)
    for i, (a, b) in enumerate(zip(ids, ref_ids, strict=True)):
        if a != b:  # only allowed where the reference has a tie at that rank
            assert abs(ref_scores[i] - scores[i]) < tol
    # the ranked lists hold the same rows, except possibly at a tie at the cut-off
    differing = set(ids.tolist()) ^ set(ref_ids.tolist())
    assert not differing or abs(ref_scores[-1] - scores[-1]) < tol


def test_the_query_shot_comes_back_first(store, context):
    rng = np.random.default_rng(0)
    for title in rng.choice(store.num_titles, 5, replace=False):
        shot = int(rng.integers(store.title_length(int(title))))
        hits = context.search(store.title_ids[title], shot, k=5)
        assert (hits[0].title, hits[0].shot) == (title, shot)
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


def test_exact_search_agrees_with_float64_brute_force(store, emb, context):
    raw = emb.shot_embeddings()
    rng = np.random.default_rng(1)
    for row in rng.choice(store.num_shots, 8, replace=False):
        title = int(np.searchsorted(store.offsets, row, side="right") - 1)
        shot = int(row - store.offsets[title])
        hits = context.search(store.title_ids[title], shot, k=10)
        ref_ids, ref_scores = brute_force(raw, raw[row], 10)
        ids = np.array([h.row for h in hits])
        assert_same_up_to_ties(ids, np.array([h.score for h in hits]), ref_ids, ref_scores)
        # --exclude-title: nothing from the query's title, and the reference agrees
        span = store.title_rows(title)
        hits = context.search(store.title_ids[title], shot, k=10, exclude_title=True)
        assert all(h.title != title for h in hits)
        ref_ids, ref_scores = brute_force(raw, raw[row], 10, skip=span)
        ids = np.array([h.row for h in hits])
        assert_same_up_to_ties(ids, np.array([h.score for h in hits]), ref_ids, ref_scores)


def test_chunked_exact_search_equals_one_chunk():
    rng = np.random.default_rng(2)
    x = search.unit_rows(rng.standard_normal((1000, 24)))
    q = search.unit_rows(rng.standard_normal((7, 24)))
    one = search.exact_search(x, q, 12, chunk_rows=5000)
    many = search.exact_search(x, q, 12, chunk_rows=64)
    np.testing.assert_array_equal(one[0], many[0])
    for i in range(7):
        ref_ids, ref_scores = brute_force(x, q[i], 12)
        assert_same_up_to_ties(one[0][i], one[1][i], ref_ids, ref_scores)


def test_clip_query_is_the_mean_of_its_unit_shots(store, emb, context):
    raw = emb.shot_embeddings()
    title, start, end = 4, 3, 9
    first = store.offsets[title]
    unit = raw[first + start : first + end] / np.linalg.norm(
        raw[first + start : first + end], axis=1, keepdims=True
    )
    hits = context.search(store.title_ids[title], clip=(start, end), k=10)
    ref_ids, ref_scores = brute_force(raw, unit.mean(0), 10)
    ids = np.array([h.row for h in hits])
    assert_same_up_to_ties(ids, np.array([h.score for h in hits]), ref_ids, ref_scores)


def clustered(n, dim, seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // 50, dim))
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim))
    return search.unit_rows(x)


@pytest.mark.skipif(not importlib.util.find_spec("faiss"), reason="[search] extra not installed")
def test_index_agrees_with_exact_search():
    # recall@10 >= 0.95 on 4000 clustered vectors (the benchmark measures ~0.99 at 100k).
    x = clustered(4000, 48, 3)
    queries = clustered(200, 48, 4)
    exact_ids, _ = search.exact_search(x, queries, 10)
    index = search.build_index(x, backend="faiss")
    assert index.name == "faiss-ivf"
    ids, scores = index.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids, strict=True)])
    assert recall >= 0.95
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, x[ids]), atol=1e-4)
    # exclusion still returns k rows, none of them excluded
    spans = [(0, 2000)] * len(queries)
    ids, _ = index.search(queries, 10, exclude=spans)
    assert ids.shape == (len(queries), 10) and (ids >= 2000).all()
    exact_ids, _ = search.exact_search(x, queries, 10, exclude=spans)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids, strict=True)])
    assert recall >= 0.95


def test_auto_backend_falls_back_with_a_line(monkeypatch, capsys):
    x = clustered(500, 8, 5)
    monkeypatch.setattr(search, "INDEX_MIN_ROWS", 100)
    monkeypatch.setattr(search, "index_available", lambda: False)
    index = search.build_index(x, backend="auto")
    assert index.name == "exact"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "faiss is not installed" in err[0]
    assert search.build_index(x[:50], backend="auto").name == "exact"  # small: exact, silently


def test_concat_and_context_differ_and_both_are_valid(store, emb, context):
    concat = search.Searcher(store, emb, method="concat", backend="exact")
    # concat vectors are the probe's uncontextualized input rows (unit-normed raw columns)
    title = 2
    rows = store.read_rows(*store.title_rows(title)).astype(np.float64)
    ref = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    np.testing.assert_allclose(concat.vectors_nd[slice(*store.title_rows(title))], ref, atol=1e-4)
    differ = 0
    for shot in (1, 7, 20):
        a = concat.search(store.title_ids[title], shot, k=10)
        b = context.search(store.title_ids[title], shot, k=10)
        assert a[0].row == b[0].row == store.offsets[title] + shot
        assert a[0].score == pytest.approx(1.0, abs=1e-4)
        differ += [h.row for h in a] != [h.row for h in b]
    assert differ > 0


def test_notebook_api_matches_the_free_function(tiny_run, store, emb, context, embedder):
    title = store.title_ids[1]
    expected = context.search(title, 5, k=6)
    model = mediafm_jax.load(tiny_run)
    assert model.search(store, emb, title, 5, k=6) == expected
    assert search.search(store.root, emb.root, title, 5, k=6) == expected
    # without an embedding store the run computes the same embeddings
    computed = embedder.search(store, None, title, 5, k=6)
    assert [h.row for h in computed] == [h.row for h in expected]
    np.testing.assert_allclose([h.score for h in computed], [h.score for h in expected], atol=1e-5)


# -- the command line and the sheet -----------------------------------------------------------
def color_of(title_index, shot):
    return (
        (37 * title_index + 60) % 256,
        (91 * shot + 20) % 256,
        (53 * (title_index + shot)) % 256,
    )


def write_thumbs(src, store, shots):
    for title, shot in shots:
        folder = src / "thumbs" / store.title_ids[title]
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (160, 90), color_of(title, shot)).save(folder / f"{shot}.jpg", quality=95)


def search_args(store, emb, *extra):
    return ["search", "--emb", emb.root, "--store", store.root, *extra]


def test_cli_prints_hits_and_json(store, emb, capsys):
    title = store.title_ids[3]
    assert cli.main(search_args(store, emb, "--title", title, "--shot", "4", "--k", "3")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 + 3 and title in lines[0] and "exact" in lines[0]
    assert lines[2].split()[:3] == ["1", title, "4"]
    argv = search_args(store, emb, "--title", title, "--clip", "2:6", "--k", "4", "--json")
    assert cli.main([*argv, "--method", "concat", "--exclude-title"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["method"] == "concat" and record["query"]["end"] == 6
    assert len(record["hits"]) == 4 and all(h["title_id"] != title for h in record["hits"])
    times = store.shot_times()
    hit = record["hits"][0]
    assert hit["start_s"] == pytest.approx(float(times[hit["row"], 0]))


def test_sheet_of_thumbnails_has_a_panel_per_shot(store, emb, context, tmp_path, capsys):
    title, shot, k = store.title_ids[5], 3, 6
    hits = context.search(title, shot, k=k, exclude_title=True)
    shots = [(5, shot)] + [(h.title, h.shot) for h in hits]
    src = tmp_path / "src"
    write_thumbs(src, store, shots[:-1])  # the last neighbour has no thumbnail
    out = tmp_path / "sheet.png"
    argv = search_args(store, emb, "--title", title, "--shot", str(shot), "--k", str(k))
    assert cli.main([*argv, "--exclude-title", "--sheet", str(out), "--src", str(src)]) == 0
    assert f"{k + 1} panels" in capsys.readouterr().err
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == sheet.sheet_size(k + 1)
        pixels = np.asarray(image.convert("RGB")).astype(int)
    for index, (t, s) in enumerate(shots):
        left, top, right, bottom = sheet.panel_box(index, k + 1)
        centre = pixels[(top + bottom) // 2, (left + right) // 2]
        expected = sheet.MISSING if index == len(shots) - 1 else color_of(t, s)
        assert np.abs(centre - np.array(expected)).max() <= 6, (index, centre, expected)
    # a rerun may replace a sheet it wrote, without --overwrite
    assert cli.main([*argv, "--sheet", str(out), "--src", str(src)]) == 0
    assert sheet.is_our_png(out)


def test_sheet_without_thumbnails_is_a_timeline(store, emb, tmp_path, capsys):
    out = tmp_path / "timeline.png"
    argv = search_args(store, emb, "--title", store.title_ids[0], "--shot", "2", "--k", "5")
    (tmp_path / "src").mkdir()
    assert cli.main([*argv, "--sheet", str(out), "--src", str(tmp_path / "src")]) == 0
    assert "timeline" in capsys.readouterr().err
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 300
    assert sheet.is_our_png(out)
    assert not list(tmp_path.glob(".*tmp*"))
    # the store names its source (the synthetic catalog, which has no thumbnails)
    assert ShotStore(store.root).manifest["source"]


def test_bad_input_exits_2_with_one_line(store, emb, tmp_path, capsys):
    title = store.title_ids[0]
    length = store.title_length(0)
    foreign = tmp_path / "notes.png"
    foreign.write_text("not ours")
    misaligned = tmp_path / "emb_other"
    shutil.copytree(emb.root, misaligned)
    manifest = dict(emb.manifest, title_ids=list(reversed(emb.title_ids)))
    store_lib.write_manifest(str(misaligned), manifest)
    cases = {
        "unknown title id 'nope'": ["--title", "nope", "--shot", "0"],
        "out of range": ["--title", title, "--shot", str(length)],
        "k=0: need at least 1 neighbour": ["--title", title, "--shot", "0", "--k", "0"],
        "k=-3: need at least 1 neighbour": ["--title", title, "--shot", "0", "--k", "-3"],
        "clip 5:2 out of range": ["--title", title, "--clip", "5:2"],
        "expected START:END": ["--title", title, "--clip", "5"],
        "points into the input": ["--title", title, "--shot", "0", "--sheet", f"{store.root}/x.png"],
        "not a sheet written by mediafm search": [
            "--title", title, "--shot", "0", "--sheet", str(foreign)
        ],
        f"--src {foreign}: is not a folder": ["--title", title, "--shot", "0", "--src", str(foreign)],
    }  # fmt: skip
    for expected, extra in cases.items():
        assert cli.main(search_args(store, emb, *extra)) == 2, expected
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (expected, lines)
    assert foreign.read_text() == "not ours"
    argv = [
        "search",
        "--emb",
        str(misaligned),
        "--store",
        store.root,
        "--title",
        title,
        "--shot",
        "0",
    ]
    assert cli.main(argv) == 2
    assert "not aligned" in capsys.readouterr().err
    # --overwrite lets the sheet replace a file we did not write
    assert (
        cli.main(
            search_args(store, emb, *cases["not a sheet written by mediafm search"], "--overwrite")
        )
        == 0
    )
    assert sheet.is_our_png(foreign)


@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_k_beyond_the_catalog_is_capped_with_a_line(store, emb, context, backend, tmp_path, capsys):
    """Every shot (or every other title's shot) once, best first, and one line saying so."""
    if backend == "faiss" and not importlib.util.find_spec("faiss"):
        pytest.skip("[search] extra not installed")
    shutil.copytree(emb.root, tmp_path / "emb")  # the faiss index is cached beside the vectors
    emb = EmbeddingStore(str(tmp_path / "emb"))
    title, shot = store.title_ids[2], 5
    first, stop = store.title_rows(2)
    for exclude, available in [(False, store.num_shots), (True, store.num_shots - (stop - first))]:
        extra = ["--exclude-title"] if exclude else []
        argv = search_args(store, emb, "--title", title, "--shot", str(shot), "--k", "1000000")
        assert cli.main([*argv, "--json", "--backend", backend, *extra]) == 0
        captured = capsys.readouterr()
        hits = json.loads(captured.out)["hits"]
        rows = [h["row"] for h in hits]
        expected = set(range(store.num_shots)) - (set(range(first, stop)) if exclude else set())
        assert len(rows) == available and set(rows) == expected
        ref_ids, ref_scores = brute_force(context.vectors_nd, context.vectors_nd[first + shot], 20,
                                          skip=(first, stop) if exclude else None)  # fmt: skip
        scores = np.array([h["score"] for h in hits[:20]])
        assert_same_up_to_ties(np.array(rows[:20]), scores, ref_ids, ref_scores)
        lines = [x for x in captured.err.splitlines() if "index" not in x]  # faiss: cache lines
        assert lines == [f"search: k=1000000: only {available} "
                         f"{'other titles' + chr(39) + ' shots' if exclude else 'shots'} "
                         f"can be returned; returning {available}"]  # fmt: skip
    # k within the catalog: no line
    assert cli.main(search_args(store, emb, "--title", title, "--shot", "1", "--k", "3")) == 0
    assert capsys.readouterr().err == ""


def test_capped_k_is_one_rule():
    assert search.capped_k(5, 10) == (5, "")
    assert search.capped_k(10, 10) == (10, "")
    assert search.capped_k(11, 10) == (10, "k=11: only 10 shots can be returned; returning 10")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(search.SearchError, match="need at least 1 neighbour"):
            search.capped_k(bad, 10)


@pytest.mark.skipif(not importlib.util.find_spec("faiss"), reason="[search] extra not installed")
def test_index_cache_is_built_once_and_reused(store, emb, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "emb"
    shutil.copytree(emb.root, copy)
    monkeypatch.setattr(search, "INDEX_MIN_ROWS", 100)  # the tiny catalog takes the index path
    first = search.Searcher(store, str(copy), index_cache=True)
    assert first.index.name == "faiss-ivf" and "building an IVF index" in capsys.readouterr().err
    saved = copy / "search_index" / "context.faiss"
    stamp = saved.stat().st_mtime_ns
    again = search.Searcher(store, str(copy), index_cache=True)
    assert capsys.readouterr().err == "" and saved.stat().st_mtime_ns == stamp
    title = store.title_ids[2]
    exact = search.Searcher(store, emb, backend="exact").search(title, 4, k=10)
    got = again.search(title, 4, k=10)
    assert got[0].row == exact[0].row
    assert len({h.row for h in got} & {h.row for h in exact}) >= 9
    # other vectors (concat) get their own file; a changed key rebuilds
    search.Searcher(store, str(copy), method="concat", index_cache=True)
    assert (copy / "search_index" / "concat.faiss").is_file()
    meta = saved.with_suffix(".json")
    meta.write_text(json.dumps({"stale": True}))
    search.Searcher(store, str(copy), index_cache=True)
    assert "building" in capsys.readouterr().err and "stale" not in meta.read_text()
