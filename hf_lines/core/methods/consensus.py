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

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from hf_lines.errors import OptionError
from hf_lines.core.methods.base import MergeMethod, choose, get_method, is_number, register_method
from hf_lines.core.methods.dare import DareOptions
from hf_lines.core.methods.generalized import Stages
from hf_lines.core.methods.stack_steps import consensus_mask, tall_masks

if TYPE_CHECKING:
    from hf_lines.core.methods.ties import TiesMerge

__all__ = ["BASES", "Consensus", "consensus_mask", "tall_masks"]

BASES = ("task_arithmetic", "ties")
_BASE_ALIASES = {"sum": "task_arithmetic", "ta": "task_arithmetic"}
_TIES_ONLY = ("density", "trim", "aggregate", "zero_sign")


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
    # TIES options, None until base_method is ties; then the TIES config's values (aggregate defaults to sum)
    density: float | None = None
    trim: str | None = None
    aggregate: str | None = None
    zero_sign: str | None = None
    dare: DareOptions | None = None
    # with base_method ties: the TIES config whose stages (and statistics) come before the mask
    ties: "TiesMerge | None" = field(init=False, repr=False, compare=False)

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
        # the base method validates and normalises its options (and names them in its errors)
        inner = get_method(base, dare=self.dare, **base_options)
        self._set("base_method", base)
        self._set("ties", inner if base == "ties" else None)
        for option in inner.option_names():  # the base method's normalised values and defaults
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
        return self.ties is not None and self.ties.needs_statistics

    def new_statistics(self, num_models: int) -> Any:
        return self.ties.new_statistics(num_models) if self.ties is not None else None

    def observe(self, stats, name, base, models, weights) -> bool | None:
        return self.ties.observe(stats, name, base, models, weights) if self.ties is not None else None

    def finish_statistics(self, stats) -> bool | None:
        return self.ties.finish_statistics(stats) if self.ties is not None else None

    def statistics_record(self, stats: Any) -> dict[str, Any]:
        return self.ties.statistics_record(stats) if self.ties is not None else {}

    def stages(self, name, base, models, weights, stats=None) -> Stages:
        self.check_inputs(len(models))
        merged = self.ties.stages(name, base, models, weights, stats) if self.ties is not None else Stages(dare=self.dare)
        lams = self.lam if isinstance(self.lam, tuple) else (self.lam,) * len(models)
        return replace(merged, consensus_k=self.k, consensus_lams=lams)
