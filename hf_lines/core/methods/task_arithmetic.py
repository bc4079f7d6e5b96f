"""Task arithmetic: tau_MTL = sum_t w_t tau_t (one model with weight 1 is the plain LiNeS edit).

``mean`` averages instead (weights divided by N); ``dare_linear`` sums DARE'd task
vectors. Every one takes the option ``dare: {drop_rate, seed}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from hf_lines.core import kernels
from hf_lines.core.methods.arithmetic import CHUNK, task_vector_sum, weighted_sum_edit
from hf_lines.core.methods.base import MergeMethod, register_method
from hf_lines.core.methods.dare import DareOptions
from hf_lines.core.methods.task_vectors import iter_task_vectors


def dare_task_vector_sum(
    name: str, base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], dare: DareOptions
) -> torch.Tensor:
    """sum_t w_t DARE(tau_t) in float32, shaped like ``base``.

    Args:
        name: tensor name (seeds DARE).
        base: theta_0.
        models: theta_t per model.
        weights: w_t per model.
        dare: drop rate and seed.
    """
    out = torch.empty(base.numel(), dtype=torch.float32)
    for start, stop, taus in iter_task_vectors(name, base, models, weights, dare):
        torch.sum(taus, 0, out=out[start:stop])
    return out.view(base.shape)


class WeightedSum(MergeMethod):
    """tau_MTL = sum_t c_t tau_t with c_t from ``_weights``: the math of task_arithmetic, mean, soup and wise_ft.

    Not a method itself: each subclass is a dataclass with a ``dare`` field (DareOptions or None),
    declared there so that its options keep their order (wise_ft's gamma comes first).
    """

    dare: DareOptions | None  # a field of each subclass

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("dare", DareOptions.coerce(self.dare))

    def _weights(self, weights: Sequence[float]) -> list[float]:
        return list(weights)

    def task_vector(self, name: str, base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float],
                    stats: Any = None) -> torch.Tensor:
        if self.dare is not None:
            return dare_task_vector_sum(name, base, models, self._weights(weights), self.dare)
        return task_vector_sum(base, models, self._weights(weights))

    def task_vector_l1(self, name, base, models, weights, stats=None) -> float:
        if self.dare is not None:
            return super().task_vector_l1(name, base, models, weights, stats)
        from hf_lines.core.methods.task_vectors import sum_l1_norm

        return sum_l1_norm(base, models, self._weights(weights))  # slice by slice, no full-size tau

    def working_bytes(self, numel: int) -> int:
        # the fused path accumulates in float32 slices of CHUNK entries
        return super().working_bytes(numel) if self.dare is not None else 8 * min(numel, CHUNK)

    def fused_merge(self, name, base, models, weights, scale, out=None, stats=None):
        if self.dare is not None:
            return None
        return kernels.weighted_sum_edit(base, models, self._weights(weights), scale, out=out)

    def merge(self, name, base, models, weights, scale, out=None, stats=None):
        if self.dare is not None:
            return super().merge(name, base, models, weights, scale, out=out, stats=stats)
        # fused path: no float32 tau is materialised
        return weighted_sum_edit(base, models, self._weights(weights), scale, out=out)


@register_method
@dataclass(frozen=True)
class TaskArithmetic(WeightedSum):
    """tau_MTL = sum_t w_t tau_t.

    Options:
        dare: ``{drop_rate: 0.9, seed: 0}`` (or true for those) to DARE each task vector first (default: off).
    """

    name = "task_arithmetic"
    aliases = ("sum",)

    dare: DareOptions | None = None


@register_method
@dataclass(frozen=True)
class Mean(TaskArithmetic):
    """Average of task vectors: tau_MTL = (1/N) sum_t w_t tau_t."""

    name = "mean"
    aliases = ("average",)

    def _weights(self, weights: Sequence[float]) -> list[float]:
        return [w / len(weights) for w in weights]


@register_method
@dataclass(frozen=True)
class DareLinear(TaskArithmetic):
    """Task arithmetic over DARE'd task vectors: tau_MTL = sum_t w_t DARE(tau_t); ``dare`` defaults to {drop_rate: 0.9, seed: 0}."""

    name = "dare_linear"
    aliases = ("dare_task_arithmetic",)

    dare: DareOptions | None = DareOptions()
