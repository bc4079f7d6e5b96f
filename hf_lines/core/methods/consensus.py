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

from typing import Any, Sequence

import torch

from hf_lines.errors import OptionError
from hf_lines.core.methods.base import MergeMethod, get_method, register_method
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
    option_names = ("k", "lam", "base_method", "density", "trim", "aggregate", "zero_sign", "dare")

    def __init__(self, **options: Any):
        super().__init__(**options)
        k = options.get("k", 2)
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise OptionError(f"consensus option k must be an integer >= 0, got {k!r}")
        lam = options.get("lam", 0.4)
        lams = lam if isinstance(lam, (list, tuple)) else [lam]
        if not lams or any(isinstance(x, bool) or not isinstance(x, (int, float)) or x < 0 for x in lams):
            raise OptionError(f"consensus option lam must be a number >= 0 or a list of them, got {lam!r}")
        base = options.get("base_method", "task_arithmetic")
        base = _BASE_ALIASES.get(base, base) if isinstance(base, str) else base
        if base not in BASES:
            raise OptionError(f"consensus option base_method must be one of {list(BASES)}, got {options.get('base_method')!r}")
        base_options = {key: options[key] for key in ("dare", *_TIES_ONLY) if key in options}
        if base == "ties":
            base_options.setdefault("aggregate", "sum")
        elif any(key in options for key in _TIES_ONLY):
            raise OptionError(f"consensus options {list(_TIES_ONLY)} apply only with base_method: ties")
        self.k = k
        self.lam = [float(x) for x in lams] if isinstance(lam, (list, tuple)) else float(lam)
        self.inner = get_method(base, **base_options)
        self.options = {"k": self.k, "lam": self.lam, "base_method": base, **self.inner.options}

    def check_inputs(self, num_models: int) -> None:
        if isinstance(self.lam, list) and len(self.lam) != num_models:
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
        lams = self.lam if isinstance(self.lam, list) else [self.lam] * n
        return torch.tensor(lams, dtype=torch.float32).reshape(-1, 1)

    def task_vector(self, name: str, base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float],
                    stats: Any = None) -> torch.Tensor:
        merged = self.inner.task_vector(name, base, models, weights, stats).reshape(-1)
        lam = self._lambdas(len(models))
        dare = getattr(self.inner, "dare", None)
        for start, stop, taus in iter_task_vectors(name, base, models, weights, dare):
            part = merged[start:stop]
            part.mul_(consensus_mask(tall_masks(taus, part, lam), self.k))
        return merged.view(base.shape)

    def statistics_record(self, stats: Any) -> dict[str, Any]:
        return self.inner.statistics_record(stats)
