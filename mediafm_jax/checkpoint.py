"""Orbax checkpoints of a run: train state, data-iterator state, config and digest, per step.

``RUN/checkpoints/<step>/{state,data,config,digest}``. Saves are asynchronous (the next
steps run while the arrays are written) and every process takes part. Restores place
arrays on the caller's mesh: a checkpoint written on 8 devices restores on 1 and vice
versa. For inference only the parameters are read (``partial_restore``).

Each save records a digest of the state: per leaf, its shape, dtype, a wrapping uint32 sum
of the raw bits and a position-weighted one, and its count of non-finite values. Integer
sums are exact and order-free, so a restore on any mesh recomputes the same numbers; one
flipped bit changes them. ``restore_newest`` walks the steps newest first and takes the
first that restores and matches its digest, saying which it skipped and why.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mediafm_jax.errors import CheckpointError

DIGEST_VERSION = 1
REJECTED_DIR = "checkpoints-rejected"


def _restore_args(abstract: Any) -> Any:
    return jax.tree.map(
        lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype),
        abstract,
    )


def _path_name(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _digest_columns(leaves: list[jax.Array]) -> jax.Array:
    """[n_leaves, 3] uint32: bit sum, position-weighted bit sum, non-finite count."""
    rows = []
    for x in leaves:
        bits = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}"))
        bits = bits.astype(jnp.uint32)
        position, stride = jnp.zeros(x.shape, jnp.uint32), 1
        for axis in reversed(range(x.ndim)):  # the row-major flat index, wrapping
            iota = jax.lax.broadcasted_iota(jnp.uint32, x.shape, axis)
            position = position + iota * jnp.uint32(stride % 2**32)
            stride *= x.shape[axis]
        weight = position * jnp.uint32(2654435761) + jnp.uint32(1)
        nonfinite = jnp.uint32(0)
        if jnp.issubdtype(x.dtype, jnp.floating):
            nonfinite = jnp.sum(~jnp.isfinite(x), dtype=jnp.uint32)
        total = jnp.sum(bits, dtype=jnp.uint32)
        rows.append(jnp.stack([total, jnp.sum(bits * weight, dtype=jnp.uint32), nonfinite]))
    return jnp.stack(rows)


@functools.lru_cache(maxsize=8)
def _digest_program(replicated: jax.sharding.Sharding | None):
    """One jitted digest per output sharding: a save, a resume and a check of the same
    state reuse its trace and compile (a new ``jax.jit`` each call traced anew)."""
    return jax.jit(_digest_columns, out_shardings=replicated)


def state_digest(tree: Any) -> dict[str, dict[str, Any]]:
    """``{leaf path: {shape, dtype, sum, wsum, nonfinite}}`` of a (sharded) pytree.

    Computed on the devices in one jitted reduction with a replicated result, so every
    process gets the whole digest without reading other hosts' shards.
    """
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not flat:
        return {}
    leaves = [leaf for _, leaf in flat]
    mesh = next((x.sharding.mesh for x in leaves if hasattr(x.sharding, "mesh")), None)
    replicated = None
    if mesh is not None:
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    columns = _digest_program(replicated)(leaves)
    columns = np.asarray(jax.device_get(columns))
    return {
        _path_name(path): {
            "shape": list(leaf.shape),
            "dtype": str(leaf.dtype),
            "sum": int(row[0]),
            "wsum": int(row[1]),
            "nonfinite": int(row[2]),
        }
        for (path, leaf), row in zip(flat, columns, strict=True)
    }


def structure_mismatch(saved: dict[str, dict], abstract: Any, prefix: str = "") -> str | None:
    """The first leaf where a saved digest and an abstract tree disagree in layout, or None."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        name = prefix + _path_name(path)
        entry = saved.get(name)
        if entry is None:
            return f"{name} is not in the checkpoint"
        if tuple(entry["shape"]) != tuple(leaf.shape) or entry["dtype"] != str(leaf.dtype):
            return (
                f"{name} is {entry['dtype']}{entry['shape']} in the checkpoint, "
                f"{leaf.dtype}{list(leaf.shape)} here"
            )
    if not prefix:
        ours = {_path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]}
        extra = sorted(set(saved) - ours)
        if extra:
            return f"the checkpoint has {extra[0]}, which this config does not"
    return None


def digest_mismatch(saved: dict[str, dict] | None, restored: dict[str, dict]) -> str | None:
    """Why a restored tree's digest fails (differs from the saved one, or non-finite)."""
    for name, entry in restored.items():
        if entry["nonfinite"]:
            return f"{entry['nonfinite']} non-finite values in {name}"
        if saved is not None:
            want = saved.get(name)
            if want is None or (want["sum"], want["wsum"]) != (entry["sum"], entry["wsum"]):
                return f"digest mismatch in {name}"
    return None


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _all_agree(ok: bool) -> bool:
    """True on every process when ``ok`` is true on every process (a restore that failed on
    one host must fail everywhere, or the hosts would go separate ways)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.array([ok], np.int32))))


@dataclasses.dataclass
class Restored:
    step: int
    state: Any
    data: dict | None
    config: dict
    skipped: list[tuple[int, str]]


class Checkpointer:
    def __init__(
        self,
        workdir: str | Path,
        keep: int = 3,
        async_save: bool = True,
        create: bool = True,
        log: Callable[[str], None] | None = None,
    ):
        self.workdir = Path(workdir).absolute()
        self.directory = self.workdir / "checkpoints"
        if not create and not self.directory.is_dir():
            raise CheckpointError(f"{self.workdir}: no checkpoints (no {self.directory})")
        self.log = log if log is not None else _print_on_main
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=create
        )
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_names=("state", "data", "config", "digest"),
            options=options,
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict, config: dict) -> None:
        digest = {"version": DIGEST_VERSION, "leaves": state_digest(state)}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeSave(state),
                data=ocp.args.JsonSave(data_state),
                config=ocp.args.JsonSave(config),
                digest=ocp.args.JsonSave(digest),
            ),
            force=True,
        )

    def _read_json(self, step: int, names: tuple[str, ...]) -> dict:
        return self.manager.restore(
            step, args=ocp.args.Composite(**{n: ocp.args.JsonRestore() for n in names})
        )

    def _saved_digest(self, step: int) -> dict | None:
        """The step's digest leaves; None for a checkpoint written before digests."""
        if not (self.directory / str(step) / "digest").exists():
            return None
        return self._read_json(step, ("digest",))["digest"]["leaves"]

    def restore_config(self, step: int) -> dict:
        return self._read_json(step, ("config",))["config"]

    def _restore(self, step: int, abstract: Any, params_only: bool) -> tuple[Any, dict | None]:
        if params_only:
            item = {"params": abstract}
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.PyTreeRestore(
                        item=item, restore_args=_restore_args(item), partial_restore=True
                    )
                ),
            )
            return restored["state"], None
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(item=abstract, restore_args=_restore_args(abstract)),
                data=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], restored["data"]

    def restore_newest(
        self,
        abstract: Any,
        *,
        params_only: bool = False,
        step: int | None = None,
        check_config: Callable[[int, dict], None] | None = None,
    ) -> Restored:
        """The newest step that restores and verifies (or exactly ``step``).

        ``abstract``: the state's abstract tree (or the params' with ``params_only``).
        ``check_config(step, config)`` may raise to stop the search: a config that the
        caller cannot use is the user's to fix, not a damaged checkpoint to skip.
        Raises CheckpointError when no step qualifies.
        """
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"{self.workdir}: no checkpoints under {self.directory}")
        if step is not None and step not in steps:
            raise CheckpointError(f"{self.workdir}: no checkpoint at step {step} (have {steps})")
        candidates = [step] if step is not None else steps[::-1]
        skipped: list[tuple[int, str]] = []
        prefix = "params/" if params_only else ""
        for candidate in candidates:
            reason = None
            try:
                config = self.restore_config(candidate)
                saved = self._saved_digest(candidate)
            except Exception as err:  # a damaged step raises anything; we skip it
                reason = "config/digest unreadable: " + _reason(err)
            if not _all_agree(reason is None):
                skipped.append((candidate, reason or "unreadable on another process"))
                self.log(f"checkpoint step {candidate} skipped: {skipped[-1][1]}")
                continue
            if check_config is not None:
                check_config(candidate, config)
            if saved is not None:
                layout = structure_mismatch(saved, abstract, prefix)
                if layout is not None:
                    raise CheckpointError(
                        f"{self.directory / str(candidate)}: the saved state does not fit this "
                        f"config ({layout}); use a new --workdir or the run's settings"
                    )
            try:
                state, data = self._restore(candidate, abstract, params_only)
            except Exception as err:
                reason = "restore failed: " + _reason(err)
            if _all_agree(reason is None):
                reason = digest_mismatch(saved, state_digest(state))
                if reason is None:
                    if saved is None:
                        self.log(
                            f"checkpoint step {candidate}: no digest recorded (written before "
                            "digests); restored with a finiteness check only"
                        )
                    return Restored(candidate, state, data, config, skipped)
            skipped.append((candidate, reason or "restore failed on another process"))
            self.log(f"checkpoint step {candidate} skipped: {skipped[-1][1]}")
        tried = ", ".join(f"step {s} ({r})" for s, r in skipped)
        raise CheckpointError(f"{self.directory}: no checkpoint restores and verifies: {tried}")

    def set_aside(self, steps: list[int]) -> None:
        """Moves rejected steps to ``RUN/checkpoints-rejected/`` (kept, never deleted) so
        that Orbax neither counts them among the ``keep`` newest nor collides with them."""
        if steps and jax.process_index() == 0:
            target = self.workdir / REJECTED_DIR
            target.mkdir(exist_ok=True)
            for step in steps:
                source = self.directory / str(step)
                if not source.exists():
                    continue
                dest, n = target / str(step), 1
                while dest.exists():
                    dest, n = target / f"{step}.{n}", n + 1
                shutil.move(str(source), str(dest))
                self.log(f"moved rejected checkpoint {source} to {dest}")
        if steps and jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("mediafm checkpoints set aside")
        self.manager.reload()

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Parameters of exactly ``step``, verified; for inference and tests."""
        return self.restore_newest(abstract_params, params_only=True, step=step).state["params"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _print_on_main(line: str) -> None:
    if jax.process_index() == 0:
        print(line, flush=True)
