"""Consensus merging with TALL masks (Wang et al. 2024, "Localizing Task Information for Improved Model Merging and Compression").

A task's TALL mask marks the entries where its own task vector outweighs what the rest
of the merge contributes there:

    m_t = |tau_t| > lam_t * |tau_MTL - tau_t|

Consensus keeps the entries of tau_MTL that at least ``k`` tasks mark: with k = 2 it drops
both "catastrophic" weights (no task needs them) and "selfish" ones (only one does);
k = 0 keeps tau_MTL as it is. tau_MTL is task arithmetic (default) or TIES.

Conventions follow the authors' code (``tall_masks`` / LiNeS repositories): a strict
``>`` in the mask; tau_MTL the plain sum of the task vectors (or TIES with ``aggregate:
sum``, their ``use_ties`` setting); tau_t the task vectors that went into the merge
(weighted, DARE'd if asked). Their lambda is chosen per task on validation data from
{0.2, 0.3, 0.4, 0.5, 0.6}; without validation data the default here is that grid's middle,
0.4. A list gives one lambda per task.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from hf_lines.errors import OptionError
from hf_lines.core.methods.base import MergeMethod, choose, get_method, is_number, register_method
from hf_lines.core.methods.dare import DareOptions
from hf_lines.core.methods.task_vectors import iter_task_vectors

BASES = ("task_arithmetic", "ties")
_BASE_ALIASES = {"sum": "task_arithmetic", "ta": "task_arithmetic"}
_TIES_ONLY = ("density", "trim", "aggregate", "zero_sign")


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


@register_method
@dataclass(frozen=True)
class Consensus(MergeMethod):
    """Consensus merging: tau_MTL (task arithmetic or TIES) restricted to entries that >= k TALL masks mark.

    Options:
        k: minimum number of tasks whose TALL mask marks an entry (default 2).
        lam: TALL-mask lambda, one number or one per model (default 0.4).
        base_method: "task_arithmetic" (default) or "ties": how tau_MTL is built.
        density, trim, aggregate, zero_sign: TIES options when base_method is "ties" (aggregate defaults to
            "sum" there, as the authors' code).
        dare: ``{drop_rate, seed}`` to DARE each task vector first (default: off).
    """

    name = "consensus"
    aliases = ("tall_masks", "consensus_merging")

    k: int = 2
    lam: float | tuple[float, ...] = 0.4  # a list is accepted and kept as a tuple (hashable)
    base_method: str = "task_arithmetic"
    # TIES options, None until base_method is ties; then the inner method's values (aggregate defaults to sum)
    density: float | None = None
    trim: str | None = None
    aggregate: str | None = None
    zero_sign: str | None = None
    dare: DareOptions | None = None
    inner: MergeMethod = field(init=False, repr=False, compare=False)  # the method that builds tau_MTL

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise OptionError(f"consensus option k must be an integer >= 0, got {self.k!r}")
        many = isinstance(self.lam, (list, tuple))
        lams = self.lam if many else [self.lam]
        if not lams or any(not is_number(x) or x < 0 for x in lams):
            raise OptionError(f"consensus option lam must be a number >= 0 or a list of them, got {self.lam!r}")
        self._set("lam", tuple(float(x) for x in lams) if many else float(self.lam))
        base = choose("consensus option base_method", self.base_method, BASES, _BASE_ALIASES)
        base_options = {key: getattr(self, key) for key in _TIES_ONLY if getattr(self, key) is not None}
        if base == "ties":
            base_options.setdefault("aggregate", "sum")
        elif base_options:
            raise OptionError(f"consensus options {list(_TIES_ONLY)} apply only with base_method: ties")
        inner = get_method(base, dare=self.dare, **base_options)
        self._set("base_method", base)
        self._set("inner", inner)
        for option in inner.option_names():  # the inner method's normalised values and defaults
            self._set(option, getattr(inner, option))

    def to_dict(self) -> dict[str, Any]:
        options = super().to_dict()
        if self.base_method != "ties":  # unset, and not options of the task arithmetic base
            for option in _TIES_ONLY:
                del options[option]
        return options

    def check_inputs(self, num_models: int) -> None:
        if isinstance(self.lam, tuple) and len(self.lam) != num_models:
            raise OptionError(f"consensus option lam lists {len(self.lam)} values for {num_models} models")

    @property
    def needs_statistics(self) -> bool:  # type: ignore[override]
        return self.inner.needs_statistics

    def new_statistics(self, num_models: int) -> Any:
        return self.inner.new_statistics(num_models)

    def observe(self, stats, name, base, models, weights) -> bool | None:
        return self.inner.observe(stats, name, base, models, weights)

    def finish_statistics(self, stats) -> bool | None:
        return self.inner.finish_statistics(stats)

    def _lambdas(self, n: int) -> torch.Tensor:
        self.check_inputs(n)
        lams = self.lam if isinstance(self.lam, tuple) else [self.lam] * n
        return torch.tensor(lams, dtype=torch.float32).reshape(-1, 1)

    def task_vector(self, name: str, base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float],
                    stats: Any = None) -> torch.Tensor:
        merged = self.inner.task_vector(name, base, models, weights, stats).reshape(-1)
        lam = self._lambdas(len(models))
        for start, stop, taus in iter_task_vectors(name, base, models, weights, self.dare):
            part = merged[start:stop]
            part.mul_(consensus_mask(tall_masks(taus, part, lam), self.k))
        return merged.view(base.shape)

    def statistics_record(self, stats: Any) -> dict[str, Any]:
        return self.inner.statistics_record(stats)
