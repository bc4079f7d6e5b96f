"""The steps of generalized task arithmetic as pure functions on (N, B) stacks of task-vector slices.

Trim (TIES' magnitude sparsification), sign election, disjoint merge and TALL masks. Every sum
over the task dimension runs in task order (``sum_in_task_order``), as the fused kernels do,
so the two give the same bytes for any number of tasks.
"""
from __future__ import annotations

import torch


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

    ``torch.sum(0)`` adds in an order that depends on N and on the vector width (from 5
    tasks on, at some widths), so it cannot give the fused kernel's bytes; this is its order.

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
    return disjoint_merge_counted(trimmed, sign, aggregate)[0]


def disjoint_merge_counted(
    trimmed: torch.Tensor, sign: torch.Tensor, aggregate: str = "mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``disjoint_merge`` and the number of agreeing tasks per entry (which tells cancelled entries apart).

    Args:
        trimmed: (N, B) trimmed task vectors.
        sign: (B,) elected signs; 0 counts as -1.
        aggregate: "mean" or "sum".
    """
    # +1 / -1 per entry, 0 counting as -1; a product is much faster than a broadcast boolean torch.where
    agree = (trimmed * torch.sign(sign - 0.5)) > 0
    count = agree.sum(0)  # integers: exact in any order
    total = sum_in_task_order(trimmed * agree)
    if aggregate == "mean":
        total.div_(count.clamp(min=1))  # float32 sum / count, as the kernel
    return total, count


def tall_masks(taus: torch.Tensor, merged: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """TALL mask per task: |tau_t| > lam_t * |tau_MTL - tau_t|.

    Args:
        taus: (N, B) float32 task vectors.
        merged: (B,) float32 multi-task vector.
        lam: (N, 1) float32 lambda per task.
    """
    return taus.abs() > (merged - taus).abs_().mul_(lam)


def consensus_mask(masks: torch.Tensor, k: int) -> torch.Tensor:
    """Entries that at least ``k`` tasks' masks mark.

    Args:
        masks: (N, B) boolean TALL masks.
        k: minimum number of tasks.
    """
    return masks.sum(0) >= k


def apply_consensus(merged: torch.Tensor, taus: torch.Tensor, lam: torch.Tensor, k: int) -> torch.Tensor:
    """Zero the entries of ``merged`` (in place) that fewer than ``k`` TALL masks mark.

    Args:
        merged: (B,) float32 multi-task vector, modified in place and returned.
        taus: (N, B) float32 task vectors that went into it (weighted, DARE'd, not trimmed).
        lam: (N, 1) float32 lambda per task.
        k: minimum number of tasks.
    """
    return merged.mul_(consensus_mask(tall_masks(taus, merged, lam), k))
