"""Task vectors w_t * (theta_t - theta_0) in float32, one tensor slice at a time.

Methods that look at every task's value of an entry together (TIES, Consensus, DARE)
work on an (N, B) float32 stack of B consecutive entries, so their temporaries stay a
few MB whatever the tensor's size.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from .dare import CHUNK, DareOptions, apply_dare

# Entries per slice: a multiple of DARE's CHUNK, so DARE masks never depend on it.
BLOCK = 4 * CHUNK


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
    block: int = BLOCK,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (start, stop, taus) over the flattened tensor; taus is the (N, stop - start) float32 stack.

    Args:
        name: tensor name (seeds DARE).
        base: theta_0 tensor.
        models: theta_t tensors.
        weights: w_t per model.
        dare: drop and rescale each task vector first, when given.
        block: slice length; must be a multiple of DARE's CHUNK.
    """
    if block % CHUNK:
        raise ValueError(f"block must be a multiple of {CHUNK}")
    b = base.reshape(-1)
    flat = [m.reshape(-1) for m in models]
    n = b.numel()
    for start in range(0, max(n, 1), block):
        stop = min(start + block, n)
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
