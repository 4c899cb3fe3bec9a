"""Config: field types and bounds, cross-field rules, and the CLI's one-line refusals.

Every refusal is checked for exit code 2, a single stderr line naming the key, and that
nothing was created or changed on disk (``faults.assert_one_line_error``).
"""

import dataclasses
import json
import typing

import pydantic
import pytest
from faults import assert_one_line_error, run_cli

from mediafm_jax import config as config_lib
from mediafm_jax import presets
from mediafm_jax.errors import validation_message

TRAIN = ["train", "--config", "experiments/configs/tiny.py"]


def _refused(capsys, argv, root) -> str:
    """Exit code 2, one line, nothing under ``root`` changed (a fault case that held)."""
    return assert_one_line_error([str(a) for a in argv], capsys, root)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.batch_size=0", "train.batch_size=0"),
        ("train.batch_size=-4", "train.batch_size=-4"),
        ("train.steps=-5", "train.steps=-5"),
        ("train.log_every=0", "train.log_every=0"),
        ("checkpoint.every_steps=0", "checkpoint.every_steps=0"),
        ("checkpoint.keep=0", "checkpoint.keep=0"),
        ("optim.kind=sgd", "optim.kind=sgd"),
        ("data.split=bogus", "data.split=bogus"),
        ("data.in_memory=maybe", "data.in_memory=maybe"),
        ("model.compute_dtype=float8", "model.compute_dtype=float8"),
        ("model.post_ln=maybe", "model.post_ln=maybe"),
        ("objective.mask_ratio=1.5", "objective.mask_ratio=1.5"),
        ("optim.learning_rate=nan", "optim.learning_rate=nan"),
        ("model.num_heads=3", "model.num_heads=3: does not divide hidden_size=32"),
        ("mesh.data=16", "needs 16 devices, 8 are available"),
        ("mesh.fsdp=0", "mesh.fsdp=0"),
        ("mesh.fsdp=-1", "mesh: at most one of data, fsdp, tensor may be -1"),
        ("objective.span_mean_shots=0.5", "objective.span_mean_shots=0.5"),
        ("optim.muon_stack=sometimes", "optim.muon_stack=sometimes"),
        ("train.batch_size=12", "train.batch_size=12 is not divisible by the data-parallel size 8"),
    ],
)
def test_bad_setting_is_one_line_and_creates_nothing(tmp_path, capsys, override, named):
    run = tmp_path / "run"
    argv = [*TRAIN, "--store", tmp_path / "s", "--workdir", run, "--set", override]
    err = _refused(capsys, argv, tmp_path)
    assert named in err
    assert not run.exists() and list(tmp_path.iterdir()) == []


def test_missing_store_and_workdir_under_a_file_create_nothing(tmp_path, capsys, tiny_store):
    run = tmp_path / "run"
    err = _refused(capsys, [*TRAIN, "--store", tmp_path / "nope", "--workdir", run], tmp_path)
    assert "nope" in err and not run.exists()
    blocker = tmp_path / "file.txt"
    blocker.write_text("mine")
    err = _refused(capsys, [*TRAIN, "--store", tiny_store, "--workdir", blocker / "run"], tmp_path)
    assert "is under the file" in err and str(blocker) in err
    err = _refused(capsys, [*TRAIN, "--store", tiny_store, "--workdir", blocker], tmp_path)
    assert "is a file" in err
    assert blocker.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "file.txt"
    ]


def test_embed_of_a_missing_run_creates_nothing(tmp_path, capsys, tiny_store):
    missing = tmp_path / "MISSING"
    argv = ["embed", "--workdir", missing, "--store", tiny_store, "--out", tmp_path / "e"]
    err = _refused(capsys, argv, tmp_path)
    assert "MISSING" in err and "no checkpoints" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("titles", ["-3", "0"])
def test_synth_title_count_must_be_positive(tmp_path, capsys, titles):
    err = _refused(capsys, ["synth", tmp_path / "src", "--titles", titles], tmp_path)
    assert (
        f"synth: titles={titles}: Input should be greater than or equal to 1" in err
        and list(tmp_path.iterdir()) == []
    )


def test_demo_title_count_must_be_positive(tmp_path, capsys):
    err = _refused(capsys, ["demo", "--out", tmp_path / "demo", "--titles", "0"], tmp_path)
    assert "demo: titles=0: Input should be greater than or equal to 1" in err


def test_demo_steps_must_be_positive_before_anything_is_written(tmp_path, capsys):
    """demo --steps -1 ran synth and ingest (minutes, a folder left) before refusing"""
    err = _refused(capsys, ["demo", "--out", tmp_path / "demo", "--steps", "-1"], tmp_path)
    assert "--steps -1: train.steps=-1: Input should be greater than or equal to 1" in err
    assert list(tmp_path.iterdir()) == []


def test_presets_are_valid_and_types_are_checked_for_python_configs():
    for preset in (presets.tiny, presets.demo, presets.base, presets.large):
        config_lib.validate(preset())  # each preset builds, so its fields are valid
    config_lib.validate(presets.tiny(), num_devices=8)
    tiny = presets.tiny()
    # A config file can hold anything: a string for a bool, a bool for an int, a typo'd
    # choice, NaN; each is refused where it is built, all problems in one line.
    with pytest.raises(pydantic.ValidationError) as err:
        dataclasses.replace(tiny.model, post_ln="yes", num_layers=True, dropout=float("nan"))
    line = validation_message(err.value, "model")
    assert line.startswith("model: ") and "\n" not in line
    for named in ("post_ln='yes'", "num_layers=True", "dropout=nan"):
        assert named in line, line
    with pytest.raises(pydantic.ValidationError, match="muon_scale"):
        dataclasses.replace(tiny.optim, muon_scale="huge")
    assert dataclasses.replace(tiny.optim, clip_norm=None).clip_norm is None  # allowed there
    with pytest.raises(pydantic.ValidationError) as err:
        dataclasses.replace(tiny.objective, mask_token_share=0.8, random_shot_share=0.3)
    assert validation_message(err.value, "objective") == (
        "objective: random_shot_share=0.3: mask_token_share=0.8 + this exceeds 1"
    )


def test_validation_message_is_one_line_of_every_problem():
    @pydantic.dataclasses.dataclass(config=pydantic.ConfigDict(strict=True, extra="forbid"))
    class Section:
        name: typing.Literal["a", "b"]
        count: int = 1

    with pytest.raises(pydantic.ValidationError) as err:
        Section(name="a\nb c" * 30, count="2", colour=3)
    line = validation_message(err.value, "settings.json")
    assert "\n" not in line and line.startswith("settings.json: name='a\\nb ca\\nb c")
    assert "...: Input should be 'a' or 'b'; " in line  # a long value is cut
    assert "count='2': Input should be a valid integer" in line  # quoted: its type is wrong
    assert line.endswith("colour=3: unknown setting")
    with pytest.raises(pydantic.ValidationError) as err:
        Section(name="c")
    assert validation_message(err.value, "x") == "x: name=c: Input should be 'a' or 'b'"
    with pytest.raises(pydantic.ValidationError) as err:
        Section()  # missing: no value to show
    assert validation_message(err.value, "x") == "x: name: Field required"


def test_overrides_coerce_to_the_declared_type():
    cfg = config_lib.apply_overrides(
        presets.tiny(),
        ["data.split=none", "model.attention_impl=cudnn", "optim.clip_norm=null", "train.seed=7"],
    )
    assert cfg.data.split is None and cfg.model.attention_impl == "cudnn"
    assert cfg.optim.clip_norm is None and cfg.train.seed == 7
    assert config_lib.from_dict(config_lib.to_dict(cfg)) == cfg
    for bad in ("train.seed=1.5", "data.split=none-ish", "model.remat=2", "train.steps=none"):
        with pytest.raises(config_lib.ConfigError, match=f"^--set: {bad}: "):
            config_lib.apply_overrides(presets.tiny(), [bad])
    # Checked once after all overrides: a rule between two keys holds whatever their order.
    cfg = config_lib.apply_overrides(presets.tiny(), ["model.num_heads=3", "model.hidden_size=48"])
    assert (cfg.model.hidden_size, cfg.model.num_heads) == (48, 3)
    with pytest.raises(config_lib.ConfigError, match="unknown key 'hidden'; valid here: "):
        config_lib.apply_overrides(presets.tiny(), ["model.hidden=48"])


def test_saved_config_json_is_read_strictly():
    data = config_lib.to_dict(presets.tiny())
    assert config_lib.from_dict(json.loads(json.dumps(data))) == presets.tiny()
    data["model"]["hiden_size"] = 64
    data["train"]["steps"] = "100"
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.from_dict(data)
    assert str(err.value) == (
        "config JSON: model.hiden_size=64: unknown setting; "
        "train.steps='100': Input should be a valid integer"
    )


def test_bad_value_in_a_config_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "mine.py"
    path.write_text(
        "from mediafm_jax import presets\n"
        "from mediafm_jax.config import ModelConfig\n"
        "import dataclasses\n"
        "def get_config(arg=None):\n"
        "    return dataclasses.replace(presets.tiny(), model=ModelConfig(num_heads='4'))\n"
    )
    argv = ["train", "--config", path, "--store", tmp_path / "s", "--workdir", tmp_path / "r"]
    err = _refused(capsys, argv, tmp_path)
    assert err.endswith(
        f"error: --config {path}: ModelConfig: num_heads='4': Input should be a valid integer"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.py"]


@pytest.mark.parametrize(
    ("name", "text", "named"),
    [
        ("mine.json", '{"train": {"steps": 20}}', "not a Python file"),  # was an AssertionError
        ("mine.py", "def get_config(arg=None:\n    pass\n", "line 1: "),  # was a SyntaxError
    ],
)
def test_a_config_file_that_cannot_load_is_one_line(tmp_path, capsys, name, text, named):
    path = tmp_path / name
    path.write_text(text)
    argv = ["train", "--config", path, "--store", tmp_path / "s", "--workdir", tmp_path / "r"]
    err = _refused(capsys, argv, tmp_path)
    assert f"error: --config {path}: {named}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_config_file_arg_sets_steps_batch_seed_and_variant():
    demo = config_lib.load_config_file("experiments/configs/demo.py:steps=50")
    assert demo == dataclasses.replace(
        presets.demo(), train=dataclasses.replace(presets.demo().train, steps=50)
    )
    mixed = config_lib.load_config_file(
        "experiments/configs/large_8xh100.py:variant=tiny,batch_size=16,seed=3"
    )
    assert mixed.model == presets.tiny().model  # the tiny model on the 8xH100 layout
    assert (mixed.train.batch_size, mixed.train.seed, mixed.mesh.fsdp) == (16, 3, 8)
    # The typed target configs equal what their string overrides used to say.
    for path, base, overrides in [
        ("large_8xh100", presets.large(), ["mesh.data=1", "train.batch_size=256"]),
        ("large_4x8xh100", presets.large(), ["mesh.data=4", "train.batch_size=1024"]),
        ("base_v5p32", presets.base(), ["mesh.data=4", "mesh.fsdp=4", "train.batch_size=512"]),
    ]:
        attention = "none" if path == "base_v5p32" else "cudnn"
        expected = config_lib.apply_overrides(
            base, [*overrides, "mesh.tensor=1", f"model.attention_impl={attention}"]
        )
        assert config_lib.load_config_file(f"experiments/configs/{path}.py") == expected, path
    movienet = config_lib.load_config_file("experiments/configs/movienet.py")
    assert (movienet.name, movienet.model.max_shots, movienet.train.steps) == (
        "movienet318",
        512,
        1200,
    )


@pytest.mark.parametrize(
    ("arg", "named"),
    [
        ("stpes=5", "unknown arg 'stpes=5'"),
        ("steps=abc", "arg: train.steps=abc: Input should be a valid integer"),
        ("seed=-1", "arg: train.seed=-1: Input should be greater than or equal to 0"),
        ("variant=huge", "arg variant='huge': expected one of"),
    ],
)
def test_bad_config_arg_is_one_line(tmp_path, capsys, arg, named):
    argv = ["train", "--config", f"experiments/configs/demo.py:{arg}"]
    err = _refused(
        capsys, [*argv, "--store", tmp_path / "s", "--workdir", tmp_path / "r"], tmp_path
    )
    assert err.startswith("error: --config experiments/configs/demo.py:") or "--config" in err
    assert named in err
    assert list(tmp_path.iterdir()) == []


def test_config_arg_reaches_the_run(tmp_path, capsys):
    """demo.py:steps=50 is accepted: the refusal is about the missing store, not the arg."""
    argv = ["train", "--config", "experiments/configs/demo.py:steps=50"]
    code, err = run_cli(
        [*argv, "--store", str(tmp_path / "nope"), "--workdir", str(tmp_path / "r")], capsys
    )
    assert code == 2 and "nope" in err[0] and "Input should" not in err[0]


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("--devices", "0", "--devices 0: expected a count >= 1"),
        ("--devices", "-2", "--devices -2"),
        ("--mfu", "0", "--mfu 0.0: expected a fraction in (0, 1]"),
        ("--mfu", "1.5", "--mfu 1.5"),
        ("--fused", "0", "--fused 0"),
        ("--catalog-shots", "-5", "--catalog-shots -5"),
    ],
)
def test_plan_refuses_impossible_targets(tmp_path, capsys, flag, value, named):
    """plan with 0 devices, an MFU outside (0, 1] or an empty catalog: one line"""
    argv = ["plan", "--config", "experiments/configs/tiny.py", flag, value]
    assert_one_line_error(argv, capsys, tmp_path, named)
