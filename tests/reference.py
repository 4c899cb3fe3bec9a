"""A float64 NumPy forward pass and loss of the encoder: the independent reference."""

import numpy as np


def _ln(x, p, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _dense(x, p):
    return x @ p["kernel"] + p["bias"] if "bias" in p else x @ p["kernel"]


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _attention(x, blk, lengths, num_heads):
    b, t, h = x.shape
    d = h // num_heads
    q, k, v = (_dense(x, blk[n]).reshape(b, t, num_heads, d) for n in ("q", "k", "v"))
    scores = np.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(d)
    key_ok = np.arange(t)[None, :] < lengths[:, None]
    scores = np.where(key_ok[:, None, None, :], scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bnqk,bknd->bqnd", weights, v).reshape(b, t, h)
    return _dense(out, blk["o"])


def selected(batch):
    """The [B, W] selection that the batch's target positions (-1 = none) list."""
    targets = np.asarray(batch["targets"])
    out = np.zeros(np.shape(batch["valid"]), bool)
    for i, row in enumerate(targets):
        out[i, row[row >= 0]] = True
    return out


def forward(params, batch, num_heads, post_ln=False):
    p = __import__("jax").tree.map(lambda a: np.asarray(a, np.float64), params)
    shots = np.asarray(batch["shots"], np.float64)
    fused = shots / (np.linalg.norm(shots, axis=-1, keepdims=True) + 1e-6)
    has_content = np.asarray(batch["present"]).sum(-1) > 0  # no modality: nothing to predict
    valid = np.asarray(batch["valid"])
    masked = selected(batch) & valid & has_content
    x = _dense(fused, p["input_proj"])
    x = np.where(masked[..., None], p["mask_token"], x)
    title = np.asarray(batch["title_embedding"], np.float64)
    glob = _dense(title, p["title_proj"])
    b, w, _ = x.shape
    cls = np.broadcast_to(p["cls_token"], (b, x.shape[-1]))
    x = np.concatenate([cls[:, None], glob[:, None], x], axis=1) + p["positions"][: 2 + w]
    x = _ln(x, p["embed_norm"])
    lengths = 2 + valid.sum(-1)
    for i in sorted(p["blocks"]):
        blk = p["blocks"][i]
        if post_ln:
            x = _ln(x + _attention(x, blk, lengths, num_heads), blk["ln_attn"])
            x = _ln(x + _dense(_gelu(_dense(x, blk["mlp_in"])), blk["mlp_out"]), blk["ln_mlp"])
        else:
            x = x + _attention(_ln(x, blk["ln_attn"]), blk, lengths, num_heads)
            x = x + _dense(_gelu(_dense(_ln(x, blk["ln_mlp"]), blk["mlp_in"])), blk["mlp_out"])
    if not post_ln:
        x = _ln(x, p["final_norm"])
    hidden = x[:, 2:]
    pred = _dense(hidden, p["output_proj"])
    cos = (pred * fused).sum(-1) / (
        np.linalg.norm(pred, axis=-1) * np.linalg.norm(fused, axis=-1) + 1e-6
    )
    loss = ((1 - cos) * masked).sum() / masked.sum()
    return x, loss
