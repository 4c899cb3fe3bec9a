"""The MediaFM encoder (Flax NNX), docs/DESIGN.md §1 and §4.

fused shots [B, W, F] -> input projection -> [MASK] where selected -> prepend [CLS] and
[GLOBAL] (the title embedding through its own projection) -> + learned positions ->
embedding LayerNorm -> Transformer blocks -> final LayerNorm (pre-LN) -> hidden [B, 2+W, H].
``predict`` maps hidden states back to the fused space; the objective calls it only at the
masked positions.

Every parameter carries logical axis names (``axes`` metadata); ``sharding.py`` maps
them onto the mesh. Shape suffixes: b batch, w shots, t tokens (2 + w), h hidden, n heads,
d head dim, m mlp, f fused features, g title dim.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from mediafm_jax import attention
from mediafm_jax.config import ModelConfig

NUM_SPECIAL = 2  # [CLS], [GLOBAL]


@dataclasses.dataclass(frozen=True)
class DataDims:
    """Shapes the store decides (from its manifest), never typed in a config."""

    fused: int
    title: int
    modalities: tuple[tuple[int, int], ...]  # (start, stop) columns per modality


def _param(rngs: nnx.Rngs, shape, axes, scale: float | None = None, value: float | None = None):
    if value is not None:
        return nnx.Param(jnp.full(shape, value, jnp.float32), axes=axes)
    std = scale if scale is not None else 1.0 / jnp.sqrt(shape[0])
    return nnx.Param(
        jax.random.truncated_normal(rngs.params(), -2.0, 2.0, shape, jnp.float32) * std,
        axes=axes,
    )


class Dense(nnx.Module):
    """y = x @ kernel + bias, computed in ``dtype`` with fp32 params."""

    def __init__(
        self, d_in: int, d_out: int, axes: tuple[str, str], dtype, rngs: nnx.Rngs, bias: bool = True
    ):
        self.kernel = _param(rngs, (d_in, d_out), axes)
        self.bias = _param(rngs, (d_out,), (axes[1],), value=0.0) if bias else None
        self.dtype = dtype

    def __call__(self, x):
        y = jnp.einsum("...i,io->...o", x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)


class LayerNorm(nnx.Module):
    def __init__(self, dim: int, rngs: nnx.Rngs, eps: float = 1e-6):
        self.scale = _param(rngs, (dim,), ("norm",), value=1.0)
        self.bias = _param(rngs, (dim,), ("norm",), value=0.0)
        self.eps = eps

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
        return y.astype(x.dtype)


@jax.custom_vjp
def add_over_batch(x_bth, table_th):
    """``x_bth + table_th``, the table broadcast over the batch (learned positions).

    The same sum; only its gradient is written out: the table's is the sum over the batch,
    taken as a product with a vector of ones. XLA:CPU compiles the plain reduce over a short
    leading axis ~60x slower than memory speed ([16, 258, 128]: 4.2 ms against 0.07 ms,
    docs/PERFORMANCE.md); the product runs at memory speed on every backend.
    """
    return x_bth + table_th


def _add_over_batch_fwd(x_bth, table_th):
    return x_bth + table_th, None


def _add_over_batch_bwd(_, g_bth):
    ones_b = jnp.ones(g_bth.shape[:1], g_bth.dtype)
    return g_bth, jnp.einsum("b,bth->th", ones_b, g_bth)


add_over_batch.defvjp(_add_over_batch_fwd, _add_over_batch_bwd)


def _dropout(x, rate: float, key):
    if rate == 0.0 or key is None:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class Block(nnx.Module):
    """A Transformer block with separate 2-D q/k/v/o kernels (simple for Muon and TP)."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        h, m = config.hidden_size, config.mlp_size
        dtype = jnp.dtype(config.compute_dtype)
        self.config = config
        self.ln_attn = LayerNorm(h, rngs)
        self.q = Dense(h, h, ("embed", "heads"), dtype, rngs)
        # No key bias: softmax is invariant to it, so its gradient is exactly zero.
        self.k = Dense(h, h, ("embed", "heads"), dtype, rngs, bias=False)
        self.v = Dense(h, h, ("embed", "heads"), dtype, rngs)
        self.o = Dense(h, h, ("heads", "embed"), dtype, rngs)
        self.ln_mlp = LayerNorm(h, rngs)
        self.mlp_in = Dense(h, m, ("embed", "mlp"), dtype, rngs)
        self.mlp_out = Dense(m, h, ("mlp", "embed"), dtype, rngs)

    def attention(self, x_bth, lengths_b):
        b, t, h = x_bth.shape
        n = self.config.num_heads
        split = lambda y: y.reshape(b, t, n, h // n)
        q_btnd, k_btnd, v_btnd = split(self.q(x_bth)), split(self.k(x_bth)), split(self.v(x_bth))
        out_btnd = attention.dot_product_attention(
            q_btnd, k_btnd, v_btnd, lengths_b, implementation=self.config.attention_impl
        )
        return self.o(out_btnd.reshape(b, t, h))

    def __call__(self, x_bth, lengths_b, dropout_key=None):
        keys = jax.random.split(dropout_key, 2) if dropout_key is not None else (None, None)
        rate = self.config.dropout
        if self.config.post_ln:
            x_bth = self.ln_attn(x_bth + _dropout(self.attention(x_bth, lengths_b), rate, keys[0]))
            mlp = self.mlp_out(jax.nn.gelu(self.mlp_in(x_bth)))
            return self.ln_mlp(x_bth + _dropout(mlp, rate, keys[1]))
        x_bth = x_bth + _dropout(self.attention(self.ln_attn(x_bth), lengths_b), rate, keys[0])
        mlp = self.mlp_out(jax.nn.gelu(self.mlp_in(self.ln_mlp(x_bth))))
        return x_bth + _dropout(mlp, rate, keys[1])


class Encoder(nnx.Module):
    def __init__(
        self, config: ModelConfig, dims: DataDims, rngs: nnx.Rngs, boundary_head: bool = False
    ):
        h = config.hidden_size
        dtype = jnp.dtype(config.compute_dtype)
        self.config = config
        self.dims = dims
        self.input_proj = Dense(dims.fused, h, ("features", "embed"), dtype, rngs)
        self.title_proj = Dense(max(dims.title, 1), h, ("title", "embed"), dtype, rngs)
        self.cls_token = _param(rngs, (h,), ("embed",), scale=0.02)
        self.mask_token = _param(rngs, (h,), ("embed",), scale=0.02)
        self.positions = _param(
            rngs, (NUM_SPECIAL + config.max_shots, h), ("pos", "embed"), scale=0.02
        )
        self.embed_norm = LayerNorm(h, rngs)
        self.blocks = nnx.List([Block(config, rngs) for _ in range(config.num_layers)])
        self.final_norm = None if config.post_ln else LayerNorm(h, rngs)
        self.output_proj = Dense(h, dims.fused, ("embed", "features"), dtype, rngs)
        # BaSSL's pseudo-boundary head (objective.boundary_weight > 0): a shot's logit of
        # "the scene changes after me"; absent otherwise, so other runs keep their params.
        self.boundary_head = (
            Dense(h, 1, ("embed", "boundary"), dtype, rngs) if boundary_head else None
        )

    def __call__(
        self,
        fused_bwf,
        valid_bw,
        title_bg,
        mask_bw=None,
        dropout_key=None,
        return_all_layers: bool = False,
    ):
        """Hidden states [B, 2 + W, H] ([CLS], [GLOBAL], shots); padding must be a suffix.

        ``mask_bw`` marks shots whose projected input is replaced by [MASK]. With
        ``return_all_layers`` also returns the stack [L + 1, B, 2 + W, H] of every
        layer's output (embedding layer first), for probing a mean over layers.
        """
        chex.assert_shape(fused_bwf, (None, None, self.dims.fused))
        b, w, _ = fused_bwf.shape
        chex.assert_shape(valid_bw, (b, w))
        chex.assert_shape(title_bg, (b, self.dims.title))
        if mask_bw is not None:
            chex.assert_shape(mask_bw, (b, w))
        if w > self.config.max_shots:
            raise ValueError(f"window of {w} shots exceeds model.max_shots={self.config.max_shots}")
        dtype = jnp.dtype(self.config.compute_dtype)
        x_bwh = self.input_proj(fused_bwf)
        if mask_bw is not None:
            x_bwh = jnp.where(mask_bw[..., None], self.mask_token[...].astype(dtype), x_bwh)
        if self.dims.title == 0:
            title_bg = jnp.zeros((b, 1), dtype)
        global_bh = self.title_proj(title_bg)
        cls_bh = jnp.broadcast_to(self.cls_token[...].astype(dtype), (b, x_bwh.shape[-1]))
        x_bth = jnp.concatenate([cls_bh[:, None], global_bh[:, None], x_bwh], axis=1)
        x_bth = add_over_batch(x_bth, self.positions[...][: NUM_SPECIAL + w].astype(dtype))
        x_bth = self.embed_norm(x_bth)
        lengths_b = NUM_SPECIAL + valid_bw.sum(-1).astype(jnp.int32)
        keys = (
            jax.random.split(dropout_key, len(self.blocks) + 1)
            if dropout_key is not None and self.config.dropout > 0
            else [None] * (len(self.blocks) + 1)
        )
        x_bth = _dropout(x_bth, self.config.dropout, keys[-1])
        layers = [x_bth]
        for block, key in zip(self.blocks, keys, strict=False):
            if self.config.remat:
                x_bth = nnx.remat(lambda blk, x, n, k: blk(x, n, k))(block, x_bth, lengths_b, key)
            else:
                x_bth = block(x_bth, lengths_b, key)
            layers.append(x_bth)
        if self.final_norm is not None:
            x_bth = self.final_norm(x_bth)
            layers[-1] = x_bth
        if return_all_layers:
            return x_bth, jnp.stack(layers)
        return x_bth

    def predict(self, hidden_bkh):
        """Output projection back to the fused space, in fp32."""
        return self.output_proj(hidden_bkh).astype(jnp.float32)

    def boundary_logits(self, hidden_bwh):
        """[B, W] fp32 logits of "the last shot of its (pseudo-)scene" (needs the head)."""
        return self.boundary_head(hidden_bwh)[..., 0].astype(jnp.float32)


def abstract_encoder(
    config: ModelConfig, dims: DataDims, boundary_head: bool = False
) -> tuple[nnx.GraphDef, nnx.State]:
    """(graph definition, abstract parameters) of the encoder: shapes only, no memory.

    Training, inference and ``plan`` take the model's structure from here; the values are
    created by training's sharded init (``train.TrainSetup.init_state``) or restored.
    """
    build = lambda: Encoder(config, dims, nnx.Rngs(0), boundary_head)
    return nnx.split(nnx.eval_shape(build), nnx.Param)
