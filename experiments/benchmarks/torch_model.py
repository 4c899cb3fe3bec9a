"""The same encoder and optimizer in PyTorch, written as a competent PyTorch user would.

Shared by ``vs_torch.py`` (CPU, one process per implementation) and ``gpu_check.py``.

- pre-LN blocks, one fused ``[3H, H]`` q/k/v projection per block (as in
  ``nn.TransformerEncoderLayer``) built from three separate q/k/v parameters, so that
  ``torch.optim.Muon`` orthogonalizes q, k and v one by one exactly as ours does;
- ``F.scaled_dot_product_attention`` with a key-padding mask, tanh GELU, LayerNorm eps 1e-6;
- unit-norm fused input, [MASK] at the targets, [CLS] + [GLOBAL] tokens, learned positions,
  output projection at the target positions only, cosine loss;
- ``torch.optim.Muon`` (nesterov, 5 NS steps, ``match_rms_adamw``) on the block matrices,
  AdamW on the rest, gradient clipping at 1.0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def build(spec, title_dim: int, device: str = "cpu") -> tuple[nn.Module, list]:
    """(encoder, [optimizers]) for ``spec`` = (hidden, layers, heads, mlp, window, batch, fused)."""
    hidden, layers, heads, mlp, window, _, fused = spec[:7]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(hidden, eps=1e-6), nn.LayerNorm(hidden, eps=1e-6)
            self.q, self.k, self.v = (nn.Linear(hidden, hidden) for _ in range(3))
            self.k.bias = None  # as ours: softmax is invariant to a key bias
            self.o = nn.Linear(hidden, hidden)
            self.fc1, self.fc2 = nn.Linear(hidden, mlp), nn.Linear(mlp, hidden)
            self.register_buffer("zero_bias", torch.zeros(hidden), persistent=False)

        def forward(self, x, attn_mask):
            b, t, _ = x.shape
            w_qkv = torch.cat([self.q.weight, self.k.weight, self.v.weight])
            b_qkv = torch.cat([self.q.bias, self.zero_bias, self.v.bias])
            qkv = F.linear(self.ln1(x), w_qkv, b_qkv).view(b, t, 3, heads, hidden // heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
            x = x + self.o(a.transpose(1, 2).reshape(b, t, hidden))
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.title = nn.Linear(fused, hidden), nn.Linear(title_dim, hidden)
            self.cls = nn.Parameter(torch.randn(hidden) * 0.02)
            self.mask = nn.Parameter(torch.randn(hidden) * 0.02)
            self.pos = nn.Parameter(torch.randn(window + 2, hidden) * 0.02)
            self.ln_in, self.ln_out = nn.LayerNorm(hidden, eps=1e-6), nn.LayerNorm(hidden, eps=1e-6)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.out = nn.Linear(hidden, fused)

        def encode(self, fused_in, valid, title, masked=None):
            x = self.inp(fused_in)
            if masked is not None:
                x = torch.where(masked[..., None], self.mask, x)
            b, w = valid.shape
            x = torch.cat([self.cls.expand(b, 1, hidden), self.title(title)[:, None], x], 1)
            x = self.ln_in(x + self.pos[: w + 2])
            keys = torch.cat([torch.ones(b, 2, dtype=torch.bool, device=x.device), valid], 1)
            attn_mask = keys[:, None, None, :]
            for blk in self.blocks:
                x = blk(x, attn_mask)
            return self.ln_out(x)

        def forward(self, shots, valid, targets, title):
            fused_in = F.normalize(shots.float(), dim=-1, eps=1e-6)
            positions = torch.arange(shots.shape[1], device=shots.device)
            masked = (positions[None, :, None] == targets[:, None, :]).any(-1)
            hidden_states = self.encode(fused_in, valid, title.float(), masked)[:, 2:]
            pos = targets.clamp(min=0).long()
            weight = (targets >= 0).float()
            pred = self.out(torch.gather(hidden_states, 1, pos[..., None].expand(-1, -1, hidden)))
            target = torch.gather(fused_in, 1, pos[..., None].expand(-1, -1, fused))
            cos = F.cosine_similarity(pred, target, dim=-1, eps=1e-6)
            return ((1 - cos) * weight).sum() / weight.sum().clamp(min=1)

    model = Encoder().to(device)
    is_matrix = lambda n, p: n.startswith("blocks") and p.ndim == 2
    matrices = [p for n, p in model.named_parameters() if is_matrix(n, p)]
    others = [p for n, p in model.named_parameters() if not is_matrix(n, p)]
    optimizers: list = [torch.optim.AdamW(others, lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01)]
    if hasattr(torch.optim, "Muon"):
        optimizers.append(
            torch.optim.Muon(matrices, lr=1e-3, weight_decay=0.01, adjust_lr_fn="match_rms_adamw")
        )
    else:  # pragma: no cover - torch < 2.9
        raise RuntimeError(f"torch {torch.__version__} has no torch.optim.Muon: pin torch==2.13.0")
    return model, optimizers


def tensors(host: dict[str, np.ndarray], device: str) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in host.items()}


def step_fn(
    model: nn.Module, optimizers: list, batch: dict[str, torch.Tensor], device: str, compiled: str
) -> Callable[[], float]:
    """One training step (forward, backward, clip, Muon + AdamW); returns the loss.

    ``compiled``: "" (eager) or a ``torch.compile`` mode ("default", "max-autotune-no-cudagraphs")
    applied to the model's forward + loss (the optimizers stay eager, as is common).
    """
    cuda = device != "cpu"
    forward = model
    if compiled:
        forward = torch.compile(model, mode=None if compiled == "default" else compiled)

    def one_step() -> float:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = forward(
                batch["shots"], batch["valid"], batch["targets"], batch["title_embedding"]
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return float(loss.detach())

    return one_step


def embed_fn(
    model: nn.Module, batch: dict[str, torch.Tensor], device: str, compiled: str
) -> Callable[[], None]:
    """Inference: fused input -> encoder -> hidden states (what ``mediafm embed`` computes)."""
    cuda = device != "cpu"
    encode = model.encode
    if compiled:
        encode = torch.compile(model.encode, mode=None if compiled == "default" else compiled)

    @torch.inference_mode()
    def one_pass() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            fused_in = F.normalize(batch["shots"].float(), dim=-1, eps=1e-6)
            hidden = encode(fused_in, batch["valid"], batch["title_embedding"].float())
            hidden.float().cpu()  # like ours: embeddings come back to the host
        if cuda:
            torch.cuda.synchronize()

    return one_pass
