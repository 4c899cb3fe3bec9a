"""Masked shot modeling on the device: input corruption, cosine loss, metrics.

The host ships raw fp16 modality columns; fusion (``fusion.py``) and the
[MASK] replacement happen here, where they are nearly free. Only the selected positions
go through the output projection: with 20% selected, the other 80% are not paid for.
"""

from __future__ import annotations

from collections.abc import Mapping

import chex
import jax
import jax.numpy as jnp
import optax

from mediafm_jax import masking
from mediafm_jax.config import ObjectiveConfig
from mediafm_jax.fusion import EPS, fuse, unit
from mediafm_jax.model import NUM_SPECIAL, Encoder


def modality_keep(present_bwm, rate: float, key):
    """Modality dropout's keep mask [B, W, M]: whole modalities of a shot dropped at
    ``rate``, never all of a shot's present ones."""
    keep_bwm = jax.random.bernoulli(key, 1.0 - rate, present_bwm.shape)
    keep_bwm = keep_bwm & (present_bwm > 0)
    # A shot keeps everything when dropout would have removed all it has.
    return jnp.where(keep_bwm.any(-1, keepdims=True), keep_bwm, True)


def corrupt(fused_bwf, valid_bw, masked_bw, config: ObjectiveConfig, key):
    """BERT-style corruption of the selected shots.

    Returns (inputs [B, W, F], use_mask_token [B, W]): of the selected shots a share
    ``mask_token_share`` gets [MASK], ``random_shot_share`` gets another valid shot of the
    same window, the rest stays as it is; all of them are predicted.
    """
    if key is None or config.mask_token_share >= 1.0:
        return fused_bwf, masked_bw
    u_key, pick_key = jax.random.split(key)
    u_bw = jax.random.uniform(u_key, masked_bw.shape)
    use_mask_bw = masked_bw & (u_bw < config.mask_token_share)
    use_random_bw = (
        masked_bw
        & (u_bw >= config.mask_token_share)
        & (u_bw < config.mask_token_share + config.random_shot_share)
    )
    n_valid_b1 = valid_bw.sum(-1, keepdims=True)
    pick_bw = jnp.floor(jax.random.uniform(pick_key, masked_bw.shape) * n_valid_b1).astype(
        jnp.int32
    )
    random_bwf = jnp.take_along_axis(fused_bwf, pick_bw[..., None], axis=1)
    inputs_bwf = jnp.where(use_random_bw[..., None], random_bwf, fused_bwf)
    return inputs_bwf, use_mask_bw


def msm_loss(
    model: Encoder,
    batch: Mapping[str, jax.Array],
    config: ObjectiveConfig,
    key=None,
    train: bool = True,
):
    """Mean (1 - cos) over the listed targets that are valid and have content; (loss, metrics).

    ``batch["targets"]`` [B, K] lists the target positions (``masking``); every listed
    shot is predicted, none beyond them. ``key`` drives corruption, modality drop-out and
    dropout; None gives the plain [MASK]-only forward pass (evaluation, and the float64
    reference in the tests).
    """
    keys = jax.random.split(key, 3) if key is not None else (None, None, None)
    dims = model.dims
    chex.assert_rank(batch["shots"], 3)
    b, w, _ = batch["shots"].shape
    chex.assert_shape(batch["present"], (b, w, len(dims.modalities)))
    chex.assert_shape(batch["valid"], (b, w))
    chex.assert_shape(batch["targets"], (b, None))
    chex.assert_axis_dimension_lteq(batch["targets"], 1, w)
    # A shot with no modality present (MovieNet: no dialogue) has no target to reconstruct:
    # leaving it in would add a constant 1 to the loss and dilute every average.
    has_target_bw = (batch["present"] > 0).any(-1)
    targets_bk, valid_bw = batch["targets"], batch["valid"]
    masked_bw = masking.target_mask(targets_bk, valid_bw.shape[1]) & valid_bw & has_target_bw
    per_modality_norm = model.config.per_modality_norm
    target_bwf = fuse(batch["shots"], dims.modalities, per_modality_norm)
    inputs_bwf = target_bwf
    if train and config.modality_dropout > 0 and keys[0] is not None:
        keep_bwm = modality_keep(batch["present"], config.modality_dropout, keys[0])
        inputs_bwf = fuse(batch["shots"], dims.modalities, per_modality_norm, keep_bwm)
    inputs_bwf, use_mask_bw = corrupt(
        inputs_bwf, valid_bw, masked_bw, config, keys[1] if train else None
    )
    hidden_bth = model(
        inputs_bwf,
        valid_bw,
        batch["title_embedding"],
        mask_bw=use_mask_bw,
        dropout_key=keys[2] if train else None,
    )
    pos_bk = jnp.maximum(targets_bk, 0)  # -1 (no target) reads position 0 at weight 0
    weight_bk = (jnp.take_along_axis(masked_bw, pos_bk, axis=1) & (targets_bk >= 0)).astype(
        jnp.float32
    )
    hidden_bkh = jnp.take_along_axis(hidden_bth[:, NUM_SPECIAL:], pos_bk[..., None], axis=1)
    pred_bkf = model.predict(hidden_bkh)
    target_bkf = jnp.take_along_axis(target_bwf, pos_bk[..., None], axis=1)
    cos_bk = (pred_bkf * target_bkf).sum(-1) / (
        jnp.linalg.norm(pred_bkf, axis=-1) * jnp.linalg.norm(target_bkf, axis=-1) + EPS
    )
    count = jnp.maximum(weight_bk.sum(), 1.0)
    loss = ((1.0 - cos_bk) * weight_bk).sum() / count
    metrics = {
        "loss": loss,
        "masked_cosine": (cos_bk * weight_bk).sum() / count,
        "masked_shots": count,
    }
    if config.contrastive_weight > 0:
        nce = info_nce(pred_bkf, target_bkf, weight_bk, config.contrastive_temperature)
        metrics["info_nce"] = nce
        loss = loss + config.contrastive_weight * nce
        metrics["loss"] = loss
    if config.boundary_head:
        logit_bw = model.boundary_logits(hidden_bth[:, NUM_SPECIAL:])
        content_bw = valid_bw & has_target_bw
        bce, hit = boundary_loss(
            logit_bw, target_bwf, content_bw, config.boundary_span, config.boundary_keep
        )
        metrics["boundary_bce"], metrics["boundary_hit"] = bce, hit
        loss = loss + config.boundary_weight * bce
        metrics["loss"] = loss
    if config.scene_match_weight > 0:
        span = config.boundary_span
        phase = None
        if train and key is not None:  # folded in, not split: the other keys stay as they were
            phase = jax.random.randint(jax.random.fold_in(key, 1), (), 0, span)
        nce, hit = scene_match_loss(
            hidden_bth[:, NUM_SPECIAL:],
            target_bwf,
            valid_bw & has_target_bw,
            span,
            config.scene_match_temperature,
            phase,
            config.boundary_keep,
        )
        metrics["scene_match"], metrics["scene_match_hit"] = nce, hit
        loss = loss + config.scene_match_weight * nce
        metrics["loss"] = loss
    return loss, metrics


def _split_scores(fused_bwf, valid_bw, span: int):
    """(score_bsj of each split j of each span, the span's rows x_bslf, usable_bs)."""
    b, w, f = fused_bwf.shape
    s = w // span
    x_bslf = fused_bwf[:, : s * span].astype(jnp.float32).reshape(b, s, span, f)
    usable_bs = valid_bw[:, : s * span].reshape(b, s, span).all(-1)
    left_bsjf = jnp.cumsum(x_bslf, axis=2)[:, :, :-1]  # split j: rows [0, j] on the left
    right_bsjf = x_bslf.sum(2, keepdims=True) - left_bsjf
    n_left_j = jnp.arange(1, span, dtype=jnp.float32)
    score_bsj = (left_bsjf**2).sum(-1) / n_left_j + (right_bsjf**2).sum(-1) / (span - n_left_j)
    return score_bsj, x_bslf, usable_bs


def pseudo_boundaries(fused_bwf, valid_bw, span: int):
    """Label-free scene boundaries, as BaSSL finds them (Mun et al. 2022), in each span.

    Each window is tiled into spans of ``span`` shots; a span's pseudo-boundary is the
    split into two contiguous parts that best groups its input rows: the one maximising
    ``|sum left|^2 / n_left + |sum right|^2 / n_right`` (least within-part squared
    distance to the part means). BaSSL aligns by dynamic time warping; with two parts the
    exhaustive search over the ``span - 1`` splits is exact and one prefix sum.

    Returns (last_bs: the index in the span of the left part's last shot, i.e. the shot
    before the pseudo-cut, in ``[0, span - 2]``; usable_bs: the span is all valid shots).
    """
    score_bsj, _, usable_bs = _split_scores(fused_bwf, valid_bw, span)
    return jnp.argmax(score_bsj, axis=-1), usable_bs


def split_share(fused_bwf, valid_bw, span: int):
    """(share_bs, usable_bs): the share of each span's spread about its mean that its best
    split explains (between-part over total sum of squares, in [0, 1]), i.e. how real its
    pseudo-boundary is: a span with no cut is split too, but that split explains little."""
    score_bsj, x_bslf, usable_bs = _split_scores(fused_bwf, valid_bw, span)
    whole_bs = (x_bslf.sum(2) ** 2).sum(-1) / span
    total_bs = (x_bslf**2).sum((2, 3)) - whole_bs
    return (score_bsj.max(-1) - whole_bs) / (total_bs + EPS), usable_bs


def strong_splits(fused_bwf, valid_bw, span: int, keep: float):
    """[B, S] bool: the usable spans whose ``split_share`` is in the batch's top ``keep``
    share (at or above its ``1 - keep`` quantile over the usable spans)."""
    share_bs, usable_bs = split_share(fused_bwf, valid_bw, span)
    threshold = jnp.nanquantile(jnp.where(usable_bs, share_bs, jnp.nan), 1.0 - keep)
    return usable_bs & (share_bs >= threshold)


def boundary_loss(logit_bw, fused_bwf, valid_bw, span: int, keep: float = 1.0):
    """Pseudo-boundary prediction: (balanced binary cross-entropy, hit rate).

    In each usable span the shot before the pseudo-cut is the positive and the other
    shots the negatives; a span's loss is the mean of its positive's and its negatives'
    mean cross-entropy (one positive in ``span``), so always answering "no" is not free.
    With ``keep < 1`` only the batch's ``keep`` share of spans with the strongest split
    (``strong_splits``) has a positive; in the others every shot is a negative (their
    loss: the mean cross-entropy), so the head learns to stay low where nothing changes
    rather than to mark a guess in every span. The hit rate is the share of spans with a
    positive whose highest logit is at the pseudo-boundary.
    """
    b, w = logit_bw.shape
    s = w // span
    last_bs, usable_bs = pseudo_boundaries(fused_bwf, valid_bw, span)
    label_bsl = jax.nn.one_hot(last_bs, span)
    logit_bsl = logit_bw[:, : s * span].reshape(b, s, span)
    bce_bsl = optax.sigmoid_binary_cross_entropy(logit_bsl, label_bsl)
    positive_bs = (bce_bsl * label_bsl).sum(-1)
    negative_bs = (bce_bsl * (1.0 - label_bsl)).sum(-1) / (span - 1)
    span_bs = 0.5 * (positive_bs + negative_bs)
    weight_bs = usable_bs.astype(jnp.float32)
    count = jnp.maximum(weight_bs.sum(), 1.0)
    hit_bs = jnp.argmax(logit_bsl, axis=-1) == last_bs
    if keep >= 1.0:  # BaSSL: every span has a pseudo-boundary
        loss = (span_bs * weight_bs).sum() / count
        return loss, (hit_bs * weight_bs).sum() / count
    boundary_bs = strong_splits(fused_bwf, valid_bw, span, keep)
    none_bs = optax.sigmoid_binary_cross_entropy(logit_bsl, jnp.zeros_like(logit_bsl)).mean(-1)
    loss = (jnp.where(boundary_bs, span_bs, none_bs) * weight_bs).sum() / count
    kept_bs = boundary_bs.astype(jnp.float32)
    return loss, (hit_bs * kept_bs).sum() / jnp.maximum(kept_bs.sum(), 1.0)


def scene_match_loss(
    state_bwh, fused_bwf, valid_bw, span: int, temperature: float, phase=None, keep: float = 1.0
):
    """Shot-to-scene matching (BaSSL's SSM, Mun et al. 2022): (InfoNCE, hit rate).

    Each usable span's ``pseudo_boundaries`` split cuts it into two pseudo-scenes; a
    pseudo-scene's prototype is the unit mean of its shots' unit states. Every shot of a
    usable span is matched (cosine over ``temperature``) against its own pseudo-scene (the
    positive), the other part of its span, and every pseudo-scene of the batch's other
    windows (the negatives). The other spans of its own window are left out: they are
    often the same scene or a returning thread, and telling them apart would reward
    states that encode their position in the window. Unlike the boundary head, this
    shapes the states' own distances (near within a pseudo-scene, far across its cut),
    which the ``distance`` readouts and ``novelty`` read. The hit rate is the share of
    shots whose nearest candidate is their own pseudo-scene.

    ``phase`` (training: drawn each step) starts the span grid at that shot, with one
    span fewer: on a fixed grid the states learn where spans begin instead of where
    scenes change (trained so, consecutive states were 0.46 apart across a span start
    and 0.08 elsewhere). None: spans from the window's first shot. With ``keep < 1`` only
    the batch's ``keep`` share of spans with the strongest split (``strong_splits``) is
    cut in two; every other span is one pseudo-scene, so a span without a true cut is not
    pushed apart from itself.
    """
    if phase is not None:
        b, w, _ = state_bwh.shape
        size = (w // span - 1) * span
        state_bwh, fused_bwf, valid_bw = (
            jax.lax.dynamic_slice_in_dim(x, phase, size, axis=1)
            for x in (state_bwh, fused_bwf, valid_bw)
        )
    b, w, h = state_bwh.shape
    s = w // span
    last_bs, usable_bs = pseudo_boundaries(fused_bwf, valid_bw, span)
    state_bslh = unit(state_bwh[:, : s * span].astype(jnp.float32).reshape(b, s, span, h))
    left_bsl = jnp.arange(span) <= last_bs[..., None]
    if keep < 1.0:  # a span not kept: all of it on the left, an empty right part
        left_bsl |= ~strong_splits(fused_bwf, valid_bw, span, keep)[..., None]
    part_bslp = jnp.stack([left_bsl, ~left_bsl], axis=-1).astype(jnp.float32)
    real_bsp = usable_bs[..., None] & (part_bslp.sum(2) > 0)  # no empty part
    scene_bsph = jnp.einsum("bslp,bslh->bsph", part_bslp, state_bslh)
    # an empty part's zero sum would make the norm's gradient 0/0 = NaN (masked or not)
    scene_bsph = unit(jnp.where(real_bsp[..., None], scene_bsph, 1.0))
    n, m = b * s * span, b * s * 2
    logits_nm = state_bslh.reshape(n, h) @ scene_bsph.reshape(m, h).T / temperature
    span_n, span_m = jnp.arange(b * s).repeat(span), jnp.arange(b * s).repeat(2)
    candidate_nm = (span_n[:, None] == span_m[None, :]) | (
        span_n[:, None] // s != span_m[None, :] // s  # another window
    )
    candidate_nm &= real_bsp.reshape(m)[None, :]  # only real pseudo-scenes
    logits_nm = jnp.where(candidate_nm, logits_nm, -1e9)
    own_n = 2 * span_n + (~left_bsl).reshape(n)
    log_p_n = jnp.take_along_axis(jax.nn.log_softmax(logits_nm), own_n[:, None], axis=1)[:, 0]
    weight_n = usable_bs.reshape(b * s).repeat(span).astype(jnp.float32)
    count = jnp.maximum(weight_n.sum(), 1.0)
    hit_n = jnp.argmax(logits_nm, axis=-1) == own_n
    return -(log_p_n * weight_n).sum() / count, (hit_n * weight_n).sum() / count


def info_nce(pred_bkf, target_bkf, weight_bk, temperature: float):
    """Mean InfoNCE of each predicted target against the batch's targets [N = B * K].

    A prediction's positive is its own true shot; every other valid target of the batch is
    a negative, so a prediction must single out its shot, not only point near the scene's
    average (what the cosine loss alone rewards when neighbours are near-duplicates).
    """
    n = pred_bkf.shape[0] * pred_bkf.shape[1]
    unit = lambda x: x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + EPS)
    pred_nf = unit(pred_bkf.reshape(n, -1))
    target_nf = unit(target_bkf.reshape(n, -1))
    weight_n = weight_bk.reshape(n)
    logits_nn = pred_nf @ target_nf.T / temperature
    logits_nn = jnp.where(weight_n[None, :] > 0, logits_nn, -1e9)  # only real targets
    log_p_n = jnp.diagonal(jax.nn.log_softmax(logits_nn, axis=-1))
    return -(log_p_n * weight_n).sum() / jnp.maximum(weight_n.sum(), 1.0)
