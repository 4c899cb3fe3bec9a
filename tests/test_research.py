"""Issue 14's switches: span masking, the title summary in [GLOBAL], the recorded readout."""

import dataclasses

import numpy as np
import pytest

from mediafm_jax import masking, readouts


def _selectable(rng: np.random.Generator, b: int, w: int) -> np.ndarray:
    """Rows of varied length (padding suffix) with scattered content-less shots."""
    lengths = rng.integers(1, w + 1, b)
    lengths[:3] = (w, 1, 5)
    valid = np.arange(w)[None, :] < lengths[:, None]
    content = rng.random((b, w)) > 0.1
    out = valid & content
    out[3] = False  # a silent window: nothing selectable, nothing selected
    return out


def _runs(mask_bw: np.ndarray, selectable_bw: np.ndarray) -> list[int]:
    """Lengths of maximal runs of selected shots, counted among the selectable ones."""
    lengths = []
    for mask, sel in zip(mask_bw, selectable_bw, strict=True):
        run = 0
        for chosen in mask[sel]:
            if chosen:
                run += 1
            elif run:
                lengths.append(run)
                run = 0
        if run:
            lengths.append(run)
    return lengths


def _reference_spans(
    rng: np.random.Generator, selectable_bw: np.ndarray, ratio: float, mean: float
) -> np.ndarray:
    """The slow loop: cut each row's selectable shots into geometric runs, take runs in a
    random order until the budget is met, the last one cut short."""
    out = np.zeros_like(selectable_bw)
    for row, sel in enumerate(selectable_bw):
        positions = np.flatnonzero(sel)
        if len(positions) == 0:
            continue
        budget = int(masking.num_targets(len(positions), ratio))
        runs, at = [], 0
        while at < len(positions):
            length = int(rng.geometric(1.0 / mean))
            runs.append(positions[at : at + length])
            at += length
        taken = 0
        for index in rng.permutation(len(runs)):
            take = min(len(runs[index]), budget - taken)
            out[row, runs[index][:take]] = True
            taken += take
            if taken == budget:
                break
    return out


@pytest.mark.parametrize("mean", [3.0, 6.0])
def test_span_masking_budget_and_run_lengths_match_a_reference_loop(mean):
    b, w, ratio = 3000, 128, 0.2
    selectable = _selectable(np.random.default_rng(1), b, w)
    targets = masking.draw_targets(np.random.default_rng(2), selectable, ratio, span_mean=mean)
    k = masking.max_targets(w, ratio)
    assert targets.shape == (b, k)
    mask = np.zeros_like(selectable)
    for row, t in enumerate(targets):
        mask[row, t[t >= 0]] = True
    # The same budget as single-shot masking, only among selectable shots.
    count = selectable.sum(1)
    expected = np.where(count > 0, masking.num_targets(count, ratio), 0)
    np.testing.assert_array_equal(mask.sum(1), expected)
    assert not (mask & ~selectable).any()
    # Run lengths: the same distribution as the slow loop's (independent draws).
    ours = np.bincount(_runs(mask, selectable), minlength=200)[:200]
    ref_mask = _reference_spans(np.random.default_rng(3), selectable, ratio, mean)
    np.testing.assert_array_equal(ref_mask.sum(1), expected)
    ref = np.bincount(_runs(ref_mask, selectable), minlength=200)[:200]
    p, q = ours / ours.sum(), ref / ref.sum()
    assert 0.5 * np.abs(p - q).sum() < 0.03
    lengths = np.arange(200)
    mean_ours, mean_ref = (p * lengths).sum(), (q * lengths).sum()
    assert abs(mean_ours - mean_ref) < 0.03 * mean_ref
    # Runs are really longer than single-shot masking's (whose runs are ~1.2 shots).
    single = masking.draw_targets(np.random.default_rng(2), selectable, ratio)
    single_mask = np.zeros_like(selectable)
    for row, t in enumerate(single):
        single_mask[row, t[t >= 0]] = True
    assert mean_ours > 0.8 * mean > np.mean(_runs(single_mask, selectable)) + 1.0


def test_span_masking_is_a_pure_function_of_the_generator():
    selectable = _selectable(np.random.default_rng(0), 16, 64)
    a = masking.draw_targets(np.random.default_rng([7, 1, 5]), selectable, 0.2, span_mean=4.0)
    b = masking.draw_targets(np.random.default_rng([7, 1, 5]), selectable, 0.2, span_mean=4.0)
    c = masking.draw_targets(np.random.default_rng([7, 1, 6]), selectable, 0.2, span_mean=4.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="span_mean"):
        masking.draw_span_mask(np.random.default_rng(0), selectable, 0.2, 0.5)


# -- title summary in [GLOBAL] -------------------------------------------------------------
def test_ingest_stores_the_title_mean_of_fused_shots(tiny_source, tiny_store):
    from mediafm_jax.data import store as store_lib

    store = store_lib.ShotStore(tiny_store)
    assert store.has_title_mean
    names = [m.name for m in store.modalities]
    for index, title_id in enumerate(store.title_ids):
        with np.load(tiny_source / "shots" / f"{title_id}.npz") as data:
            # the stored fp16 values, fused in float64: concatenate -> unit norm -> mean
            x = np.concatenate([data[n].astype(np.float16) for n in names], 1).astype(np.float64)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        content = norm[:, 0] > 0
        expected = (x[content] / (norm[content] + 1e-6)).mean(0)
        np.testing.assert_allclose(store.title_mean[index], expected, rtol=1e-6, atol=1e-7)
    both = store.global_vectors("both")
    assert both.shape == (store.num_titles, store.title_dim + store.num_features)
    np.testing.assert_array_equal(both[:, store.title_dim :], store.title_mean)
    # The integrity manifest lists the new array's files, and a damaged one is caught.
    listed = [e["path"] for e in store.manifest["files"]]
    assert any(p.startswith(store_lib.TITLE_MEAN + "/") for p in listed)


def test_a_store_without_title_mean_fails_only_when_asked(tiny_store, tmp_path):
    import shutil

    from mediafm_jax.data import store as store_lib
    from mediafm_jax.errors import ConfigError, StoreError

    old = tmp_path / "old_store"
    shutil.copytree(tiny_store, old)
    manifest = store_lib.read_manifest(str(old))
    shutil.rmtree(old / store_lib.TITLE_MEAN)
    body = {k: v for k, v in manifest.items() if k not in ("files", store_lib.TITLE_MEAN)}
    store_lib.write_manifest(str(old), body, progress=False)  # as an older ingest wrote it
    store = store_lib.ShotStore(str(old))
    assert not store.has_title_mean
    np.testing.assert_array_equal(store.global_vectors(), store.title_embedding)
    with pytest.raises(StoreError, match=r"no title_mean array .* --overwrite"):
        store.global_vectors("title_mean")
    with pytest.raises(ConfigError, match="global_input"):
        store.global_vectors("synopsis")


@pytest.mark.slow(40)
def test_training_and_embedding_with_the_title_mean_in_global(tiny_store, tmp_path):
    import jax

    from mediafm_jax import config as config_lib
    from mediafm_jax import embed, presets, train
    from mediafm_jax.data.store import ShotStore

    config = config_lib.apply_overrides(
        presets.tiny(),
        [
            "train.steps=4",
            "checkpoint.async_save=false",
            "model.max_shots=32",
            "model.global_input=both",
            "objective.span_mean_shots=4",
            "objective.contrastive_weight=0.5",
        ],
    )
    train.train(config, tiny_store, tmp_path / "run", devices=jax.devices()[:1])
    store = ShotStore(tiny_store)
    embedder = embed.Embedder(tmp_path / "run", devices=jax.devices()[:1])
    assert embedder.dims.title == store.title_dim + store.num_features
    rows = embedder.embed_title(store, 0)
    assert rows.shape == (store.title_length(0), 32) and np.isfinite(rows).all()


# -- contrastive term -------------------------------------------------------------------------
def test_info_nce_matches_a_float64_loop():
    import jax.numpy as jnp

    from mediafm_jax.objective import info_nce

    rng = np.random.default_rng(0)
    pred, target = rng.standard_normal((2, 3, 4, 5))
    weight = (rng.random((3, 4)) > 0.3).astype(np.float64)
    got = float(info_nce(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(weight), 0.2))
    p = pred.reshape(12, 5) / np.linalg.norm(pred.reshape(12, 5), axis=1, keepdims=True)
    t = target.reshape(12, 5) / np.linalg.norm(target.reshape(12, 5), axis=1, keepdims=True)
    w = weight.reshape(12)
    losses = []
    for i in np.flatnonzero(w):
        logits = np.array([p[i] @ t[j] / 0.2 for j in np.flatnonzero(w)])
        own = p[i] @ t[i] / 0.2
        losses.append(np.log(np.exp(logits).sum()) - own)
    np.testing.assert_allclose(got, np.mean(losses), rtol=1e-5)


# -- BaSSL boundary term (issue 23) ---------------------------------------------------------
def _best_split_loop(rows: np.ndarray) -> int:
    """The split of ``rows`` into two contiguous parts with the least within-part squared
    distance to the part means; returns the left part's last index."""
    costs = []
    for j in range(1, len(rows)):
        parts = (rows[:j], rows[j:])
        costs.append(sum(((p - p.mean(0)) ** 2).sum() for p in parts))
    return int(np.argmin(costs))


def test_pseudo_boundaries_match_a_numpy_loop():
    import jax.numpy as jnp

    from mediafm_jax.objective import pseudo_boundaries

    rng = np.random.default_rng(0)
    span, b, w, f = 6, 3, 20, 5  # 3 spans per window, 2 shots left over
    x = rng.standard_normal((b, w, f))
    x[:, :, :2] += np.repeat(rng.standard_normal((b, 4, 2)) * 2, 5, axis=1)  # some scenes
    valid = np.ones((b, w), bool)
    valid[2, 10:] = False  # padding: the third window's second and third spans are unusable
    last, usable = pseudo_boundaries(jnp.asarray(x), jnp.asarray(valid), span)
    assert last.shape == usable.shape == (b, w // span)
    for i in range(b):
        for s in range(w // span):
            rows = x[i, s * span : (s + 1) * span]
            assert bool(usable[i, s]) == valid[i, s * span : (s + 1) * span].all()
            assert int(last[i, s]) == _best_split_loop(rows)


def _obvious_windows(b: int, w: int, f: int, span: int, seed: int = 0):
    """Windows whose every span is two blocks of near-identical rows, cut anywhere."""
    rng = np.random.default_rng(seed)
    x = np.zeros((b, w, f), np.float32)
    cuts = rng.integers(1, span, (b, w // span))
    for i in range(b):
        for s, cut in enumerate(cuts[i]):
            a, c = rng.standard_normal((2, f))
            x[i, s * span : s * span + cut] = a
            x[i, s * span + cut : (s + 1) * span] = c
    x += 0.01 * rng.standard_normal(x.shape)
    return x, cuts - 1  # the last shot before each cut


def test_boundary_loss_is_zero_when_the_obvious_split_is_predicted():
    import jax.numpy as jnp

    from mediafm_jax.objective import boundary_loss

    span = 8
    x, last = _obvious_windows(2, 24, 6, span)
    valid = jnp.ones((2, 24), bool)
    right = np.full((2, 24), -30.0, np.float32)
    for i in range(2):
        for s, j in enumerate(last[i]):
            right[i, s * span + j] = 30.0
    loss, hit = boundary_loss(jnp.asarray(right), jnp.asarray(x), valid, span)
    assert float(loss) < 1e-6 and float(hit) == 1.0
    loss, _ = boundary_loss(jnp.zeros((2, 24)), jnp.asarray(x), valid, span)
    np.testing.assert_allclose(float(loss), np.log(2.0), rtol=1e-6)
    loss, hit = boundary_loss(jnp.asarray(-right), jnp.asarray(x), valid, span)
    assert float(loss) > 10 and float(hit) == 0.0


def _split_share_loop(rows: np.ndarray) -> float:
    """Between-part over total sum of squares of the best split (the least within-part
    sum of squares), from the definitions."""
    total = ((rows - rows.mean(0)) ** 2).sum()
    within = min(
        sum(((p - p.mean(0)) ** 2).sum() for p in (rows[:j], rows[j:])) for j in range(1, len(rows))
    )
    return (total - within) / total


def _bce(logit: float, label: float) -> float:
    return float(np.log1p(np.exp(-abs(logit))) + max(logit, 0.0) - logit * label)


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9])
def test_pseudo_boundaries_only_where_the_split_is_strong_match_a_numpy_loop(keep):
    """``boundary_keep``: spans whose best split explains the most of their spread (the
    batch's top share, over usable spans) keep their positive; the rest are all-negative
    spans; the loss and the hit rate follow, as a loop computes them."""
    import jax.numpy as jnp

    from mediafm_jax.objective import boundary_loss, pseudo_boundaries, split_share

    rng = np.random.default_rng(1)
    span, b, w, f = 6, 3, 20, 5
    x = rng.standard_normal((b, w, f))
    x[:, :, :2] += np.repeat(rng.standard_normal((b, 4, 2)) * 2, 5, axis=1)  # some scenes
    valid = np.ones((b, w), bool)
    valid[2, 10:] = False  # two unusable spans
    logit = rng.standard_normal((b, w)).astype(np.float32) * 2
    share, usable = split_share(jnp.asarray(x), jnp.asarray(valid), span)
    last, _ = pseudo_boundaries(jnp.asarray(x), jnp.asarray(valid), span)
    loop_share = np.zeros((b, w // span))
    for i in range(b):
        for s in range(w // span):
            loop_share[i, s] = _split_share_loop(x[i, s * span : (s + 1) * span])
    usable = np.asarray(usable)
    np.testing.assert_allclose(np.asarray(share)[usable], loop_share[usable], rtol=1e-4)
    threshold = np.quantile(loop_share[usable], 1.0 - keep)
    strong = usable & (loop_share >= threshold)
    assert 0 < strong.sum() < usable.sum()
    losses, hits = [], []
    for i, s in zip(*np.nonzero(usable), strict=True):
        z = logit[i, s * span : (s + 1) * span].astype(np.float64)
        if strong[i, s]:
            j = int(last[i, s])
            negatives = [_bce(z[k], 0.0) for k in range(span) if k != j]
            losses.append(0.5 * (_bce(z[j], 1.0) + np.mean(negatives)))
            hits.append(int(np.argmax(z)) == j)
        else:
            losses.append(np.mean([_bce(v, 0.0) for v in z]))
    loss, hit = boundary_loss(jnp.asarray(logit), jnp.asarray(x), jnp.asarray(valid), span, keep)
    np.testing.assert_allclose(float(loss), np.mean(losses), rtol=1e-5)
    np.testing.assert_allclose(float(hit), np.mean(hits), rtol=1e-6)


def test_a_span_without_a_cut_explains_little_with_its_best_split():
    import jax.numpy as jnp

    from mediafm_jax.objective import split_share

    x, _ = _obvious_windows(2, 24, 6, 8)
    flat = np.random.default_rng(3).standard_normal((2, 24, 6)).astype(np.float32)
    ones = jnp.ones((2, 24), bool)
    cut, _ = split_share(jnp.asarray(x), ones, 8)
    none, _ = split_share(jnp.asarray(flat), ones, 8)
    assert float(cut.min()) > 0.99 and float(none.max()) < 0.6


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-6)


@pytest.mark.parametrize("phase, keep", [(None, 1.0), (2, 1.0), (None, 0.5), (2, 0.5)])
def test_scene_match_loss_matches_a_numpy_loop(phase, keep):
    """Shot-to-scene matching: each shot of a usable span against its span's two parts
    (split where the loop's best split is; its own part positive) and every pseudo-scene
    of the other windows, none of its own window's other spans; with a phase, the spans
    start at that shot, one fewer; with keep < 1 a span whose split is not in the top
    share is one pseudo-scene."""
    import jax
    import jax.numpy as jnp

    from mediafm_jax.objective import scene_match_loss

    rng = np.random.default_rng(2)
    span, b, w, f, h = 6, 3, 20, 5, 7
    x = rng.standard_normal((b, w, f))
    x[:, :, :2] += np.repeat(rng.standard_normal((b, 4, 2)) * 2, 5, axis=1)  # some scenes
    state = rng.standard_normal((b, w, h))
    valid = np.ones((b, w), bool)
    valid[2, 10:] = False  # two unusable spans
    scenes = []  # (window, span, first shot, end, prototype)
    first = 0 if phase is None else phase
    spans = [
        (i, s, first + s * span, first + (s + 1) * span)
        for i in range(b)
        for s in range(w // span - (phase is not None))
        if valid[i, first + s * span : first + (s + 1) * span].all()
    ]
    share = [_split_share_loop(x[i, start:stop]) for i, _, start, stop in spans]
    threshold = np.quantile(share, 1.0 - keep)
    for (i, s, start, stop), strong in zip(spans, np.array(share) >= threshold, strict=True):
        cut = start + _best_split_loop(x[i, start:stop]) + 1
        for lo, hi in ((start, cut), (cut, stop)) if strong else ((start, stop),):
            scenes.append((i, s, lo, hi, _unit(_unit(state[i, lo:hi]).mean(0))))
    losses, hits = [], []
    for i, s, lo, hi, _ in scenes:
        for k in range(lo, hi):
            candidates = [c for c in scenes if c[0] != i or c[1] == s]
            logits = np.array([_unit(state[i, k]) @ c[4] for c in candidates]) / 0.2
            own = [c[:3] for c in candidates].index((i, s, lo))
            losses.append(np.log(np.exp(logits).sum()) - logits[own])
            hits.append(int(np.argmax(logits)) == own)
    inputs = jnp.asarray(x), jnp.asarray(valid)
    # one jitted program (op by op, each phase and keep compiled every primitive anew)
    (loss, hit), grad = jax.jit(
        jax.value_and_grad(
            lambda st, x, valid: scene_match_loss(st, x, valid, span, 0.2, phase, keep),
            has_aux=True,
        )
    )(jnp.asarray(state), *inputs)
    np.testing.assert_allclose(float(loss), np.mean(losses), rtol=1e-5)
    np.testing.assert_allclose(float(hit), np.mean(hits), rtol=1e-6)
    # an uncut span's empty part is no candidate, and no NaN in the gradient either
    assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).max()) > 0


def test_scene_match_is_won_by_states_that_group_as_the_input_does():
    """States equal to two-block inputs find their own pseudo-scene every time, and pay
    far less than states of noise."""
    import jax.numpy as jnp

    from mediafm_jax.objective import scene_match_loss

    x, _ = _obvious_windows(2, 24, 6, 8)
    ones = jnp.ones((2, 24), bool)
    grouped, hit = scene_match_loss(jnp.asarray(x), jnp.asarray(x), ones, 8, 0.1)
    noise = np.random.default_rng(4).standard_normal((2, 24, 6)).astype(np.float32)
    scattered, _ = scene_match_loss(jnp.asarray(noise), jnp.asarray(x), ones, 8, 0.1)
    assert float(hit) == 1.0 and float(grouped) < 0.2 < 1.0 < float(scattered)


@pytest.mark.slow(60)
def test_boundary_term_trains_the_same_on_a_mesh_and_its_run_embeds(tiny_store, tmp_path):
    """Both structure terms at once, with the strong-splits filter (keep < 1): every
    metric equal on one device and on a 2 x 2 x 2 mesh."""
    import json

    import jax

    from mediafm_jax import config as config_lib
    from mediafm_jax import embed, presets, train
    from mediafm_jax.data.store import ShotStore

    common = [
        "train.steps=4",
        "train.log_every=1",
        "checkpoint.async_save=false",
        "model.max_shots=32",
        "objective.boundary_weight=1.0",
        "objective.boundary_span=8",
        "objective.boundary_keep=0.5",
        "objective.scene_match_weight=0.5",  # shot-to-scene matching beside it
    ]
    config = config_lib.apply_overrides(presets.tiny(), common)
    train.train(config, tiny_store, tmp_path / "one", devices=jax.devices()[:1])
    sharded = ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"]
    train.train(config_lib.apply_overrides(config, sharded), tiny_store, tmp_path / "eight")
    rows = {
        name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").open()]
        for name in ("one", "eight")
    }
    assert all(r["boundary_bce"] > 0 for r in rows["one"])
    keys = ("loss", "boundary_bce", "scene_match", "scene_match_hit")
    for key in keys:
        np.testing.assert_allclose(
            [r[key] for r in rows["eight"]], [r[key] for r in rows["one"]], rtol=2e-5
        )
    embedder = embed.Embedder(tmp_path / "one", devices=jax.devices()[:1])
    assert np.isfinite(embedder.embed_title(ShotStore(tiny_store), 0)).all()


# -- readout -----------------------------------------------------------------------------------
def test_recorded_readout_is_the_default_and_last_input_carries_the_input(tiny_run, tiny_store):
    import jax

    from mediafm_jax import embed, run
    from mediafm_jax.data.store import ShotStore
    from mediafm_jax.errors import StoreError

    store = ShotStore(tiny_store)
    devices = jax.devices()[:1]
    plain = embed.Embedder(tiny_run, devices=devices)
    assert plain.layers == "last"  # no readout.json: today's default
    record = run.record_readout(tiny_run, "last+input", {"split": "val"})
    try:
        chosen = embed.Embedder(tiny_run, devices=devices)
        assert chosen.layers == "last+input"
        assert chosen.shot_dim == plain.hidden_size + store.num_features
        rows = chosen.embed_title(store, 1)
        np.testing.assert_allclose(rows[:, : plain.hidden_size], plain.embed_title(store, 1))
        x = store.read_rows(*store.title_rows(1)).astype(np.float64)
        fused = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)
        np.testing.assert_allclose(rows[:, plain.hidden_size :], fused, atol=1e-5)
        assert embed.Embedder(tiny_run, layers="mean", devices=devices).layers == "mean"
        record.write_text('{"layers": "first"}')
        with pytest.raises(StoreError, match="readout.json: layers 'first'"):
            embed.Embedder(tiny_run, devices=devices)
    finally:
        record.unlink()


@pytest.mark.parametrize("layers", ["last+title", "last+input+title"])
def test_title_readout_appends_the_whole_title_mean_of_the_shot_readout(
    tiny_run, tiny_store, layers
):
    """ "+title": each row = [the readout without it, its float64 mean over the whole
    title]; a title several windows long is summarized whole; an isolated clip's summary
    is the clip's own mean."""
    import jax

    from mediafm_jax import embed
    from mediafm_jax.data.store import ShotStore

    store = ShotStore(tiny_store)
    devices = jax.devices()[:1]
    title = int(np.argmax([store.title_length(t) for t in range(store.num_titles)]))
    base = embed.Embedder(tiny_run, layers=layers.removesuffix("+title"), devices=devices)
    with_title = embed.Embedder(tiny_run, layers=layers, devices=devices)
    assert store.title_length(title) > 2 * base.max_shots  # stitched from several windows
    assert with_title.shot_dim == 2 * base.shot_dim
    own = base.embed_title(store, title).astype(np.float64)
    rows = with_title.embed_title(store, title)
    np.testing.assert_allclose(rows[:, : base.shot_dim], own, atol=1e-6)
    summary = np.broadcast_to(own.mean(0), own.shape)
    np.testing.assert_allclose(rows[:, base.shot_dim :], summary, atol=1e-5)
    clip = base.embed_clips(store, [(title, 5, 17)])[0].astype(np.float64)
    alone = with_title.embed_clips(store, [(title, 5, 17)])[0]
    np.testing.assert_allclose(alone, np.concatenate([clip, clip]), atol=1e-5)


@pytest.mark.slow(60)
def test_choose_readout_records_the_best_validation_mean(
    tiny_run, tiny_store, tiny_source, tmp_path
):
    """The choice equals the val means of full ``run_probes(on="val")`` reports, and the
    winner becomes the run's default readout."""
    import jax

    from mediafm_jax import embed, probe, run
    from mediafm_jax.data.store import ShotStore

    store = ShotStore(tiny_store)
    tasks, clips = tiny_source / "probes.json", tiny_source / "clips.jsonl"
    # one encoder pass per encoder readout (last, last+input), the parts added after it
    candidates = ("last", "distance+recur", "last+input+title")
    try:
        best, scores = probe.choose_readout(tiny_run, store, tasks, clips, candidates)
        assert set(scores) == set(candidates) and best == max(scores, key=scores.get)
        for layers in candidates:
            embedder = embed.Embedder(tiny_run, layers=layers)  # all devices, as chosen
            # the same titles embedded in the same batches: the same rows to the last bit
            val = probe.run_probes(
                embedder, store, tasks, clips, tmp_path / layers, bootstrap=0, on="val"
            )
            means = [r["results"]["mediafm_context"] for r in val.values() if "skipped" not in r]
            assert scores[layers] == pytest.approx(np.mean(means), abs=1e-9)
        assert embed.Embedder(tiny_run, devices=jax.devices()[:1]).layers == best
    finally:
        (tiny_run / run.READOUT_FILE).unlink(missing_ok=True)


def test_choice_scores_a_task_labelled_on_val_and_test_titles_only(
    tiny_run, tiny_store, tiny_source, tmp_path
):
    """MovieNet's scene boundaries have no train-title clip (the test probe fits on val):
    the choice fits such a task on half its val titles and scores it on the other half,
    not skipping it; the other tasks keep their train titles."""
    import json

    from mediafm_jax import probe, run
    from mediafm_jax.data.store import ShotStore
    from mediafm_jax.probe.tasks import load_clips, load_tasks

    store = ShotStore(tiny_store)
    tasks = tiny_source / "probes.json"
    val_only = "retrieval"  # binary, as scene boundaries: its train titles become val titles
    rows = [json.loads(line) for line in (tiny_source / "clips.jsonl").read_text().splitlines()]
    for row in rows:
        if row["task"] == val_only and row["split"] == "train":
            row["split"] = "val"
    clips = tmp_path / "clips.jsonl"
    clips.write_text("".join(json.dumps(row) + "\n" for row in rows))
    loaded = load_clips(clips, load_tasks(tasks), store)
    assert not (loaded[val_only].split == "train").any()
    assert len(np.unique(loaded[val_only].title[loaded[val_only].split == "val"])) >= 6
    try:
        probe.choose_readout(tiny_run, store, tasks, clips, ("last",))
        chosen = json.loads((tiny_run / run.READOUT_FILE).read_text())["chosen_on"]
        assert set(chosen["tasks"]["last"]) == {t.name for t in load_tasks(tasks)}
        assert np.isfinite(chosen["tasks"]["last"][val_only])
    finally:
        (tiny_run / run.READOUT_FILE).unlink(missing_ok=True)


def test_choose_readout_flag_names_an_unknown_readout(tmp_path, capsys):
    from mediafm_jax import cli

    args = ["probe", "--workdir", str(tmp_path / "run"), "--store", str(tmp_path / "store")]
    args += ["--tasks", "t.json", "--clips", "c.jsonl", "--out", str(tmp_path / "r")]
    assert cli.main([*args, "--choose-readout", "last,distance+recur,nope"]) == 2
    assert "unknown readout 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert cli._readout_candidates("all") == readouts.READOUTS
    assert cli._readout_candidates("default") == readouts.DEFAULT_CANDIDATES
    assert cli._readout_candidates("distance+recur, last") == ("distance+recur", "last")


def test_validation_clips_never_hold_a_test_title():
    from mediafm_jax.probe import validation_clips
    from mediafm_jax.probe.tasks import Clips, Task

    split = np.array(["train", "val", "test", "val", "train", "test"])
    clips = Clips(
        Task("t", "binary", "ap"),
        title=np.array([0, 1, 2, 3, 4, 5]),
        start=np.arange(6),
        end=np.arange(6) + 2,
        split=split,
        target=np.array([0, 1, 1, 0, 1, 0]),
    )
    val = validation_clips(clips)
    np.testing.assert_array_equal(val.title, [0, 1, 3, 4])
    np.testing.assert_array_equal(val.split, ["train", "test", "test", "train"])
    np.testing.assert_array_equal(val.target, [0, 1, 0, 1])
    # labelled on val and test titles only: whole val titles split in half, test dropped
    title = np.repeat(np.arange(9), 3)
    only = dataclasses.replace(
        clips,
        title=title,
        start=np.arange(27),
        end=np.arange(27) + 1,
        split=np.where(title < 7, "val", "test"),
        target=np.arange(27) % 2,
    )
    val = validation_clips(only)
    assert set(val.title.tolist()) == set(range(7))
    fit = set(val.title[val.split == "train"].tolist())
    scored = set(val.title[val.split == "test"].tolist())
    assert len(fit) == 3 and len(scored) == 4 and not fit & scored
    np.testing.assert_array_equal(val.split, validation_clips(only).split)  # seeded


def test_probing_on_val_scores_val_titles_only(tiny_store, tiny_source, tmp_path):
    import json

    from mediafm_jax.data.store import ShotStore
    from mediafm_jax.probe import run_probes

    store = ShotStore(tiny_store)
    args = (None, store, tiny_source / "probes.json", tiny_source / "clips.jsonl")
    val = run_probes(*args, tmp_path / "val", bootstrap=0, on="val")
    clips = [json.loads(line) for line in (tiny_source / "clips.jsonl").read_text().splitlines()]
    checked = 0
    for name, task in val.items():
        if "skipped" in task or task["metric"] == "kendall_tau":
            continue
        assert task["n_test"] == sum(c["task"] == name and c["split"] == "val" for c in clips)
        checked += 1
    assert checked >= 2
    with pytest.raises(ValueError, match="on='train'"):
        run_probes(*args, tmp_path / "x", on="train")
