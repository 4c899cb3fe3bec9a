"""Encoder and objective against a float64 NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from reference import forward, selected

from mediafm_jax import masking
from mediafm_jax.config import ModelConfig, ObjectiveConfig
from mediafm_jax.fusion import fuse
from mediafm_jax.model import DataDims, Encoder
from mediafm_jax.objective import corrupt, msm_loss

DIMS = DataDims(fused=14, title=5, modalities=((0, 6), (6, 10), (10, 14)))
CFG = ModelConfig(hidden_size=16, num_layers=2, num_heads=4, mlp_size=32, max_shots=12)


def make_batch(seed=0, b=3, w=12, lengths=(12, 7, 3)):
    rng = np.random.default_rng(seed)
    valid = np.arange(w)[None, :] < np.array(lengths)[:, None]
    shots = rng.normal(size=(b, w, DIMS.fused)).astype(np.float16) * valid[..., None]
    shots[1, 2, 10:] = 0  # a shot without text
    masked = (rng.random((b, w)) < 0.25) & valid
    masked[:, 0] = True
    present = np.ones((b, w, 3), np.uint8)
    shots[2, 1], present[2, 1], masked[2, 1] = 0, 0, True  # masked, but nothing to predict
    return {
        "shots": shots,
        "present": present,
        "valid": valid,
        "targets": masking.targets_from_mask(masked, masking.max_targets(w, 0.5)),
        "title_embedding": rng.normal(size=(b, DIMS.title)).astype(np.float16),
    }


def params_of(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


@pytest.mark.parametrize("post_ln", [False, True])
def test_loss_matches_float64_reference(post_ln):
    config = ModelConfig(**{**CFG.__dict__, "post_ln": post_ln})
    model = Encoder(config, DIMS, nnx.Rngs(1))
    batch = make_batch()
    # mask_ratio 0.2 would allow 2 targets per 12-shot window: the loss still covers every
    # listed target (4 or more in row 0), none is dropped.
    obj = ObjectiveConfig(mask_ratio=0.2)
    graphdef, state = nnx.split(model)

    @jax.jit  # one program, not op by op
    def loss_and_hidden(state, batch, mask_bw):
        model = nnx.merge(graphdef, state)
        loss, metrics = msm_loss(model, batch, obj, key=None, train=False)
        fused = fuse(batch["shots"], DIMS.modalities)
        hidden = model(fused, batch["valid"], batch["title_embedding"], mask_bw=mask_bw)
        return loss, metrics, hidden

    with jax.default_matmul_precision("highest"):
        mask_bw = selected(batch) & batch["present"].any(-1)
        loss, metrics, hidden = loss_and_hidden(state, batch, mask_bw)
    ref_hidden, ref_loss = forward(params_of(model), batch, config.num_heads, post_ln)
    valid_tokens = np.concatenate([np.ones((3, 2), bool), batch["valid"]], axis=1)
    np.testing.assert_allclose(
        np.asarray(hidden)[valid_tokens], ref_hidden[valid_tokens], atol=2e-4
    )
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    assert int(metrics["masked_shots"]) == selected(batch).sum() - 1  # not the empty shot


def test_shapes_and_padding_does_not_leak():
    model = Encoder(CFG, DIMS, nnx.Rngs(0))
    batch = make_batch()
    fused = fuse(batch["shots"], DIMS.modalities)
    hidden, layers = model(fused, batch["valid"], batch["title_embedding"], return_all_layers=True)
    assert hidden.shape == (3, 14, 16) and layers.shape == (3, 3, 14, 16)
    noisy = dict(batch)
    noisy["shots"] = batch["shots"] + (~batch["valid"][..., None]) * np.float16(5.0)
    graphdef, state = nnx.split(model)
    loss = jax.jit(  # one program, not op by op
        lambda state, batch: msm_loss(
            nnx.merge(graphdef, state), batch, ObjectiveConfig(), train=False
        )[0]
    )
    a, b = loss(state, batch), loss(state, noisy)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)


def test_gradients_reach_every_parameter():
    model = Encoder(CFG, DIMS, nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(params)
    batch = jax.tree.map(jnp.asarray, make_batch())

    def loss_fn(p):
        return msm_loss(nnx.merge(graphdef, p), batch, ObjectiveConfig(), key=jax.random.key(0))[0]

    grads = jax.device_get(jax.jit(jax.grad(loss_fn))(params))  # one program, not op by op
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        assert np.abs(g).max() > 0, jax.tree_util.keystr(path)


def test_fuse_unit_norm_and_zero_rows():
    batch = make_batch()
    fused = np.asarray(fuse(batch["shots"], DIMS.modalities))
    norms = np.linalg.norm(fused, axis=-1)
    content = batch["present"].any(-1)
    np.testing.assert_allclose(norms[batch["valid"] & content], 1.0, rtol=1e-5)
    assert not fused[~batch["valid"] | ~content].any()
    per = np.asarray(fuse(batch["shots"], DIMS.modalities, per_modality_norm=True))
    video = per[0, 0, :6]
    np.testing.assert_allclose(np.linalg.norm(video), 1 / np.sqrt(3), rtol=1e-4)


@pytest.mark.parametrize("per_modality_norm", [False, True])
def test_numpy_fusion_is_the_jitted_jax_fusion(per_modality_norm):
    """One definition, two namespaces: the host's NumPy fusion (search, probe, ingest)
    equals what the device computes under jit, modality dropout's keep mask included."""
    from mediafm_jax.objective import modality_keep

    batch = make_batch()
    keep = np.asarray(modality_keep(jnp.asarray(batch["present"]), 0.5, jax.random.key(0)))
    assert not keep.all() and keep.any()  # the mask drops something

    @jax.jit
    def on_device(shots, keep):
        return fuse(shots, DIMS.modalities, per_modality_norm, keep)

    for mask in (None, keep):
        host = fuse(batch["shots"], DIMS.modalities, per_modality_norm, mask)
        assert isinstance(host, np.ndarray) and host.dtype == np.float32
        device = on_device(jnp.asarray(batch["shots"]), None if mask is None else jnp.asarray(mask))
        np.testing.assert_allclose(host, np.asarray(device), rtol=1e-6, atol=1e-7)
    # an independent float64 reference of the per-modality fusion
    x = batch["shots"].astype(np.float64)
    parts = [x[..., a:b] for a, b in DIMS.modalities]
    if per_modality_norm:
        parts = [p / (np.linalg.norm(p, axis=-1, keepdims=True) + 1e-6) for p in parts]
    ref = np.concatenate([p * keep[..., i : i + 1] for i, p in enumerate(parts)], -1)
    ref /= np.linalg.norm(ref, axis=-1, keepdims=True) + 1e-6
    np.testing.assert_allclose(fuse(x, DIMS.modalities, per_modality_norm, keep), ref, atol=1e-12)


def test_corruption_shares():
    b, w = 64, 256
    valid = np.ones((b, w), bool)
    masked = np.random.default_rng(0).random((b, w)) < 0.5
    fused = jnp.asarray(np.random.default_rng(1).normal(size=(b, w, 4)), jnp.float32)
    inputs, use_mask = corrupt(fused, valid, masked, ObjectiveConfig(), jax.random.key(3))
    use_mask = np.asarray(use_mask)
    changed = np.asarray((inputs != fused).any(-1))
    assert not (use_mask & ~masked).any() and not (changed & ~masked).any()
    n = masked.sum()
    assert abs(use_mask.sum() / n - 0.8) < 0.02
    assert abs(changed.sum() / n - 0.1) < 0.02


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_positions_add_has_the_plain_add_gradient(dtype):
    """The written-out gradient of the learned positions (a product with ones, for XLA:CPU's
    sake) is the plain broadcast add's, for both inputs and in the training dtypes."""
    from mediafm_jax.model import add_over_batch

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(5, 7, 3)), dtype)
    table = jnp.asarray(rng.normal(size=(7, 3)), dtype)
    cotangent = jnp.asarray(rng.normal(size=(5, 7, 3)), dtype)
    ours_out, ours_vjp = jax.vjp(add_over_batch, x, table)
    plain_out, plain_vjp = jax.vjp(lambda a, t: a + t, x, table)
    np.testing.assert_array_equal(
        np.asarray(ours_out, np.float32), np.asarray(plain_out, np.float32)
    )
    tol = 1e-6 if dtype == jnp.float32 else 2e-2
    for ours, plain in zip(ours_vjp(cotangent), plain_vjp(cotangent), strict=True):
        assert ours.dtype == plain.dtype and ours.shape == plain.shape
        np.testing.assert_allclose(
            np.asarray(ours, np.float32), np.asarray(plain, np.float32), rtol=tol, atol=tol
        )
    expected_table_grad = np.asarray(cotangent, np.float64).sum(0)
    np.testing.assert_allclose(
        np.asarray(ours_vjp(cotangent)[1], np.float64), expected_table_grad, rtol=tol, atol=tol * 5
    )
