"""`mediafm plan` numbers against hand counts and the model itself."""

import math

import jax
from flax import nnx

from mediafm_jax import config as config_lib
from mediafm_jax import plan, presets
from mediafm_jax.model import DataDims, Encoder


def hand_count(cfg, fused: int, title: int) -> tuple[int, int]:
    """(all params, block matrices) of the encoder, counted by hand from its layers."""
    m = cfg.model
    h, f = m.hidden_size, m.mlp_size
    matrices = 4 * h * h + 2 * h * f  # q, k, v, o, mlp_in, mlp_out
    block_other = 3 * h + f + h + 4 * h  # q/v/o biases, mlp biases, two LayerNorms
    embed = fused * h + h + max(title, 1) * h + h + 2 * h + (m.max_shots + 2) * h + 2 * h
    final = 0 if m.post_ln else 2 * h
    output = h * fused + fused
    total = m.num_layers * (matrices + block_other) + embed + final + output
    return total, m.num_layers * matrices


def test_parameter_count_matches_a_hand_count():
    for cfg in (
        presets.tiny(),
        presets.demo(),
        config_lib.apply_overrides(presets.tiny(), ["model.post_ln=true"]),
    ):
        total, matrices = hand_count(cfg, 30, 7)
        assert plan.count_params(cfg, 30, 7) == (total, matrices, matrices)
        model = nnx.eval_shape(
            lambda cfg=cfg: Encoder(cfg.model, DataDims(30, 7, ((0, 30),)), nnx.Rngs(0))
        )
        actual = sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        assert actual == total


def test_tiny_plan_by_hand():
    cfg = config_lib.apply_overrides(
        presets.tiny(), ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"]
    )
    # tiny: hidden 32, 2 layers, mlp 64, window 64 -> tokens per window 66.
    matmul = 2 * (4 * 32 * 32 + 2 * 32 * 64)  # 16,384
    blocks = 6 * matmul * 66 / 64
    attention = 12 * 2 * 66 * 66 * 32 / 64
    projections = 6 * 30 * 32 * 1.2
    p = plan.make_plan(cfg, 8, plan.CHIPS["h100"], fused=30, title=7, catalog_shots=1000, mfu=0.5)
    assert p.matmul_params == matmul
    assert math.isclose(p.flops_per_shot, blocks + attention + projections)
    assert p.mesh == (2, 2, 2)
    total = plan.count_params(cfg, 30, 7)[0]
    assert math.isclose(p.param_bytes_per_device, 4 * (matmul / 4 + (total - matmul) / 2))
    assert math.isclose(p.shots_per_s_per_host, 989e12 * 0.5 / p.flops_per_shot * 8)
    assert p.input_bytes_per_s_per_host == p.shots_per_s_per_host * 30 * 2
    assert p.catalog_bytes == 1000 * 30 * 2 and p.catalog_fits_host_ram


def test_base_matches_the_design_figures():
    p = plan.make_plan(presets.base(), 8, plan.CHIPS["h100"])
    assert 85e6 < p.params < 95e6  # "about 90M params"
    assert 0.55e9 < p.flops_per_shot < 0.65e9  # "about 0.6 GFLOP per shot per training step"


def test_plan_counts_the_configs_mask_ratio():
    """The output projection runs at the targets only: masking half the shots costs more."""
    base = presets.tiny()
    half = config_lib.apply_overrides(base, ["objective.mask_ratio=0.5"])
    cost = lambda cfg: plan.make_plan(cfg, 8, plan.CHIPS["h100"], fused=30, title=7)
    assert math.isclose(cost(half).flops_per_shot - cost(base).flops_per_shot, 6 * 30 * 32 * 0.3)
    assert cost(half).shots_per_s_per_host < cost(base).shots_per_s_per_host
