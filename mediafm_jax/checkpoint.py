"""Orbax checkpoints of a run: train state, data-iterator state and config, per step.

``RUN/checkpoints/<step>/{state,data,config}``. Saves are asynchronous (the next steps run
while the arrays are written) and every process takes part. Restores place arrays on the
caller's mesh: a checkpoint written on 8 devices restores on 1 and vice versa. For
inference only the parameters are read (``partial_restore``), not the optimizer state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


def _restore_args(abstract: Any) -> Any:
    return jax.tree.map(
        lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype),
        abstract,
    )


class Checkpointer:
    def __init__(self, workdir: str | Path, keep: int = 3, async_save: bool = True):
        self.directory = Path(workdir).absolute() / "checkpoints"
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True
        )
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_names=("state", "data", "config"),
            options=options,
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict, config: dict) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeSave(state),
                data=ocp.args.JsonSave(data_state),
                config=ocp.args.JsonSave(config),
            ),
            force=True,
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict, dict]:
        """Full restore (resume): state placed as ``abstract_state``'s shardings say."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=abstract_state, restore_args=_restore_args(abstract_state)
                ),
                data=ocp.args.JsonRestore(),
                config=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], restored["data"], restored["config"]

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Parameters only, for inference; the optimizer state is never read."""
        item = {"params": abstract_params}
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=item, restore_args=_restore_args(item), partial_restore=True
                )
            ),
        )
        return restored["state"]["params"]

    def restore_config(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))[
            "config"
        ]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
