"""The command line: every subcommand end to end on tiny inputs, and its error contract."""

import json
import os
import signal

import numpy as np
import pytest

from mediafm_jax import cli, outputs, train
from mediafm_jax.data import ingest


@pytest.mark.slow(80)
def test_synth_ingest_info_train_embed_probe(tmp_path, capsys):
    src, store, run = tmp_path / "src", str(tmp_path / "store"), str(tmp_path / "run")
    assert cli.main(["synth", str(src), "--titles", "14", "--seed", "1", "--dims", "8,6,4,3"]) == 0
    assert cli.main(["ingest", str(src), store]) == 0
    assert cli.main(["info", store]) == 0
    out = capsys.readouterr().out
    assert "titles     14" in out and "text   dim 4" in out and "present in" in out
    assert cli.main(["ingest", str(src), store]) == 2
    assert "already exists" in capsys.readouterr().err
    args = ["train", "--config", "experiments/configs/tiny.py", "--store", store, "--workdir", run]
    assert cli.main([*args, "--set", "train.steps=6", "--set", "checkpoint.async_save=false"]) == 0
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1
    assert (
        cli.main(["embed", "--workdir", run, "--store", store, "--out", str(tmp_path / "emb")]) == 0
    )
    assert (
        cli.main(["embed", "--workdir", run, "--store", store, "--out", str(tmp_path / "emb")]) == 2
    )
    capsys.readouterr()
    # info reads either store, positional or spelled as other commands spell it
    emb = str(tmp_path / "emb")
    for argv in (["info", emb], ["info", "--emb", emb]):
        assert cli.main(argv) == 0
        assert f"store      {emb} (embeddings)" in capsys.readouterr().out
    assert cli.main(["info", "--store", store]) == 0
    assert "titles     14" in capsys.readouterr().out
    wrong = {
        "--store " + emb: "is an embedding store",
        "--emb " + store: "is a shot store",
        str(src): "is a source folder; info reads a shot store (ingest) or an embedding store",
        run: "is a run folder",
        "": "give one folder",
        f"{store} --emb {emb}": "give one folder",
    }
    for argv, expected in wrong.items():
        assert cli.main(["info", *argv.split()]) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, argv
        assert expected in captured.err, (argv, captured.err)
    report = tmp_path / "report"
    probe = ["probe", "--workdir", run, "--store", store, "--tasks", str(src / "probes.json")]
    probe += [
        "--clips",
        str(src / "clips.jsonl"),
        "--out",
        str(report),
        "--emb",
        str(tmp_path / "emb"),
    ]
    assert cli.main(probe) == 0
    results = json.loads((report / "report.json").read_text())["tasks"]
    assert set(results) == {"ad_relevancy", "popularity", "tone", "genre", "retrieval"}


def test_errors_exit_2_with_one_line(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "shots").mkdir(parents=True)
    np.savez(src / "shots" / "a.npz", video=np.full((3, 2), np.nan))
    (src / "titles.jsonl").write_text('{"title_id": "a"}\n')
    assert cli.main(["ingest", str(src), str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "a.npz" in err and "NaN/Inf at shot 0" in err
    assert cli.main(["info", str(tmp_path / "nothing")]) == 2
    assert "not a complete shot store" in capsys.readouterr().err
    bad_set = ["train", "--config", "experiments/configs/tiny.py", "--store", "x", "--workdir", "y"]
    assert cli.main([*bad_set, "--set", "model.hidden=3"]) == 2
    assert "unknown key 'hidden'" in capsys.readouterr().err
    assert cli.main(["train", "--config", "nope.py", "--store", "x", "--workdir", "y"]) == 2
    assert cli.main(["synth", str(tmp_path / "s2"), "--dims", "8,x,4,3"]) == 2
    assert "--dims 8,x,4,3" in capsys.readouterr().err


def test_a_closed_pipe_is_not_a_traceback(tmp_path):
    """`mediafm info STORE | head`: the reader leaves early; exit 141 as `cat` would."""
    import subprocess
    import sys

    from mediafm_jax.data import ingest, synthetic

    src = synthetic.write_catalog(
        tmp_path / "src",
        synthetic.SynthConfig(titles=2, min_shots=20, max_shots=30),
        progress=False,
    )
    ingest.ingest(src, str(tmp_path / "store"), progress=False)
    code = "import sys; from mediafm_jax import cli; "
    code += "sys.exit(cli.main(['info', sys.argv[1]]))"
    reader = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "store")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reader.stdout.close()  # nobody reads: the first flush meets a broken pipe
    assert reader.wait(timeout=120) == 141
    assert b"Traceback" not in reader.stderr.read()


@pytest.mark.slow(100)
def test_demo_smoke(tmp_path, capsys):
    import subprocess
    import sys

    # as a user runs it: the command in its own process, on one CPU device
    demo_dir = tmp_path / "demo"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    command = [sys.executable, "-m", "mediafm_jax.cli", "demo", "--out", str(demo_dir)]
    run = subprocess.run(
        [*command, "--titles", "14", "--steps", "3"], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "[5/5] probe" in run.stdout and "report.png" in run.stdout
    results = json.loads((demo_dir / "report" / "report.json").read_text())["tasks"]
    assert set(results) == {"ad_relevancy", "popularity", "tone", "genre", "retrieval"}
    assert (demo_dir / "report" / "report.png").exists()
    # the readout was chosen on validation titles, recorded, and the embeddings use it
    recorded = json.loads((demo_dir / "run" / "readout.json").read_text())
    scores = recorded["chosen_on"]["scores"]
    assert recorded["layers"] == max(scores, key=scores.get) and len(scores) == 5
    manifest = json.loads((demo_dir / "embeddings" / "manifest.json").read_text())
    assert manifest["layers"] == recorded["layers"]
    assert outputs.foreign_files(demo_dir) == []  # a rerun may replace all of it
    args = ["probe", "--workdir", str(demo_dir / "run"), "--store", str(demo_dir / "store")]
    args += ["--tasks", str(demo_dir / "source" / "probes.json"), "--out", str(tmp_path / "r")]
    args += ["--clips", str(demo_dir / "source" / "clips.jsonl")]
    assert cli.main([*args, "--choose-readout", "--layers", "last"]) == 2
    assert "drop --layers" in capsys.readouterr().err
    other = "last" if recorded["layers"] != "last" else "mean"
    assert cli.main([*args, "--layers", other, "--emb", str(demo_dir / "embeddings")]) == 2
    assert f"written with readout {recorded['layers']}, not {other}" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("user data")
    assert cli.main(["demo", "--out", str(tmp_path / "other")]) == 2


@pytest.mark.slow(40)
def test_sigterm_exits_143_and_says_so(tiny_source, tiny_store, tmp_path, monkeypatch, capsys):
    """SIGTERM (kill, a scheduler, timeout) is 128 + 15, Ctrl-C 130, as a shell reports them:
    ingest stops leaving nothing, training saves first and still says it did not finish."""
    load_title = ingest._load_title
    loaded = []

    def load_then_kill(*args, signum=signal.SIGTERM):
        loaded.append(1)
        if len(loaded) == 3:
            os.kill(os.getpid(), signum)
        return load_title(*args)

    monkeypatch.setattr(ingest, "_load_title", load_then_kill)
    # a suite started in the background (`make test &`) inherits SIGINT ignored
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for signum, code, said in [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                   (signal.SIGINT, 130, "interrupted")]:  # fmt: skip
            loaded.clear()
            monkeypatch.setattr(load_then_kill, "__kwdefaults__", {"signum": signum})
            assert cli.main(["ingest", str(tiny_source), str(tmp_path / "store")]) == code
            assert 3 <= len(loaded) < 12  # stopped at the third of 12 titles
            assert capsys.readouterr().err.strip().splitlines() == [f"mediafm ingest: {said}"]
            assert os.listdir(tmp_path) == []  # no store, no partial one
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the CLI put the default back

    stop_init = train.StopSignal.__init__

    def init_then_kill(self, *args):
        stop_init(self, *args)
        os.kill(os.getpid(), signal.SIGTERM)  # before the first step: saved after it

    monkeypatch.setattr(train.StopSignal, "__init__", init_then_kill)
    run = tmp_path / "run"
    argv = ["train", "--config", "experiments/configs/tiny.py", "--store", tiny_store]
    argv += ["--workdir", str(run), "--set", "checkpoint.async_save=false"]
    assert cli.main(argv) == 143
    assert "preempted (SIGTERM): saved step 1; rerun the same command" in capsys.readouterr().out
    assert (run / "checkpoints" / "1").is_dir()
