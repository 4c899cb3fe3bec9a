"""The fused CPU attention kernel against independent references, in float64.

The reference is a plain einsum-softmax-einsum in float64; ``jax.nn.dot_product_attention``
is a second reference at 1e-6 only, because it computes its softmax in float32 even for
float64 inputs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mediafm_jax import attention

# (batch, tokens, heads, head dim, lengths): lengths cover full, partial, one token; sizes
# cover a query block and a key tile boundary, and head dims that are not a vector width.
CASES = [
    (3, 37, 2, 8, (37, 20, 1)),
    (2, 70, 3, 40, (70, 33)),
    (2, 33, 1, 5, (33, 17)),
]


def reference(q, k, v, lengths):
    """Attention of the first lengths[b] queries over the first lengths[b] keys; zeros after."""
    t, d = q.shape[1], q.shape[-1]
    scores = jnp.einsum("btnd,bsnd->bnts", q, k) / np.sqrt(d)
    valid = jnp.arange(t)[None, :] < lengths[:, None]
    weights = jax.nn.softmax(jnp.where(valid[:, None, None, :], scores, -jnp.inf), -1)
    return jnp.einsum("bnts,bsnd->btnd", weights, v) * valid[:, :, None, None]


def inputs(b, t, n, d, lengths, dtype, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v, w = (jnp.asarray(rng.normal(size=(b, t, n, d)), dtype) for _ in range(4))
    return q, k, v, w, jnp.asarray(lengths, jnp.int32)


def fused(q, k, v, lengths):
    return attention.dot_product_attention(q, k, v, lengths)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("b,t,n,d,lengths", CASES)
def test_forward_and_gradients_match_float64_references(b, t, n, d, lengths):
    assert attention.fused_available()
    q, k, v, w, lengths = inputs(b, t, n, d, lengths, jnp.float64)
    library = lambda q, k, v, lengths: jax.nn.dot_product_attention(
        q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths
    )
    for impl, tol in ((reference, 1e-12), (library, 1e-6)):  # each jitted: one program
        np.testing.assert_allclose(
            jax.jit(fused)(q, k, v, lengths), jax.jit(impl)(q, k, v, lengths), atol=tol
        )
        loss = lambda f: lambda q, k, v: (f(q, k, v, lengths) * w).sum()
        ours = jax.jit(jax.grad(loss(fused), argnums=(0, 1, 2)))(q, k, v)
        theirs = jax.jit(jax.grad(loss(impl), argnums=(0, 1, 2)))(q, k, v)
        for got, want in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(got, want, atol=tol)
    # the kernel really ran (not the library's path): its custom call is in the program
    assert "mediafm_attention_fwd" in jax.jit(fused).lower(q, k, v, lengths).as_text()


def test_float32_and_padding():
    q, k, v, w, lengths = inputs(2, 45, 2, 32, (45, 9), jnp.float32, seed=1)
    out = jax.jit(fused)(q, k, v, lengths)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, reference(q, k, v, lengths), atol=2e-6)
    dq, dk, dv = jax.jit(jax.grad(lambda *a: (fused(*a, lengths) * w).sum(), (0, 1, 2)))(q, k, v)
    # padded queries give zeros and take no gradient; padded keys and values none either
    assert not np.any(out[1, 9:]) and not np.any(dq[1, 9:])
    assert not np.any(dk[1, 9:]) and not np.any(dv[1, 9:])
    # and the valid part does not depend on the padding's content
    q2, k2, v2 = (x.at[1, 9:].set(1e3) for x in (q, k, v))
    np.testing.assert_array_equal(jax.jit(fused)(q2, k2, v2, lengths)[1, :9], out[1, :9])


def test_sharded_over_a_mesh_matches():
    # Under a (data, fsdp, tensor) mesh the kernel runs per shard (batch and heads split).
    devices = np.array(jax.devices()[:8]).reshape(2, 2, 2)
    mesh = jax.sharding.Mesh(devices, ("data", "fsdp", "tensor"))
    q, k, v, w, lengths = inputs(4, 30, 2, 8, (30, 11, 2, 29), jnp.float64)
    with jax.set_mesh(mesh):
        text = jax.jit(fused).lower(q, k, v, lengths).as_text()
        out = jax.jit(fused)(q, k, v, lengths)
        grads = jax.jit(jax.grad(lambda *a: (fused(*a, lengths) * w).sum(), (0, 1, 2)))(q, k, v)
    assert "mediafm_attention_fwd" in text
    np.testing.assert_allclose(out, jax.jit(reference)(q, k, v, lengths), atol=1e-12)
    want = jax.jit(jax.grad(lambda *a: (reference(*a, lengths) * w).sum(), (0, 1, 2)))(q, k, v)
    for got, ref in zip(grads, want, strict=True):
        np.testing.assert_allclose(got, ref, atol=1e-12)


def test_other_platforms_and_dtypes_keep_the_library():
    q, k, v, _, lengths = inputs(2, 16, 2, 8, (16, 5), jnp.float32)
    # GPU/TPU lower the library's attention (cuDNN's on GPU), never the CPU custom call
    for platform in ("cuda", "tpu"):
        lowered = jax.jit(fused).trace(q, k, v, lengths).lower(lowering_platforms=(platform,))
        assert "mediafm_attention" not in lowered.as_text()
    assert (
        "mediafm_attention"
        not in jax.jit(lambda *a: attention.dot_product_attention(*a, implementation="xla"))
        .lower(q, k, v, lengths)
        .as_text()
    )
    bf16 = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    assert "mediafm_attention" not in jax.jit(fused).lower(*bf16, lengths).as_text()


def test_no_compiler_warns_and_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIAFM_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(OSError):
        attention.build()
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-written left behind
    attention.fused_available.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="fused CPU attention unavailable"):
            assert not attention.fused_available()
        q, k, v, _, lengths = inputs(2, 16, 2, 8, (16, 5), jnp.float32)
        text = jax.jit(lambda *a: fused(*a)).lower(q, k, v, lengths).as_text()  # a new trace
        assert "mediafm_attention" not in text
    finally:
        attention.fused_available.cache_clear()
