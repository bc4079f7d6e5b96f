"""The weight update of a LoRA module as small pure tensor functions (all results in float32).

Orientation follows peft: ``lora_A`` is ``(r, in)`` and ``lora_B`` is ``(out, r)`` for every
module kind; the update is transposed for ``Conv1D`` (GPT-2 style ``(in, out)`` weights)
and for embeddings (``lora_embedding_A`` is ``(r, num_embeddings)``).
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import torch

ModuleKind = Literal["linear", "conv1d", "embedding", "conv"]


def lora_scaling(alpha: float, rank: int, use_rslora: bool) -> float:
    """peft's scale: alpha / r, or alpha / sqrt(r) for rank-stabilised LoRA."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


def lora_delta(lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float, kind: ModuleKind) -> torch.Tensor:
    """scaling * B @ A laid out like the base weight.

    Args:
        lora_a: ``(r, in)``, or ``(r, in, *kernel)`` for convolutions.
        lora_b: ``(out, r)``, or ``(out, r, 1, ...)`` for convolutions.
        scaling: the module's LoRA scale.
        kind: ``linear`` (weight ``(out, in)``), ``conv1d`` (``(in, out)``), ``embedding``
            (``(num_embeddings, dim)``) or ``conv`` (``(out, in, *kernel)``).
    """
    a, b = lora_a.float(), lora_b.float()
    rank = a.shape[0]
    if kind == "conv":
        return (b.reshape(b.shape[0], rank) @ a.reshape(rank, -1)).reshape(b.shape[0], *a.shape[1:]) * scaling
    product = b @ a
    if kind in ("conv1d", "embedding"):
        product = product.T
    return product * scaling


def dora_weight(base: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor, kind: ModuleKind) -> torch.Tensor:
    """DoRA's merged weight, as peft merges it: magnitude * (W + delta) / ||W + delta||.

    The norm is taken per output feature (rows of a linear weight, columns of a ``Conv1D``
    weight, output channels of a convolution) and per embedding dimension for embeddings.
    """
    merged = base.float() + delta
    if kind in ("conv1d", "embedding"):
        norm = torch.linalg.vector_norm(merged, dim=0, keepdim=True)
    else:
        norm = torch.linalg.vector_norm(merged, dim=tuple(range(1, merged.dim())), keepdim=True)
    return merged * (magnitude.float().reshape(norm.shape) / norm)


def scale_b(lora_b: torch.Tensor, factor: float) -> torch.Tensor:
    """factor * B in B's dtype: the delta is linear in B, so this scales the update exactly."""
    return (lora_b.float() * factor).to(lora_b.dtype)


def concat_rank(
    parts: Sequence[tuple[torch.Tensor, torch.Tensor, float]], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LoRA pair equal to sum_i c_i * B_i @ A_i: A stacked by rows, c_i * B_i side by side.

    Args:
        parts: ``(A_i, B_i, c_i)`` of the same module; the returned pair has rank sum r_i
            and scale 1.
        dtype: dtype of the returned tensors.
    """
    a = torch.cat([p[0].to(dtype) for p in parts], dim=0)
    b = torch.cat([(p[1].float() * p[2]).to(dtype) for p in parts], dim=1)
    return a, b


def lerp_full(base: torch.Tensor, finetuned: Sequence[torch.Tensor], coefs: Sequence[float], dtype: torch.dtype) -> torch.Tensor:
    """base + sum_i c_i (t_i - base) in float32, stored in ``dtype``; exact when every t_i equals base."""
    b32 = base.float()
    acc = torch.zeros_like(b32)
    for t, c in zip(finetuned, coefs):
        acc.add_(t.float() - b32, alpha=float(c))
    return (b32 + acc).to(dtype)
