"""Optimizer-state shardings: every parameter-shaped copy is laid out like its parameter."""

import dataclasses

import jax
from flax import nnx
from jax.sharding import PartitionSpec

from mediafm_jax import optim, presets, sharding
from mediafm_jax.config import MeshConfig
from mediafm_jax.model import DataDims, Encoder


def test_optimizer_state_shardings_follow_the_parameters():
    cfg = presets.tiny()  # hidden 32, mlp 64: every named dim divides the 2 x 2 x 2 mesh
    dims = DataDims(30, 7, ((0, 30),))
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2), jax.devices()[:8])
    state = nnx.state(nnx.eval_shape(lambda: Encoder(cfg.model, dims, nnx.Rngs(0))), nnx.Param)
    params = nnx.to_pure_dict(state)
    param_shardings = sharding.param_shardings(params, sharding.param_axes(state), mesh)
    by_path = {
        jax.tree_util.keystr(path): (leaf.shape, s)
        for (path, leaf), s in zip(
            jax.tree_util.tree_flatten_with_path(params)[0],
            jax.tree.leaves(param_shardings),
            strict=True,
        )
    }
    for kind, accumulate, q_copies in (("muon_adamw", 2, 2), ("adamw", 1, 2)):
        optim_cfg = dataclasses.replace(cfg.optim, kind=kind, accumulate_steps=accumulate)
        optimizer = optim.build_optimizer(optim_cfg, 10, params, mesh)
        abstract_opt = jax.eval_shape(optimizer.init, params)
        got = sharding.opt_state_shardings(optimizer, abstract_opt, param_shardings, mesh)
        leaves = jax.tree_util.tree_flatten_with_path(abstract_opt)[0]
        shardings = jax.tree.leaves(got)
        assert len(leaves) == len(shardings)
        q_kernel = 0
        for (path, leaf), s in zip(leaves, shardings, strict=True):
            # Reference: the parameter whose key path ends this leaf's path, with its shape.
            name = jax.tree_util.keystr(path)
            match = [v for p, v in by_path.items() if name.endswith(p) and v[0] == leaf.shape]
            if match:
                assert s == match[0][1], name
                q_kernel += name.endswith("['blocks'][0]['q']['kernel']")
            else:  # counters
                assert leaf.ndim == 0 and s.spec == PartitionSpec(), name
        # muon_adamw: Muon's momentum + the accumulated gradient; adamw: mu and nu.
        assert q_kernel == q_copies
        assert by_path["['blocks'][0]['q']['kernel']"][1].spec == PartitionSpec("fsdp", "tensor")
