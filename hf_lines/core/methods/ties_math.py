"""TIES' tau_MTL and sign total of one tensor: the generalized stages trim -> elect -> disjoint merge.

The step functions themselves (trim, elect, disjoint merge) live in ``stack_steps`` and are
named here too, as the TIES paper names them.
"""
from __future__ import annotations

from typing import Sequence

import torch

from hf_lines.core import kernels
from hf_lines.core.methods.dare import DareOptions
from hf_lines.core.methods.generalized import Stages, staged_sign_total, staged_task_vector
from hf_lines.core.methods.stack_steps import disjoint_merge, elect_sign, sum_in_task_order, trim_by_threshold

__all__ = ["disjoint_merge", "elect_sign", "sum_in_task_order", "trim_by_threshold", "ties_sign_total",
           "ties_task_vector"]


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
    stages = Stages(dare=dare, thresholds=tuple(thresholds), elect=True, sign_total=sign_total, aggregate=aggregate)
    return staged_task_vector(name, base, models, weights, stages)


def ties_sign_total(
    name: str,
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    weights: Sequence[float],
    thresholds: Sequence[float],
    dare: DareOptions | None = None,
) -> int:
    """The total of one tensor's elected signs (+1, -1 or 0 per entry), exact: by the fused kernel where it applies.

    Summed over the whole model, its sign settles the entries whose trimmed values cancel
    exactly (``zero_sign: model``, the authors' ``resolve_zero_signs``).
    """
    if not base.is_floating_point():
        return 0
    fused = kernels.ties_sign_total(base, models, weights, thresholds) if dare is None else None
    if fused is not None:
        return fused
    return staged_sign_total(name, base, models, weights, Stages(dare=dare, thresholds=tuple(thresholds), elect=True))
