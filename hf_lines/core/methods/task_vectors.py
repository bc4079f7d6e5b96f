"""Task vectors w_t * (theta_t - theta_0) in float32, one tensor slice at a time.

Methods that look at every task's value of an entry together (TIES, Consensus, DARE)
work on an (N, B) float32 stack of B consecutive entries, so their temporaries stay a
few MB whatever the tensor's size.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from hf_lines.core.methods.arithmetic import task_vector_sum
from hf_lines.core.methods.dare import DARE_CHUNK, DareOptions, apply_dare

# Entries per (N, chunk) stack: a multiple of DARE's DARE_CHUNK, so DARE masks never depend on it.
STACK_CHUNK = 4 * DARE_CHUNK


def stack_task_vectors(
    base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float]
) -> torch.Tensor:
    """(N, numel) float32 stack of w_t * (m_t - base) for 1-D slices of equal length.

    Args:
        base: 1-D slice of theta_0.
        models: the same slice of each theta_t.
        weights: w_t per model.
    """
    b32 = base.float()
    out = torch.empty((len(models), base.numel()), dtype=torch.float32)
    for t, (m, w) in enumerate(zip(models, weights)):
        torch.sub(m, b32, out=out[t])  # a half-precision m is promoted to float32 exactly
        if w != 1.0:
            out[t].mul_(float(w))
    return out


def iter_task_vectors(
    name: str,
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    weights: Sequence[float],
    dare: DareOptions | None = None,
    chunk: int = STACK_CHUNK,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (start, stop, taus) over the flattened tensor; taus is the (N, stop - start) float32 stack.

    Args:
        name: tensor name (seeds DARE).
        base: theta_0 tensor.
        models: theta_t tensors.
        weights: w_t per model.
        dare: drop and rescale each task vector first, when given.
        chunk: slice length; must be a multiple of DARE's DARE_CHUNK.
    """
    if chunk % DARE_CHUNK:
        raise ValueError(f"chunk must be a multiple of {DARE_CHUNK}")
    b = base.reshape(-1)
    flat = [m.reshape(-1) for m in models]
    n = b.numel()
    for start in range(0, max(n, 1), chunk):
        stop = min(start + chunk, n)
        taus = stack_task_vectors(b[start:stop], [m[start:stop] for m in flat], weights)
        if dare is not None:
            for t in range(len(models)):
                apply_dare(taus[t], start, name, t, dare)
        yield start, stop, taus


def task_vector(
    name: str, base: torch.Tensor, model: torch.Tensor, weight: float, task: int, dare: DareOptions | None = None
) -> torch.Tensor:
    """One task's flattened float32 w * (theta_t - theta_0), DARE'd when asked.

    Args:
        name: tensor name (seeds DARE).
        base: theta_0 tensor.
        model: theta_t tensor.
        weight: w_t.
        task: index of the model in the input list (seeds DARE).
        dare: DARE settings or None.
    """
    tau = stack_task_vectors(base.reshape(-1), [model.reshape(-1)], [weight])[0]
    if dare is not None:
        apply_dare(tau, 0, name, task, dare)
    return tau


def l1_norm(tensor: torch.Tensor, chunk: int = STACK_CHUNK) -> float:
    """||tensor||_1 in float64, slice by slice (no full-size temporary).

    Args:
        tensor: float32 tensor.
        chunk: slice length; equal values give bit-identical norms for a given chunk.
    """
    flat = tensor.reshape(-1)
    return sum(float(flat[s : s + chunk].abs().sum(dtype=torch.float64)) for s in range(0, flat.numel(), chunk))


def sum_l1_norm(base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], chunk: int = STACK_CHUNK) -> float:
    """||sum_t w_t tau_t||_1 of one tensor, slice by slice with ``task_vector_sum``.

    Elementwise this is exactly task arithmetic's tau_MTL, so with ``l1_norm`` on the same
    slices plain task arithmetic gets alpha = 1/N exactly.
    """
    b = base.reshape(-1)
    flat = [m.reshape(-1) for m in models]
    return sum(
        float(task_vector_sum(b[s : s + chunk], [m[s : s + chunk] for m in flat], weights).abs().sum(dtype=torch.float64))
        for s in range(0, b.numel(), chunk)
    )
