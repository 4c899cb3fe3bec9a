"""The run directory and its record: one owner for what a run keeps and how it is read.

Layout (docs/DESIGN.md, the run record)::

    RUN/
      checkpoints/<step>/      state, data-iterator state and the run record (Checkpointer)
      config.json              the settings, readable by people (the record is the truth)
      readout.json             the readout chosen on validation titles (optional)
      config_history.jsonl     settings a resume changed with --allow-config-change
      metrics.jsonl, plots/    training curves

The *run record*, saved with every checkpoint, is the config plus what the data decided:
``data_dims`` (fused width, title width, modality columns) and ``store`` (the identity of
the shot store it trained on). Training writes it (``record``); resume, embed, probe and
search read it back through ``read_record``, which also maps keys that older runs wrote
elsewhere (``RENAMED``), so their run directories stay readable.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from mediafm_jax import config as config_lib
from mediafm_jax import outputs
from mediafm_jax.checkpoint import REJECTED_DIR
from mediafm_jax.config import ExperimentConfig
from mediafm_jax.data import store as store_lib
from mediafm_jax.data.store import ShotStore
from mediafm_jax.errors import StoreError
from mediafm_jax.model import DataDims
from mediafm_jax.readouts import READOUTS

CHECKPOINTS = "checkpoints"
CONFIG_FILE = "config.json"
READOUT_FILE = "readout.json"
HISTORY_FILE = "config_history.jsonl"
METRICS_FILE = "metrics.jsonl"
# what a run directory holds (its marker lists it: a demo's --overwrite keeps other files)
LAYOUT = (
    f"{CHECKPOINTS}/",
    f"{REJECTED_DIR}/",
    CONFIG_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    "tb/",
    "plots/",
    READOUT_FILE,
)
RECORD_KEYS = ("data_dims", "store")  # saved beside the config, not config fields
# Settings that moved: old dotted key -> new dotted key (read_record and resume map them).
RENAMED = {"objective.per_modality_norm": "model.per_modality_norm"}


def data_dims(store: ShotStore, global_input: str = "title_embedding") -> DataDims:
    """The shapes a store gives a model: fused width, [GLOBAL]'s input width, columns."""
    return DataDims(
        fused=store.num_features,
        title=store.global_vectors(global_input).shape[1],
        modalities=tuple((m.start, m.stop) for m in store.modalities),
    )


def store_identity(store: ShotStore) -> dict[str, Any]:
    """What makes a store the same data: its manifest checksum, columns and counts."""
    return {
        "root": os.path.abspath(store.root) if store_lib.is_local(store.root) else store.root,
        "checksum": store.manifest.get("checksums"),
        "modalities": [[m.name, m.start, m.stop] for m in store.modalities],
        "titles": store.num_titles,
        "shots": store.num_shots,
    }


def record(config: ExperimentConfig, dims: DataDims, store: ShotStore) -> dict[str, Any]:
    """The run record a checkpoint saves: the config, the data dims and the store."""
    return {
        **config_lib.to_dict(config),
        "data_dims": dataclasses.asdict(dims),
        "store": store_identity(store),
    }


def upgrade(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved record with renamed keys moved to where this version keeps them."""
    saved = copy.deepcopy(saved)
    for old, new in RENAMED.items():
        *old_path, old_key = old.split(".")
        section = saved
        for part in old_path:
            section = section.get(part) if isinstance(section, dict) else None
        if not isinstance(section, dict) or old_key not in section:
            continue
        value = section.pop(old_key)
        *new_path, new_key = new.split(".")
        target = saved
        for part in new_path:
            target = target.setdefault(part, {})
        target.setdefault(new_key, value)
    return saved


def read_record(saved: dict[str, Any]) -> tuple[ExperimentConfig, DataDims]:
    """A checkpoint's saved record -> (validated config, data dims)."""
    saved = upgrade(saved)
    dims = DataDims(
        fused=saved["data_dims"]["fused"],
        title=saved["data_dims"]["title"],
        modalities=tuple(tuple(m) for m in saved["data_dims"]["modalities"]),
    )
    config = config_lib.from_dict({k: v for k, v in saved.items() if k not in RECORD_KEYS})
    return config, dims


def check_store(run_dir: str | Path, dims: DataDims, store: ShotStore) -> None:
    """Raises unless ``store`` has the columns the run was trained on."""
    ours = tuple((m.start, m.stop) for m in store.modalities)
    if store.num_features != dims.fused or ours != dims.modalities:
        raise StoreError(
            f"{store.root}: modality columns {ours} differ from the columns {dims.modalities} "
            f"that the run {run_dir} was trained on"
        )


def recorded_readout(run_dir: str | Path) -> str | None:
    """The readout recorded in ``RUN/readout.json`` (``probe.choose_readout`` writes it
    after choosing on validation titles), or None when the run records none."""
    path = Path(run_dir) / READOUT_FILE
    if not path.is_file():
        return None
    try:
        layers = json.loads(path.read_text())["layers"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StoreError(f"{path}: unreadable readout record ({err})") from None
    if layers not in READOUTS:
        raise StoreError(f"{path}: layers {layers!r}, expected one of {READOUTS}")
    return layers


def record_readout(run_dir: str | Path, layers: str, chosen_on: dict) -> Path:
    """Writes ``RUN/readout.json`` so that embed, probe and search use ``layers``."""
    if layers not in READOUTS:
        raise ValueError(f"layers={layers!r}: expected one of {READOUTS}")
    path = Path(run_dir) / READOUT_FILE
    text = json.dumps({"layers": layers, "chosen_on": chosen_on}, indent=1) + "\n"
    try:
        outputs.atomic_file(path, lambda temp: temp.write_text(text))
    except OSError as err:
        raise StoreError(f"{path}: cannot record the readout ({err.strerror or err})") from None
    return path
