"""Muon against float64 NumPy, optax.contrib.muon, and its own invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pydantic
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from mediafm_jax import optim, sharding
from mediafm_jax.config import MeshConfig, ModelConfig, OptimConfig
from mediafm_jax.errors import validation_message
from mediafm_jax.model import DataDims, Encoder
from mediafm_jax.optim.muon import (
    DEFAULT_NS_COEFFS,
    POLAR_EXPRESS_COEFFS,
    newton_schulz,
    newton_schulz_flops,
    scale_by_muon,
)


def ns_float64(g, steps=5, coeffs=DEFAULT_NS_COEFFS, eps=1e-7, safety=1.0):
    x = np.asarray(g, np.float64)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / (np.linalg.norm(x) * safety + eps)
    schedule = np.broadcast_to(np.asarray(coeffs, np.float64), (steps, 3))
    for a, b, c in schedule:
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def with_spectrum(p, q, singular, seed=0):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(p, p)))
    v, _ = np.linalg.qr(rng.normal(size=(q, q)))
    k = min(p, q)
    return (u[:, :k] * singular) @ v[:, :k].T


@pytest.mark.parametrize("shape", [(24, 40), (40, 24), (32, 32)])
def test_newton_schulz_matches_float64(shape):
    g = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        out = newton_schulz(jnp.asarray(g), dtype=jnp.float32)
    np.testing.assert_allclose(np.asarray(out), ns_float64(g), atol=2e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("shape", [(32, 64), (64, 32), (48, 48)])
def test_singular_values_land_in_band(dtype, shape):
    k = min(shape)
    rest = np.random.default_rng(2).uniform(0.05, 1.0, k - 1)
    smallest = 2.001e-3 * np.linalg.norm(rest)
    singular = np.sort(np.r_[rest, smallest])[::-1]
    g = with_spectrum(*shape, singular)
    assert (np.linalg.svd(g, compute_uv=False) / np.linalg.norm(g)).min() >= 2e-3
    out = np.asarray(newton_schulz(jnp.asarray(g, jnp.float32), dtype=dtype), np.float64)
    s = np.linalg.svd(out, compute_uv=False)
    assert s.min() >= 0.65 and s.max() <= 1.22, (s.min(), s.max())


def test_transpose_scale_invariance_and_zeros():
    g = jnp.asarray(np.random.default_rng(3).normal(size=(20, 36)), jnp.float32)
    with jax.default_matmul_precision("highest"):
        ns = jax.jit(lambda x: newton_schulz(x, dtype=jnp.float32))  # one program per shape
        np.testing.assert_allclose(ns(g.T), ns(g).T, atol=1e-6)
        np.testing.assert_allclose(ns(1e3 * g), ns(g), atol=1e-5)
        np.testing.assert_allclose(ns(1e-3 * g), ns(g), atol=1e-4)
    zero = newton_schulz(jnp.zeros((8, 12)))
    assert not np.isnan(np.asarray(zero)).any() and not np.asarray(zero).any()


def test_schedule_of_coefficients():
    g = jnp.asarray(np.random.default_rng(4).normal(size=(8, 16)), jnp.float32)
    schedule = np.array([[3.0, -3.2, 1.2], [2.0, -1.5, 0.5], [1.875, -1.25, 0.375]])
    with jax.default_matmul_precision("highest"):
        out = newton_schulz(g, steps=3, coeffs=schedule, dtype=jnp.float32)
    x = np.asarray(g, np.float64) / np.linalg.norm(g)
    for a, b, c in schedule:
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    np.testing.assert_allclose(np.asarray(out), x, atol=2e-5)
    with pytest.raises(ValueError, match="coefficients"):
        newton_schulz(g, steps=5, coeffs=schedule)


def _tree(seed, shapes=((16, 32), (32, 16), (24, 24))):
    rng = np.random.default_rng(seed)
    return {f"w{i}": jnp.asarray(rng.normal(size=s), jnp.float32) for i, s in enumerate(shapes)}


def test_matches_optax_contrib_muon_step_after_step():
    params = _tree(0)
    ours = optax.chain(
        scale_by_muon(bias_correction=True, ns_dtype=jnp.float32, scale="keller", eps=1e-8),
        optax.add_decayed_weights(0.1),
        optax.scale_by_learning_rate(0.02),
    )
    dim_nums = jax.tree.map(lambda _: optax.contrib.MuonDimensionNumbers(0, 1), params)
    reference = optax.contrib.muon(
        learning_rate=0.02, weight_decay=0.1, eps=1e-8, muon_weight_dimension_numbers=dim_nums
    )
    update_ours, update_ref = jax.jit(ours.update), jax.jit(reference.update)  # not op by op
    with jax.default_matmul_precision("highest"):
        s_ours, s_ref = ours.init(params), reference.init(params)
        for step in range(6):
            grads = _tree(100 + step)
            u_ours, s_ours = update_ours(grads, s_ours, params)
            u_ref, s_ref = update_ref(grads, s_ref, params)
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), u_ours, u_ref
            )
            params = optax.apply_updates(params, u_ours)


def test_decoupled_weight_decay_identity():
    params, grads = _tree(1), _tree(2)
    make = lambda wd: optax.chain(
        scale_by_muon(ns_dtype=jnp.float32),
        optax.add_decayed_weights(wd),
        optax.scale_by_learning_rate(0.05),
    )
    u0, _ = make(0.0).update(grads, make(0.0).init(params), params)
    u1, _ = make(0.3).update(grads, make(0.3).init(params), params)
    jax.tree.map(
        lambda a, b, w: np.testing.assert_allclose(a - b, -0.05 * 0.3 * w, atol=1e-6),
        u1,
        u0,
        params,
    )


@pytest.mark.parametrize("shape", [(16, 128), (128, 16), (64, 64), (256, 96)])
def test_moonlight_rms_is_about_point_two(shape):
    g = {"w": jnp.asarray(np.random.default_rng(5).normal(size=shape), jnp.float32)}
    tx = scale_by_muon(ns_dtype=jnp.float32, scale="moonlight")
    u, _ = tx.update(g, tx.init(g))
    rms = float(jnp.sqrt(jnp.mean(u["w"] ** 2)))
    assert 0.15 <= rms <= 0.2, rms


def test_non_matrix_leaves_are_an_error():
    tx = scale_by_muon()
    with pytest.raises(ValueError, match=r"shape \(4,\).*\['bias'\]"):
        tx.init({"bias": jnp.zeros(4)})


def test_partition_rule_on_the_real_model():
    cfg = ModelConfig(hidden_size=16, num_layers=3, num_heads=2, mlp_size=32, max_shots=8)
    model = Encoder(cfg, DataDims(10, 4, ((0, 10),)), nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    labels = optim.param_labels(params)
    flat = {
        jax.tree_util.keystr(p): lab for p, lab in jax.tree_util.tree_flatten_with_path(labels)[0]
    }
    muon = sorted(k for k, v in flat.items() if v == "muon")
    expected = sorted(
        f"['blocks'][{i}]['{m}']['kernel']" for i in range(3) for m in optim.MUON_MATRICES
    )
    assert muon == expected
    assert flat["['input_proj']['kernel']"] == "adamw" and flat["['positions']"] == "adamw"
    assert all(v == "adamw" for v in jax.tree.leaves(optim.param_labels(params, "adamw")))
    text = optim.summary(params)
    assert "muon     18 leaves" in text and f"{4 * 3 * 16 * 16 + 3 * 2 * 16 * 32:,d} params" in text


def test_accumulation_equals_one_step_on_mean_gradient():
    params = {"blocks": {0: {"q": {"kernel": _tree(0)["w0"]}}}, "bias": jnp.ones(16)}
    cfg = OptimConfig(learning_rate=0.01, warmup_steps=0, clip_norm=None, muon_ns_dtype="float32")
    grads = [jax.tree.map(lambda x, i=i: x * (i + 1) * 0.1 + i, params) for i in range(3)]
    mean = jax.tree.map(lambda *g: sum(g) / 3, *grads)
    one = optim.build_optimizer(cfg, 10, params)
    u_ref, _ = jax.jit(one.update)(mean, one.init(params), params)
    acc = optim.build_optimizer(OptimConfig(**{**cfg.__dict__, "accumulate_steps": 3}), 10, params)
    state, update = acc.init(params), jax.jit(acc.update)
    for g in grads:
        u, state = update(g, state, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), u, u_ref)


def _sharded_setup(gather_free):
    mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=8, tensor=1))
    shapes = [(64, 32)] * 5 + [(32, 64)] * 3
    params = {
        f"w{i}": jnp.asarray(np.random.default_rng(i).normal(size=s), jnp.float32)
        for i, s in enumerate(shapes)
    }
    spec = NamedSharding(mesh, PartitionSpec("fsdp", None))
    stack = optim.stack_sharding_for(mesh) if gather_free else None
    tx = scale_by_muon(ns_dtype=jnp.float32, stack_sharding=stack)
    return mesh, params, spec, tx


@pytest.mark.parametrize("gather_free", [False, True])
def test_sharded_equals_unsharded_and_is_deterministic(gather_free):
    mesh, params, spec, tx = _sharded_setup(gather_free)
    plain = scale_by_muon(ns_dtype=jnp.float32)
    with jax.default_matmul_precision("highest"):
        expected, _ = plain.update(params, plain.init(params))
        sharded = jax.device_put(params, spec)
        with jax.set_mesh(mesh):
            update = jax.jit(lambda g, s: tx.update(g, s)[0])
            a = update(sharded, tx.init(sharded))
            b = update(sharded, tx.init(sharded))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=2e-5), a, expected)
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_gather_free_layout_avoids_all_gather():
    hlo = {}
    for gather_free in (False, True):
        mesh, params, spec, tx = _sharded_setup(gather_free)
        sharded = jax.device_put(params, spec)
        with jax.set_mesh(mesh):
            update = jax.jit(lambda g, s, tx=tx: tx.update(g, s)[0])
            hlo[gather_free] = update.lower(sharded, tx.init(sharded)).compile().as_text()
    assert "all-gather" in hlo[False] or "all-reduce" in hlo[False]
    assert "all-to-all" in hlo[True]
    assert "all-gather" not in hlo[True]


def test_flops_formula():
    assert newton_schulz_flops(64, 256) == 5 * (4 * 64 * 64 * 256 + 2 * 64**3)
    assert newton_schulz_flops(256, 64) == newton_schulz_flops(64, 256)


def _mixed_tree():
    shapes = [(24, 24)] * 3 + [(24, 40), (40, 24)] * 2
    rng = np.random.default_rng(5)
    return {f"w{i}": jnp.asarray(rng.normal(size=s), jnp.float32) for i, s in enumerate(shapes)}


def test_stacked_newton_schulz_matches_float64_per_matrix():
    # One batched NS per shape must be the per-matrix NS (float reassociation only).
    tree = _mixed_tree()
    with jax.default_matmul_precision("highest"):
        outs = {}
        for stack in (False, True):
            tx = scale_by_muon(ns_dtype=jnp.float32, scale="none", nesterov=False, stack=stack)
            outs[stack], _ = jax.jit(lambda g, s, tx=tx: tx.update(g, s))(tree, tx.init(tree))
    for name, g in tree.items():
        # Momentum (1 - beta) g of a zero state: NS is scale-invariant.
        expected = ns_float64(np.asarray(g))
        np.testing.assert_allclose(np.asarray(outs[True][name]), expected, atol=3e-5)
        np.testing.assert_allclose(outs[True][name], outs[False][name], atol=3e-5)


def test_polar_express_matches_float64_and_is_closer_to_the_polar_factor():
    g = np.random.default_rng(6).normal(size=(48, 96))
    u, _, vt = np.linalg.svd(g, full_matrices=False)
    polar = u @ vt
    with jax.default_matmul_precision("highest"):
        tx = scale_by_muon(
            ns_dtype=jnp.float32, scale="none", nesterov=False, ns_coeffs="polar_express"
        )
        out, _ = tx.update({"w": jnp.asarray(g, jnp.float32)}, tx.init({"w": g}))
        keller = newton_schulz(jnp.asarray(g, jnp.float32), dtype=jnp.float32)
    out = np.asarray(out["w"], np.float64)
    reference = ns_float64(g, coeffs=POLAR_EXPRESS_COEFFS, safety=1.02)
    np.testing.assert_allclose(out, reference, atol=3e-5)
    error = lambda x: np.linalg.norm(x - polar) / np.linalg.norm(polar)
    # Same 5 steps, about half Keller's distance to the exact polar factor U V^T.
    assert error(out) < 0.6 * error(np.asarray(keller, np.float64))
    s = np.linalg.svd(out, compute_uv=False)
    assert s.min() > 0.8 and s.max() < 1.2


def test_muon_options_are_checked():
    with pytest.raises(ValueError, match="Polar Express schedule is for 5 steps"):
        scale_by_muon(ns_coeffs="polar_express", ns_steps=4)
    # The config refuses what scale_by_muon would, before an optimizer is built.
    for bad, named in [
        ({"muon_stack": "sometimes"}, "muon_stack=sometimes"),
        ({"muon_ns_coeffs": "fast"}, "muon_ns_coeffs=fast"),
        ({"muon_ns_coeffs": "polar_express", "muon_ns_steps": 4}, "muon_ns_steps=5, not 4"),
    ]:
        with pytest.raises(pydantic.ValidationError) as err:
            OptimConfig(**bad)
        assert named in validation_message(err.value, "optim")
    steps = len(POLAR_EXPRESS_COEFFS)  # the config's rule is the schedule's length
    assert OptimConfig(muon_ns_coeffs="polar_express", muon_ns_steps=steps).muon_ns_steps == 5
    cpu_mesh = sharding.make_mesh(MeshConfig(data=1), jax.devices("cpu")[:1])
    assert not optim.stack_newton_schulz("auto", cpu_mesh)
    assert optim.stack_newton_schulz("on", cpu_mesh) and not optim.stack_newton_schulz("off", None)
