"""TIES' steps as pure tensor functions on (N, chunk) stacks of task-vector slices: trim, elect, disjoint merge.

Every sum over the task dimension runs in task order (``sum_in_task_order``), as the fused
kernels do, so the two give the same bytes for any number of tasks.
"""
from __future__ import annotations

from typing import Sequence

import torch

from hf_lines.core import kernels
from hf_lines.core.methods.dare import DareOptions
from hf_lines.core.methods.task_vectors import iter_task_vectors


def trim_by_threshold(taus: torch.Tensor, thresholds: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Zero every entry whose magnitude is below its task's threshold.

    Args:
        taus: (N, B) float32 task vectors.
        thresholds: (N, 1) float32 thresholds; an entry equal to its threshold is kept.
        inplace: overwrite ``taus`` instead of allocating the result.
    """
    keep = taus.abs() >= thresholds
    return taus.mul_(keep) if inplace else taus * keep


def sum_in_task_order(values: torch.Tensor) -> torch.Tensor:
    """Per-entry sum over the tasks, accumulated from 0 in task order: ((0 + v_1) + v_2) + ...

    ``torch.sum(0)`` adds in an order that depends on N and on the vector width (from 33
    tasks on it differs), so it cannot give the fused kernel's bytes; this is its order.

    Args:
        values: (N, B) per-task values.
    """
    acc = torch.zeros_like(values[0])
    for row in values:
        acc.add_(row)
    return acc


def elect_sign(trimmed: torch.Tensor) -> torch.Tensor:
    """Per-entry sign (+1, -1 or 0) of the summed trimmed task vectors (summed in task order).

    Args:
        trimmed: (N, B) trimmed task vectors.
    """
    return torch.sign(sum_in_task_order(trimmed))


def disjoint_merge(trimmed: torch.Tensor, sign: torch.Tensor, aggregate: str = "mean") -> torch.Tensor:
    """Mean (or sum) of the entries whose sign agrees with ``sign``; sign 0 selects the negative ones, as the paper's code.

    Args:
        trimmed: (N, B) trimmed task vectors.
        sign: (B,) elected signs.
        aggregate: "mean" (divide by the number of agreeing tasks) or "sum".
    """
    return _disjoint(trimmed, sign, aggregate)[0]


def _disjoint(trimmed: torch.Tensor, sign: torch.Tensor, aggregate: str) -> tuple[torch.Tensor, torch.Tensor]:
    # +1 / -1 per entry, 0 counting as -1; a product is much faster than a broadcast boolean torch.where
    agree = (trimmed * torch.sign(sign - 0.5)) > 0
    count = agree.sum(0)  # integers: exact in any order
    total = sum_in_task_order(trimmed * agree)
    if aggregate == "mean":
        total.div_(count.clamp(min=1))  # float32 sum / count, as the kernel
    return total, count


def ties_task_vector(
    name: str,
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    weights: Sequence[float],
    thresholds: Sequence[float],
    aggregate: str = "mean",
    dare: DareOptions | None = None,
    sign_total: int | None = None,
) -> torch.Tensor:
    """The TIES tau_MTL of one tensor, float32 and shaped like ``base``, slice by slice.

    Args:
        name: tensor name (seeds DARE).
        base: theta_0.
        models: theta_t per model.
        weights: w_t per model.
        thresholds: the trim threshold of each task.
        aggregate: "mean" or "sum" of the agreeing entries.
        dare: DARE each task vector before trimming, when given.
        sign_total: the whole model's total of elected signs, which settles the entries whose kept
            values cancel exactly (``zero_sign: model``); None uses this tensor's own total.
    """
    thr = torch.tensor(list(thresholds), dtype=torch.float32).reshape(-1, 1)
    out = torch.empty(base.numel(), dtype=torch.float32)
    tensor_total = 0
    # Entries whose trimmed values cancel exactly: their value if the negatives are merged instead.
    cancelled: list[tuple[torch.Tensor, torch.Tensor]] = []
    for start, stop, taus in iter_task_vectors(name, base, models, weights, dare):
        trimmed = trim_by_threshold(taus, thr, inplace=True)
        sign = elect_sign(trimmed)
        tensor_total += int(sign.sum())  # exact: a float32 sum of at most 2**24 values +-1
        zero = sign == 0
        # provisionally merge the positive values where the sum is zero; fixed below if the total says otherwise
        merged, count = _disjoint(trimmed, sign.masked_fill_(zero, 1.0), aggregate)
        out[start:stop] = merged
        ambiguous = zero & (count > 0)  # values that cancel: some positive ones agreed
        if bool(ambiguous.any()):
            idx = ambiguous.nonzero().reshape(-1)
            negatives = disjoint_merge(trimmed[:, idx], torch.full((idx.numel(),), -1.0), aggregate)
            cancelled.append((idx + start, negatives))
    if (sign_total if sign_total is not None else tensor_total) <= 0:
        for idx, value in cancelled:
            out[idx] = value
    return out.view(base.shape)


def ties_sign_total(
    name: str,
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    weights: Sequence[float],
    thresholds: Sequence[float],
    dare: DareOptions | None = None,
) -> int:
    """The total of one tensor's elected signs (+1, -1 or 0 per entry), exact.

    Summed over the whole model, its sign settles the entries whose trimmed values cancel
    exactly (``zero_sign: model``, the authors' ``resolve_zero_signs``).
    """
    if not base.is_floating_point():
        return 0
    fused = kernels.ties_sign_total(base, models, weights, thresholds) if dare is None else None
    if fused is not None:
        return fused
    thr = torch.tensor(list(thresholds), dtype=torch.float32).reshape(-1, 1)
    total = 0
    for _, _, taus in iter_task_vectors(name, base, models, weights, dare):
        total += int(elect_sign(trim_by_threshold(taus, thr, inplace=True)).sum(dtype=torch.int64))
    return total
