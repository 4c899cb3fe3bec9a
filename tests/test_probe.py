"""Probe metrics by hand, probes on informative vs shuffled labels, intervals, the report."""

import json

import numpy as np
import pytest

from mediafm_jax.data.store import ShotStore
from mediafm_jax.embed import Embedder
from mediafm_jax.probe import ProbeInputError, baselines, intervals, run_probes
from mediafm_jax.probe.linear import run_probe
from mediafm_jax.probe.metrics import (
    ap,
    interval,
    kendall_tau_by_group,
    macro_ap,
    micro_ap,
    title_bootstrap,
)
from mediafm_jax.probe.tasks import Clips, Task


def test_average_precision_by_hand():
    # Ranked by score: pos, neg, pos -> precision at the hits 1/1 and 2/3 -> AP = 5/6.
    assert ap(np.array([1, 0, 1]), np.array([0.9, 0.8, 0.1])) == pytest.approx(5 / 6)
    y = np.array([[1, 0], [0, 1], [1, 0]])
    s = np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.3]])
    # class 0: pos, neg, pos -> 5/6; class 1: its one positive is ranked first -> 1.
    assert macro_ap(y, s) == pytest.approx((5 / 6 + 1) / 2)
    # micro: pooled scores 0.9+,0.8-,0.7+,0.3-,0.2-,0.1+ -> (1 + 2/3 + 3/6) / 3.
    assert micro_ap(y, s) == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)
    # No positives (a bootstrap draw can have none): undefined, not 0.
    assert np.isnan(ap(np.zeros(3), s[:, 0])) and np.isnan(macro_ap(0 * y, s))


@pytest.mark.parametrize("seed", range(4))
def test_average_precision_equals_scikit_learns(seed):
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(seed)
    y = (rng.random((300, 5)) < [0.02, 0.1, 0.3, 0.6, 0.0]).astype(int)
    y[0, 0] = 1  # every class but the last has a positive
    # few distinct scores: many ties, which sklearn counts as one threshold
    s = np.round(rng.normal(size=(300, 5)) + y, seed).astype(np.float32)
    kept = y.sum(0) > 0
    expected_macro = average_precision_score(y[:, kept], s[:, kept], average="macro")
    assert macro_ap(y, s) == pytest.approx(expected_macro, abs=1e-12)
    expected_micro = average_precision_score(y, s, average="micro")
    assert micro_ap(y, s) == pytest.approx(expected_micro, abs=1e-12)
    for k in range(4):
        assert ap(y[:, k], s[:, k]) == pytest.approx(
            average_precision_score(y[:, k], s[:, k]), abs=1e-12
        )


def test_kendall_tau_is_per_title():
    y = np.array([1, 2, 3, 10, 20, 30, 5])
    groups = np.array([0, 0, 0, 1, 1, 1, 2])
    scores = np.array([1, 2, 3, 3, 2, 1, 0])  # perfect in title 0, reversed in title 1
    assert kendall_tau_by_group(y, scores, groups) == pytest.approx(0.0)
    # Pooled over titles the same scores would look strongly negative; per title they cancel.
    scores = np.array([1, 2, 3, 0.1, 0.2, 0.3, 9])
    assert kendall_tau_by_group(y, scores, groups) == pytest.approx(1.0)


def _clips(task, n_titles=40, per_title=12, seed=0):
    rng = np.random.default_rng(seed)
    title = np.repeat(np.arange(n_titles), per_title)
    split = np.array(["train", "val", "test"])[
        np.repeat(rng.choice(3, n_titles, p=[0.6, 0.2, 0.2]), per_title)
    ]
    n = len(title)
    if task.kind == "multilabel":
        target = (rng.random((n, task.num_classes)) < 0.3).astype(np.int8)
    elif task.kind == "binary":
        target = (rng.random(n) < 0.25).astype(np.int8)
    else:
        target = rng.normal(size=n)
    return Clips(task, title, np.zeros(n, int), np.ones(n, int), split, target)


@pytest.mark.parametrize(
    "task",
    [
        Task("ml", "multilabel", "micro_ap", num_classes=5),
        Task("ml2", "multilabel", "macro_ap", num_classes=5),
        Task("bin", "binary", "ap"),
        Task("rank", "ranking", "kendall_tau", folds=5),
    ],
)
def test_informative_features_score_high_and_shuffled_labels_score_chance(task):
    clips = _clips(task)
    rng = np.random.default_rng(1)
    target = clips.target.reshape(len(clips), -1).astype(float)
    informative = np.concatenate(
        [target + 0.3 * rng.normal(size=target.shape), rng.normal(size=(len(clips), 8))], 1
    )
    result = run_probe(informative, clips)
    good = result.score
    # Drawing every test title once, in order, reproduces the score.
    titles = np.unique(result.title)
    rows = np.concatenate([np.flatnonzero(result.title == t) for t in titles])
    group = np.repeat(np.arange(len(titles)), [np.sum(result.title == t) for t in titles])
    assert result.score_rows(rows, group) == pytest.approx(good)
    shuffled = Clips(
        task, clips.title, clips.start, clips.end, clips.split, rng.permutation(clips.target)
    )
    chance = run_probe(informative, shuffled).score
    if task.kind == "ranking":
        assert good > 0.6 and abs(chance) < 0.15
    else:
        base_rate = target.mean()
        assert good > 0.9 and chance < base_rate + 0.15


@pytest.mark.slow(40)
def test_report_has_every_task_and_method(tiny_run, tiny_store, tiny_source, tmp_path):
    store = ShotStore(tiny_store)
    results = run_probes(
        Embedder(tiny_run),
        store,
        tiny_source / "probes.json",
        tiny_source / "clips.jsonl",
        tmp_path,
    )
    report = json.loads((tmp_path / "report.json").read_text())
    tasks = [t["name"] for t in json.loads((tiny_source / "probes.json").read_text())["tasks"]]
    assert list(report["tasks"]) == tasks and report["tasks"] == json.loads(json.dumps(results))
    methods = {"mediafm_context", "mediafm_isolated", "concat", "video", "audio", "text"}
    methods |= {"title_mean", "novelty"}
    for task in report["tasks"].values():
        assert set(task["results"]) == methods
        assert task["n_train"] > 0 and task["n_test"] > 0
        assert all(np.isfinite(v) for v in task["results"].values())
        assert set(task["ci95"]) == methods and all(lo <= hi for lo, hi in task["ci95"].values())
        assert set(task["vs_concat"]) == methods - {"concat"}
        assert set(task["vs_title_mean"]) == {"mediafm_context", "mediafm_isolated"}
        assert set(task["vs_novelty"]) == {"mediafm_context", "mediafm_isolated"}
    table = (tmp_path / "report.md").read_text()
    assert all(t in table for t in tasks) and all(m in table for m in methods)
    assert "minus concat" in table and "minus title_mean" in table and "95% interval" in table
    assert "minus novelty" in table
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_bad_clips_name_the_line(tiny_run, tiny_store, tiny_source, tmp_path):
    lines = (tiny_source / "clips.jsonl").read_text().splitlines()
    bad = json.loads(lines[2])
    bad["shot_end"] = 10**6
    lines[2] = json.dumps(bad)
    (tmp_path / "clips.jsonl").write_text("\n".join(lines))
    with pytest.raises(ProbeInputError, match=r"line 3: shots \[.*\) are not a non-empty range"):
        run_probes(
            None,
            ShotStore(tiny_store),
            tiny_source / "probes.json",
            tmp_path / "clips.jsonl",
            tmp_path / "report",
        )


def test_tasks_labelled_on_val_and_test_only_fit_on_val():
    task = Task("scene", "binary", "ap")
    clips = _clips(task)
    clips.split[clips.split == "train"] = "val"
    rng = np.random.default_rng(2)
    informative = clips.target[:, None] + 0.3 * rng.normal(size=(len(clips), 4))
    result = run_probe(informative, clips)
    assert result.score > 0.9 and result.n_train == int((clips.split == "val").sum())


def test_title_bootstrap_draws_whole_titles():
    titles = np.array([3, 3, 1, 7, 7, 7, 1, 3])
    draws = list(title_bootstrap(titles, draws=50, seed=1))
    assert all(
        np.array_equal(a[0], b[0])
        for a, b in zip(draws, title_bootstrap(titles, 50, 1), strict=True)
    )
    seen = set()
    for rows, group in draws:
        assert np.all(np.diff(group) >= 0) and len(np.unique(group)) == 3
        for g in np.unique(group):
            picked = rows[group == g]
            seen.add(int(titles[picked[0]]))
            assert sorted(picked) == list(np.flatnonzero(titles == titles[picked[0]]))
    assert seen == {1, 3, 7}


def test_bootstrap_interval_matches_normal_theory_for_a_mean():
    # Clips of one title share its effect: the interval must come from the titles' spread.
    rng = np.random.default_rng(0)
    n_titles, per_title = 400, 5
    titles = np.repeat(np.arange(n_titles), per_title)
    values = rng.normal(size=n_titles)[titles] + 0.1 * rng.normal(size=len(titles))
    boot = [values[rows].mean() for rows, _ in title_bootstrap(titles, draws=2000, seed=0)]
    means = values.reshape(n_titles, per_title).mean(1)
    half = 1.96 * means.std(ddof=1) / np.sqrt(n_titles)
    expected = [means.mean() - half, means.mean() + half]
    np.testing.assert_allclose(interval(boot), expected, atol=0.15 * half)


def _signal_and_noise(seed: int):
    """A binary task on 60 titles; features that carry its label, and features that do not."""
    clips = _clips(Task("bin", "binary", "ap"), n_titles=60)
    noise = np.random.default_rng(seed).normal(size=(len(clips), 8))
    informative = np.concatenate([clips.target[:, None] + 0.3 * noise[:, :1], noise[:, 1:]], 1)
    return clips, informative, noise


def test_paired_difference_from_concat():
    clips, informative, noise = _signal_and_noise(seed=3)
    scored = {
        "good": run_probe(informative, clips),
        "same": run_probe(noise, clips),
        "concat": run_probe(noise, clips),
    }
    out = intervals(scored, draws=200)
    for name, (low, high) in out["ci95"].items():
        assert low <= scored[name].score <= high
    good = out["vs_concat"]["good"]
    assert good["delta"] > 0.3 and good["ci95"][0] > 0  # a clear win excludes zero
    assert out["vs_concat"]["same"] == {"delta": 0.0, "ci95": [0.0, 0.0]}
    assert "concat" not in out["vs_concat"]
    assert "vs_title_mean" not in out  # no title_mean scored: no difference from it
    assert "vs_novelty" not in out


def test_paired_difference_from_title_mean_is_the_models_only():
    clips, informative, noise = _signal_and_noise(seed=4)
    scored = {
        "mediafm_context": run_probe(informative, clips),
        "concat": run_probe(noise, clips),
        "title_mean": run_probe(noise[:, ::-1].copy(), clips),
        "novelty": run_probe(noise[:, 1:].copy(), clips),
    }
    out = intervals(scored, draws=200)
    assert set(out["vs_title_mean"]) == {"mediafm_context"}
    assert set(out["vs_novelty"]) == {"mediafm_context"}  # both hand-made baselines, paired
    vs = out["vs_novelty"]["mediafm_context"]
    assert vs["delta"] == scored["mediafm_context"].score - scored["novelty"].score
    assert vs["ci95"][0] > 0
    vs = out["vs_title_mean"]["mediafm_context"]
    assert vs["delta"] == scored["mediafm_context"].score - scored["title_mean"].score
    assert vs["ci95"][0] > 0  # the clear win excludes zero here too
    # paired: the same draws as the intervals, so a difference of itself would be exactly 0
    assert out["vs_concat"]["title_mean"]["ci95"][0] <= out["vs_concat"]["title_mean"]["delta"]


def test_label_free_baselines_on_a_two_scene_title():
    """Shots 0-9 show scene a, 10-19 scene b (orthogonal): novelty is exact, by hand."""
    a, b = np.eye(4)[0], np.eye(4)[1]
    rows = {0: np.stack([a] * 10 + [b] * 10), 1: np.stack([b] * 4)}
    clips = Clips(
        task=Task("boundary", "binary", "ap"),
        title=np.array([0, 0, 1]),
        start=np.array([8, 2, 0]),
        end=np.array([10, 5, 4]),
        split=np.array(["train"] * 3),
        target=np.zeros(3),
    )
    nov = baselines.novelty(rows, clips)
    k = np.array(baselines.NOVELTY_SCALES, float)
    # clip 0 starts at cut 8: before is a; after holds min(k, 2) a's then b's.
    after_a = np.minimum(k, 2) / np.minimum(k, 12)
    expected_start = 1 - after_a / np.sqrt(after_a**2 + (1 - after_a) ** 2)
    np.testing.assert_allclose(nov[0, : len(k)], expected_start, atol=1e-5)
    np.testing.assert_allclose(nov[0, len(k) :], 1.0, atol=1e-5)  # cut 10: a | b at any k
    # clip 1 ends at cut 5, inside scene a, until the after-window reaches scene b (k > 5).
    after_a = np.minimum(k, 5) / np.minimum(k, 15)
    np.testing.assert_allclose(
        nov[1, len(k) :], 1 - after_a / np.sqrt(after_a**2 + (1 - after_a) ** 2), atol=1e-5
    )
    np.testing.assert_array_equal(nov[2], 0.0)  # a whole title: no shot before or after
    tm = baselines.title_mean(rows, clips)
    np.testing.assert_allclose(tm[0], np.concatenate([a, (a + b) / 2]))
    np.testing.assert_allclose(tm[2], np.concatenate([b, b]))


def test_bad_probe_input_through_the_cli(tiny_run, tiny_store, tiny_source, tmp_path, capsys):
    """The CLI path: one line naming file and line, exit 2, no report folder (the other
    careless inputs are in test_faults_inputs.py)."""
    from faults import assert_one_line_error

    lines = (tiny_source / "clips.jsonl").read_text().splitlines()
    line_no = next(i for i, line in enumerate(lines, 1) if '"popularity"' in line)
    clip = json.loads(lines[line_no - 1])
    clip["target"] = float("nan")
    lines[line_no - 1] = json.dumps(clip)
    clips = tmp_path / "clips.jsonl"
    clips.write_text("\n".join(lines) + "\n")
    out = tmp_path / "report"
    argv = ["probe", "--workdir", str(tiny_run), "--store", tiny_store]
    argv += ["--tasks", str(tiny_source / "probes.json"), "--clips", str(clips)]
    argv += ["--out", str(out), "--bootstrap", "0"]
    assert_one_line_error(argv, capsys, tmp_path, f"{clips} line {line_no}: 'target' is nan")
    assert not out.exists()


def test_a_ranking_task_on_one_title_is_skipped_not_a_traceback():
    # `mediafm demo --titles 1`: cross-validation by title has no title to hold out.
    from mediafm_jax.probe.linear import ProbeSkipped

    clips = _clips(Task("rank", "ranking", "kendall_tau", folds=5), n_titles=1)
    with pytest.raises(ProbeSkipped, match="at least 2 titles"):
        run_probe(np.random.default_rng(0).normal(size=(len(clips), 4)), clips)


def test_a_report_of_skipped_tasks_only_is_written(tmp_path):
    from mediafm_jax.probe.report import write_report

    skipped = {"metric": "ap", "skipped": "needs clips of at least 2 titles", "results": {}}
    paths = write_report({"popularity": skipped}, tmp_path)
    assert "skipped: needs clips of at least 2 titles" in paths["md"].read_text()
    assert paths["png"].stat().st_size > 1000
