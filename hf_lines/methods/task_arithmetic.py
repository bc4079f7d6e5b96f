"""Task arithmetic: tau_MTL = sum_i w_i tau_i (one model with weight 1 is the plain LiNeS edit)."""
from __future__ import annotations

from typing import Sequence

import torch

from .arithmetic import task_vector_sum, weighted_sum_edit
from .base import MergeMethod, register_method


@register_method
class TaskArithmetic(MergeMethod):
    name = "task_arithmetic"
    aliases = ("sum",)

    def task_vector(self, name: str, base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
        return task_vector_sum(base, models, weights)

    def merge(self, name, base, models, weights, scale):  # fused path: no float32 tau is materialised
        return weighted_sum_edit(base, models, weights, scale)


@register_method
class Mean(TaskArithmetic):
    """Average of task vectors: the weights are divided by N."""

    name = "mean"
    aliases = ()

    def _mean(self, weights: Sequence[float]) -> list[float]:
        return [w / len(weights) for w in weights]

    def task_vector(self, name, base, models, weights):
        return super().task_vector(name, base, models, self._mean(weights))

    def merge(self, name, base, models, weights, scale):
        return super().merge(name, base, models, self._mean(weights), scale)
