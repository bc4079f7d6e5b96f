"""Task arithmetic: tau_MTL = sum_t w_t tau_t (one model with weight 1 is the plain LiNeS edit).

``mean`` averages instead (weights divided by N); ``dare_linear`` sums DARE'd task
vectors. Every one takes the option ``dare: {drop_rate, seed}``. Their only stage is the
sum (after DARE when asked); without DARE the merge takes the fused path, which
materialises no float32 tau_MTL.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from hf_lines.core import kernels
from hf_lines.core.methods.arithmetic import CHUNK, weighted_sum_edit
from hf_lines.core.methods.base import MergeMethod, register_method
from hf_lines.core.methods.dare import DareOptions
from hf_lines.core.methods.generalized import Stages


def mean_weights(weights: Sequence[float]) -> list[float]:
    """w_t / N: the coefficients of an average of task vectors."""
    return [w / len(weights) for w in weights]


class WeightedSum(MergeMethod):
    """tau_MTL = sum_t c_t tau_t with c_t from ``task_weights``: task_arithmetic, mean, dare_linear, soup and wise_ft.

    Not a method itself: each subclass is a dataclass with a ``dare`` field (DareOptions or None),
    declared there so that its options keep their order (wise_ft's gamma comes first).
    """

    dare: DareOptions | None  # a field of each subclass

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("dare", DareOptions.coerce(self.dare))

    def stages(self, name, base, models, weights, stats=None) -> Stages:
        return Stages(dare=self.dare)

    def task_vector_l1(self, name, base, models, weights, stats=None) -> float:
        if self.dare is not None:
            return super().task_vector_l1(name, base, models, weights, stats)
        from hf_lines.core.methods.task_vectors import sum_l1_norm

        return sum_l1_norm(base, models, self.task_weights(weights))  # slice by slice, no full-size tau

    def working_bytes(self, numel: int) -> int:
        # the fused path accumulates in float32 slices of CHUNK entries
        return super().working_bytes(numel) if self.dare is not None else 8 * min(numel, CHUNK)

    def fused_merge(self, name, base, models, weights, scale, out=None, stats=None):
        if self.dare is not None:
            return None
        return kernels.weighted_sum_edit(base, models, self.task_weights(weights), scale, out=out)

    def merge(self, name, base, models, weights, scale, out=None, stats=None):
        if self.dare is not None:
            return super().merge(name, base, models, weights, scale, out=out, stats=stats)
        # fused path: no float32 tau is materialised
        return weighted_sum_edit(base, models, self.task_weights(weights), scale, out=out)


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
class Mean(WeightedSum):
    """Average of task vectors: tau_MTL = (1/N) sum_t w_t tau_t."""

    name = "mean"
    aliases = ("average",)

    dare: DareOptions | None = None

    def task_weights(self, weights: Sequence[float]) -> list[float]:
        return mean_weights(weights)


@register_method
@dataclass(frozen=True)
class DareLinear(WeightedSum):
    """Task arithmetic over DARE'd task vectors: tau_MTL = sum_t w_t DARE(tau_t); ``dare`` defaults to {drop_rate: 0.9, seed: 0}."""

    name = "dare_linear"
    aliases = ("dare_task_arithmetic",)

    dare: DareOptions | None = DareOptions()
