"""The run record (run.py): written by training, read back by inference, old runs kept
readable; and the fusion setting every reader takes from it."""

import json

import numpy as np
import pytest

from mediafm_jax import config as config_lib
from mediafm_jax import presets, run, search, train
from mediafm_jax.data.store import ShotStore
from mediafm_jax.errors import ConfigError, StoreError
from mediafm_jax.fusion import fuse


def _old_record(store: ShotStore, per_modality_norm: bool) -> dict:
    """A record as runs wrote it before fusion moved to the model's input."""
    config = config_lib.apply_overrides(
        presets.tiny(), [f"model.per_modality_norm={per_modality_norm}"]
    )
    saved = json.loads(json.dumps(run.record(config, run.data_dims(store), store)))
    saved["objective"]["per_modality_norm"] = saved["model"].pop("per_modality_norm")
    return saved


@pytest.mark.parametrize("per_modality_norm", [False, True])
def test_an_old_record_reads_with_fusion_moved(tiny_store, per_modality_norm):
    store = ShotStore(tiny_store)
    old = _old_record(store, per_modality_norm)
    config, dims = run.read_record(old)
    assert config.model.per_modality_norm is per_modality_norm
    assert dims == run.data_dims(store)
    assert "per_modality_norm" not in old["model"]  # the caller's dict is not edited
    # a resume of such a run sees no change of settings
    current = json.loads(json.dumps(run.record(config, dims, store)))
    assert train.config_changes(run.upgrade(old), current) == {}


def test_a_record_with_an_unknown_key_is_refused(tiny_store):
    store = ShotStore(tiny_store)
    saved = json.loads(json.dumps(run.record(presets.tiny(), run.data_dims(store), store)))
    saved["model"]["dropout_kind"] = "x"
    with pytest.raises(ConfigError, match="dropout_kind"):
        run.read_record(saved)


def test_fusion_with_a_title_mean_global_is_refused():
    overrides = ["model.per_modality_norm=true", "model.global_input=title_mean"]
    with pytest.raises(
        ConfigError, match="per_modality_norm=true: not with global_input='title_mean'"
    ):
        config_lib.apply_overrides(presets.tiny(), overrides)


def test_search_concat_fuses_as_the_run_did(tiny_store, tmp_path, capsys):
    """An embedding store records its run's fusion; concat search takes it from there,
    and says so when a store written before that records nothing."""
    from mediafm_jax.data import store as store_lib

    store = ShotStore(tiny_store)
    columns = [(m.start, m.stop) for m in store.modalities]
    raw = store.read_rows(0, store.num_shots)
    root = tmp_path / "emb"
    rng = np.random.default_rng(0)
    store_lib.create_array(str(root), "shot_embedding", (store.num_shots, 4), "float32", 256).write(
        rng.normal(size=(store.num_shots, 4)).astype(np.float32)
    ).result()
    store_lib.create_array(str(root), "cls_embedding", (store.num_titles, 4), "float32", 256).write(
        np.zeros((store.num_titles, 4), np.float32)
    ).result()
    manifest = {
        "format_version": 1,
        "kind": "embeddings",
        "title_ids": store.title_ids,
        "shot_store_checksum": store.manifest.get("checksums"),
        "counts": {"titles": store.num_titles, "shots": store.num_shots},
    }
    for recorded in (True, False):
        store_lib.write_manifest(
            str(root), {**manifest, "per_modality_norm": recorded}, progress=False
        )
        got = search.Searcher(store, str(root), method="concat", backend="exact").vectors_nd
        np.testing.assert_array_equal(got, fuse(raw, columns, recorded))
    assert not np.allclose(fuse(raw, columns, True), fuse(raw, columns, False))
    assert capsys.readouterr().err == ""
    store_lib.write_manifest(str(root), manifest, progress=False)  # as older embeds wrote it
    got = search.Searcher(store, str(root), method="concat", backend="exact").vectors_nd
    np.testing.assert_array_equal(got, fuse(raw, columns, False))
    assert "does not record its run's fusion" in capsys.readouterr().err


def test_readout_record_round_trip(tmp_path):
    assert run.recorded_readout(tmp_path) is None
    run.record_readout(tmp_path, "last+input", {"split": "val"})
    assert run.recorded_readout(tmp_path) == "last+input"
    (tmp_path / run.READOUT_FILE).write_text("{")
    with pytest.raises(StoreError, match="unreadable readout record"):
        run.recorded_readout(tmp_path)
