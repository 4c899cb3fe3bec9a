"""Issue 23: the scenes-and-threads synthetic catalog and the readouts that see structure."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mediafm_jax import cli, readouts
from mediafm_jax.data import ingest, synthetic
from mediafm_jax.data.store import ShotStore
from mediafm_jax.probe import baselines
from mediafm_jax.probe.tasks import load_clips, load_tasks

SCENES = synthetic.SynthConfig(
    titles=10,
    seed=5,
    video_dim=64,
    audio_dim=64,
    text_dim=64,
    title_dim=8,
    max_shots=700,
    structure="scenes",
)


def _titles(config: synthetic.SynthConfig = SCENES):
    catalog = synthetic._Catalog(config, np.random.default_rng(config.seed))
    for index in range(config.titles):
        rng = np.random.default_rng([config.seed, index])
        arrays, story = synthetic._make_scene_title(catalog, config, rng)
        yield arrays, story, synthetic._scene_clips(f"t{index}", story, rng, "train")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-6)


def test_threads_return_and_never_follow_themselves():
    returning = 0
    for _, story, clips in _titles():
        threads = story["thread_of_scene"]
        assert (threads[1:] != threads[:-1]).all()
        counts = np.bincount(threads)
        returning += int((counts >= 2).sum())
        bounds = story["bounds"]
        for clip in (c for c in clips if c["task"] == "recurrence"):
            scene = int(np.searchsorted(bounds, clip["shot_start"], side="right")) - 1
            assert clip["shot_end"] <= bounds[scene + 1]  # inside one scene
            assert clip["target"] == (threads == threads[scene]).sum()
    assert returning >= 10


def test_scene_boundary_labels_are_the_last_shots_of_scenes():
    positives = negatives = 0
    for _, story, clips in _titles():
        cuts = set(story["bounds"][1:-1].tolist())
        for clip in (c for c in clips if c["task"] == "scene_boundary"):
            assert clip["shot_end"] - clip["shot_start"] == 1
            assert clip["label"] == int(clip["shot_end"] in cuts)
            positives += clip["label"]
            negatives += 1 - clip["label"]
    assert positives > 30 and negatives == 3 * positives


def test_a_change_shows_in_some_modalities_and_not_others():
    """A modality whose main part carried over changes less across the cut than one whose
    part changed; every cut changes some part, and most cuts do not change all three."""
    moved = {True: [], False: []}
    partial = cuts = 0
    for arrays, story, _ in _titles():
        bounds, changed = story["bounds"], story["changed"]
        assert changed.any(1).all()
        partial += int((~changed.all(1)).sum())
        cuts += len(changed)
        for c in range(len(changed)):
            for part, name in enumerate(("video", "audio")):  # text may be missing (zeros)
                before = arrays[name][bounds[c] : bounds[c + 1]].mean(0)
                after = arrays[name][bounds[c + 1] : bounds[c + 2]].mean(0)
                scale = np.sqrt(np.linalg.norm(before) * np.linalg.norm(after))
                moved[bool(changed[c, part])].append(np.linalg.norm(after - before) / scale)
    assert np.mean(moved[True]) > 1.3 * np.mean(moved[False])
    assert 0.4 < partial / cuts < 0.95


def test_one_shot_says_little_and_a_window_of_shots_finds_the_cut():
    """``novelty`` (the hand-made baseline) finds cuts from windows of shots, not from one."""
    at_cut, elsewhere = [], []
    for arrays, story, _ in _titles():
        rows = _unit(np.concatenate([_unit(arrays[m]) for m in ("video", "audio", "text")], 1))
        cuts = story["bounds"][1:-1]
        for cut in cuts:
            at_cut.append(baselines.novelty_at(rows, cut))
        for cut in np.setdiff1d(np.arange(1, story["n"]), cuts)[::4]:
            elsewhere.append(baselines.novelty_at(rows, cut))
    y = np.r_[np.ones(len(at_cut)), np.zeros(len(elsewhere))]
    scores = np.concatenate([at_cut, elsewhere])
    auc = {k: roc_auc_score(y, scores[:, i]) for i, k in enumerate(baselines.NOVELTY_SCALES)}
    assert auc[8] > 0.8
    assert auc[1] < auc[8] - 0.1


def test_the_default_catalog_is_the_story_family(tmp_path):
    assert synthetic.SynthConfig().structure == "story"
    assert synthetic.probe_tasks(synthetic.SynthConfig()) == synthetic.PROBE_TASKS
    with pytest.raises(ValueError, match="structure"):
        synthetic.write_catalog(tmp_path / "x", synthetic.SynthConfig(structure="acts"))


def test_synth_structure_scenes_writes_a_catalog_the_probes_read(tmp_path):
    src, store_path = tmp_path / "src", str(tmp_path / "store")
    argv = ["synth", str(src), "--titles", "6", "--dims", "8,6,4,3", "--structure", "scenes"]
    assert cli.main(argv) == 0
    assert json.loads((src / "synth.json").read_text())["structure"] == "scenes"
    ingest.ingest(src, store_path, progress=False)
    tasks = load_tasks(src / "probes.json")
    assert [t.name for t in tasks] == ["scene_boundary", "recurrence"]
    clips = load_clips(src / "clips.jsonl", tasks, ShotStore(store_path))
    assert clips["scene_boundary"].target.sum() > 0 and len(clips["recurrence"]) > 0


def _change_reference(rows: np.ndarray, scales=readouts.CHANGE_SCALES) -> np.ndarray:
    """The slow loop: per shot and k, after-minus-before means, then ``novelty_at`` (the
    hand-made baseline's own function) at the cut before the shot and after it."""
    n = len(rows)
    out = []
    for i in range(n):
        parts = []
        for j, k in enumerate(scales):
            before, after = rows[max(0, i - k) : i], rows[i + 1 : i + 1 + k]
            empty = len(before) == 0 or len(after) == 0
            parts.append(np.zeros(rows.shape[1]) if empty else after.mean(0) - before.mean(0))
            parts.append(baselines.novelty_at(rows, i, scales)[j : j + 1])
            parts.append(baselines.novelty_at(rows, i + 1, scales)[j : j + 1])
        out.append(np.concatenate(parts))
    return np.stack(out)


def _recurrence_reference(rows: np.ndarray, gap: int, tops) -> np.ndarray:
    unit = _unit(rows.astype(np.float64))
    out = np.zeros((len(rows), len(tops)))
    for i in range(len(rows)):
        far = np.abs(np.arange(len(rows)) - i) >= gap
        sims = np.sort(unit[far] @ unit[i])[::-1]
        for j, m in enumerate(tops):
            out[i, j] = sims[:m].mean() if len(sims) else 0.0
    return out


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_change_matches_the_slow_loop(n):
    rows = np.random.default_rng(n).standard_normal((n, 6)).astype(np.float32)
    got = readouts.change(rows)
    assert got.shape == (n, len(readouts.CHANGE_SCALES) * (6 + 2))
    np.testing.assert_allclose(got, _change_reference(rows), atol=1e-5)


@pytest.mark.parametrize(("n", "chunk"), [(1, 4), (9, 4), (30, 7), (90, 1024)])
def test_recurrence_matches_the_slow_loop(n, chunk):
    rows = np.random.default_rng(n).standard_normal((n, 5)).astype(np.float32)
    gap, tops = 4, (1, 3, 64)
    got = readouts.recurrence(rows, gap, tops, chunk=chunk)
    np.testing.assert_allclose(got, _recurrence_reference(rows, gap, tops), atol=1e-5)


def test_recurrence_counts_how_often_content_returns():
    """Shots of a thread seen in many scenes find more close shots far away."""
    rng = np.random.default_rng(0)
    threads = rng.standard_normal((3, 16))
    scene_thread = np.array([0, 1, 0, 2, 0, 1, 0])  # thread 0: 4 scenes, 2: one
    rows = np.repeat(threads[scene_thread], 30, axis=0) + 0.3 * rng.standard_normal((210, 16))
    got = readouts.recurrence(rows)[:, readouts.RECUR_TOPS.index(64)]
    per_scene = got.reshape(7, 30).mean(1)
    assert per_scene[scene_thread == 0].min() > per_scene[scene_thread == 1].max()
    assert per_scene[scene_thread == 1].min() > per_scene[scene_thread == 2].max()


@pytest.mark.parametrize("layers", ["last+change+recur", "last+input+change+recur"])
def test_structure_readouts_see_the_whole_stitched_title(tiny_run, tiny_store, layers):
    """The parts are computed from the title's stitched rows (a title several windows
    long), after the base readout; an isolated clip's parts see only the clip."""
    import jax

    from mediafm_jax import embed

    store = ShotStore(tiny_store)
    devices = jax.devices()[:1]
    title = int(np.argmax([store.title_length(t) for t in range(store.num_titles)]))
    base = embed.Embedder(tiny_run, layers=layers.split("+change")[0], devices=devices)
    embedder = embed.Embedder(tiny_run, layers=layers, devices=devices)
    assert store.title_length(title) > 2 * base.max_shots
    assert embedder.shot_dim == readouts.width(layers, base.shot_dim)
    own = base.embed_title(store, title).astype(np.float64)
    rows = embedder.embed_title(store, title)
    assert rows.shape == (store.title_length(title), embedder.shot_dim)
    d, c = base.shot_dim, len(readouts.CHANGE_SCALES) * (base.shot_dim + 2)
    np.testing.assert_allclose(rows[:, :d], own, atol=1e-6)
    np.testing.assert_allclose(rows[:, d : d + c], _change_reference(own), atol=1e-4)
    recur = _recurrence_reference(own, readouts.RECUR_GAP, readouts.RECUR_TOPS)
    np.testing.assert_allclose(rows[:, d + c :], recur, atol=1e-4)
    clip = base.embed_clips(store, [(title, 5, 37)])[0]
    alone = embedder.embed_clips(store, [(title, 5, 37)])[0]
    np.testing.assert_allclose(alone[:d], clip, atol=1e-5)


@pytest.mark.parametrize("n", [1, 3, 40])
def test_structure_parts_alone_are_the_parts_without_the_state(n):
    """A readout with no base is its parts of the rows, in order, and no row column:
    ``distance`` is ``novelty_at`` (the baseline's own function) at the cuts around the
    shot, per k, and nothing of the mean rows."""
    rows = np.random.default_rng(n).standard_normal((n, 6)).astype(np.float32)
    reference = _change_reference(rows.astype(np.float64))
    k = len(readouts.CHANGE_SCALES)
    distance = np.stack(
        [
            np.concatenate(
                [
                    [
                        baselines.novelty_at(rows, i, readouts.CHANGE_SCALES)[j],
                        baselines.novelty_at(rows, i + 1, readouts.CHANGE_SCALES)[j],
                    ]
                    for j in range(k)
                ]
            )
            for i in range(n)
        ]
    )
    recur = _recurrence_reference(rows, readouts.RECUR_GAP, readouts.RECUR_TOPS)
    expected = {
        "change": reference,
        "distance": distance,
        "recur": recur,
        "change+recur": np.concatenate([reference, recur], 1),
        "distance+recur": np.concatenate([distance, recur], 1),
    }
    assert set(expected) == set(readouts.STRUCTURE_ALONE)
    for layers, want in expected.items():
        got = readouts.with_parts(rows, layers)
        assert got.shape == (n, readouts.width(layers, 6)), layers
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=layers)
    with_state = readouts.with_parts(rows, "last+change+recur")
    np.testing.assert_allclose(with_state[:, 6:], readouts.with_parts(rows, "change+recur"))


def test_a_structure_readout_alone_embeds_through_the_stitched_title(tiny_run, tiny_store):
    import jax

    from mediafm_jax import embed

    store = ShotStore(tiny_store)
    devices = jax.devices()[:1]
    title = int(np.argmax([store.title_length(t) for t in range(store.num_titles)]))
    last = embed.Embedder(tiny_run, layers="last", devices=devices)
    alone = embed.Embedder(tiny_run, layers="distance+recur", devices=devices)
    assert alone.shot_dim == 2 * len(readouts.CHANGE_SCALES) + len(readouts.RECUR_TOPS)
    own = last.embed_title(store, title).astype(np.float64)
    np.testing.assert_allclose(
        alone.embed_title(store, title), readouts.with_parts(own, "distance+recur"), atol=1e-4
    )


def _fused(arrays: dict) -> np.ndarray:
    return _unit(np.concatenate([_unit(arrays[m]) for m in ("video", "audio", "text")], 1))


def test_a_returning_thread_is_visible_in_its_shots_and_its_scenes():
    """Shots of one thread in different scenes are more alike than shots of different
    threads, by a margin; a single pair is noisier than the margin; scene means tell threads
    apart far better (carried-over parts and a scene's own variation keep it imperfect)."""
    same, other, scene_same, scene_other = [], [], [], []
    for arrays, story, _ in _titles():
        rows = _fused(arrays)
        scene_n, thread_s = story["scene_of_shot"], story["thread_of_scene"]
        sims = rows @ rows.T
        far = scene_n[:, None] != scene_n[None]
        same_thread = thread_s[scene_n][:, None] == thread_s[scene_n][None]
        same.append(sims[far & same_thread])
        other.append(sims[far & ~same_thread])
        means = _unit(np.stack([rows[scene_n == s].mean(0) for s in range(len(thread_s))]))
        pair = np.triu(np.ones((len(thread_s),) * 2, bool), 1)
        scene_sims = means @ means.T
        hit = thread_s[:, None] == thread_s[None]
        scene_same.append(scene_sims[pair & hit])
        scene_other.append(scene_sims[pair & ~hit])
    same, other = np.concatenate(same), np.concatenate(other)
    margin = same.mean() - other.mean()
    assert margin > 0.03
    assert other.std() > margin  # one shot against one shot: mostly noise
    y = np.r_[np.ones(sum(map(len, scene_same))), np.zeros(sum(map(len, scene_other)))]
    assert roc_auc_score(y, np.concatenate(scene_same + scene_other)) > 0.75


def test_the_recurrence_part_of_the_input_ranks_threads_by_their_scenes():
    """The task is solvable without labels: the ``+recur`` part of the noisy input rows
    orders a title's recurrence clips by how many scenes their thread has."""
    from scipy.stats import kendalltau

    taus, controls = [], []
    rng = np.random.default_rng(0)
    for arrays, _, clips in _titles():
        recur = readouts.recurrence(_fused(arrays))[:, readouts.RECUR_TOPS.index(16)]
        rows = [c for c in clips if c["task"] == "recurrence"]
        score = [recur[c["shot_start"] : c["shot_end"]].mean() for c in rows]
        target = [c["target"] for c in rows]
        taus.append(kendalltau(target, score).statistic)
        controls.append(kendalltau(target, rng.permutation(score)).statistic)
    assert np.nanmean(taus) > 0.2
    assert np.nanmean(taus) > np.nanmean(controls) + 0.2
