"""TIES merging (Yadav et al. 2023): trim, elect sign, disjoint merge.

For each task vector w_t tau_t (DARE'd first when asked):

1. Trim: keep the entries with ``|tau_t| >= threshold_t``, where threshold_t is the
   ``(d - int(d * density))``-th smallest magnitude of the task vector (the paper's
   ``topk_values_mask``: about the top ``density`` fraction survives, ties included).
   ``trim: global`` (default, as the LiNeS and TIES papers' code) takes d over the whole
   flattened model: the threshold comes from a statistics pass (``kth_magnitude``);
   ``trim: tensor`` takes it per tensor, as mergekit does.
2. Elect: the sign of the sum of the trimmed vectors, per entry. Where that sum is exactly
   zero although some trimmed value is not (about 5% of the entries of bf16 task vectors),
   the authors' code takes the sign of the total of the elected signs over the whole
   flattened model (``zero_sign: model``, default): that total needs the final thresholds,
   so it takes one more read pass. ``zero_sign: tensor`` takes the tensor's own total
   instead, with no extra pass. If the total is not positive the negative values are
   merged, as in the authors' code.
3. Disjoint merge: the mean (``aggregate: mean``, default) or the sum (``aggregate: sum``)
   of the trimmed values whose sign agrees with the elected one.

``dare_ties`` replaces the magnitude trim by DARE (density defaults to 1, as mergekit's
``dare_ties``); ``ties`` with a ``dare:`` option DAREs first and then trims, as the DARE
paper combines them. Both are stages of ``generalized.staged_task_vector``: ``TiesMerge``
turns the options and the run's statistics into them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hf_lines.core import kernels
from hf_lines.errors import OptionError
from hf_lines.core.methods.base import MergeMethod, choose, is_number, register_method
from hf_lines.core.methods.dare import DareOptions
from hf_lines.core.methods.generalized import Stages
from hf_lines.core.methods.task_vectors import iter_task_vectors
from hf_lines.core.methods.ties_math import ties_sign_total
from hf_lines.core.methods.ties_statistics import TiesStatistics, observe_histograms, tensor_thresholds

TRIM_SCOPES = ("global", "tensor")
AGGREGATES = ("mean", "sum")
ZERO_SIGNS = ("model", "tensor")
_TRIM_ALIASES = {"per_tensor": "tensor", "per-tensor": "tensor", "model": "global"}


class TiesMerge(MergeMethod):
    """The stages sparsify (DARE, then trim) -> elect -> disjoint merge, and the whole-model numbers they need.

    Not a method itself: ``ties`` and ``dare_ties`` are dataclasses declaring the fields
    ``density, trim, aggregate, zero_sign, dare`` with their own defaults.
    """

    density: float  # the fields of each subclass
    trim: str
    aggregate: str
    zero_sign: str
    dare: DareOptions | None

    def __post_init__(self) -> None:
        if not is_number(self.density) or not 0.0 < self.density <= 1.0:
            raise OptionError(f"ties option density must be a number in (0, 1], got {self.density!r}")
        self._set("density", float(self.density))
        self._set("trim", choose("ties option trim", self.trim, TRIM_SCOPES, _TRIM_ALIASES))
        choose("ties option aggregate", self.aggregate, AGGREGATES)
        choose("ties option zero_sign", self.zero_sign, ZERO_SIGNS)
        self._set("dare", DareOptions.coerce(self.dare))

    @property
    def global_trim(self) -> bool:
        return self.trim == "global" and self.density < 1.0

    @property
    def needs_statistics(self) -> bool:  # type: ignore[override]
        return self.global_trim or self.zero_sign == "model"

    # ------------------------------------------------------------ statistics
    def new_statistics(self, num_models: int) -> "TiesStatistics | None":
        if not self.needs_statistics:
            return None
        return TiesStatistics(self.density if self.global_trim else None, num_models, self.zero_sign == "model")

    def observe(self, stats: "TiesStatistics", name, base, models, weights) -> bool | None:
        if stats.counting_signs:  # the thresholds are final: this pass counts the elected signs
            thresholds = self._thresholds_for(name, base, models, weights, stats)
            stats.add_signs(ties_sign_total(name, base, models, weights, thresholds, self.dare))
            return None
        trackers = stats.trackers
        wanted = [t for t, k in enumerate(trackers) if k.needs_values]
        if not wanted:
            return None
        if self.dare is None:
            finite = observe_histograms(trackers, base, models, weights, stats.thread_totals())
            if finite is not None:
                return finite
        for _, _, taus in iter_task_vectors(name, base, models, weights, self.dare):
            for t in wanted:
                trackers[t].add(taus[t])
        return None

    def finish_statistics(self, stats: "TiesStatistics") -> bool:
        return stats.finish()

    def statistics_record(self, stats: "TiesStatistics | None") -> dict[str, Any]:
        record: dict[str, Any] = {}
        if stats is not None and self.global_trim and stats.thresholds is not None:
            record["global_thresholds"] = stats.thresholds
        if stats is not None and stats.sign_total is not None:
            record["sign_total"] = stats.sign_total
        return record

    # ------------------------------------------------------------ merge
    def _thresholds_for(self, name, base, models, weights, stats: "TiesStatistics | None") -> list[float]:
        if self.density >= 1.0:
            return [0.0] * len(models)
        if self.trim == "tensor":
            return tensor_thresholds(name, base, models, weights, self.density, self.dare)
        thresholds = stats.thresholds if stats is not None else None
        if thresholds is None:
            raise RuntimeError("TIES with trim 'global' needs its statistics pass first (LinesMerger runs it)")
        return thresholds

    def _sign_total(self, stats: "TiesStatistics | None") -> int | None:
        """The whole model's total of elected signs (zero_sign: model), None to use each tensor's own."""
        if self.zero_sign != "model":
            return None
        if stats is None or stats.sign_total is None:
            raise RuntimeError("TIES with zero_sign 'model' needs its statistics pass first (LinesMerger runs it)")
        return stats.sign_total

    def stages(self, name, base, models, weights, stats=None) -> Stages:
        # density 1 keeps everything: no magnitude trim (dare_ties' default)
        thresholds = None if self.density >= 1.0 else tuple(self._thresholds_for(name, base, models, weights, stats))
        return Stages(dare=self.dare, thresholds=thresholds, elect=True, sign_total=self._sign_total(stats),
                      aggregate=self.aggregate)

    def fused_merge(self, name, base, models, weights, scale, out=None, stats=None):
        if self.dare is not None or not kernels.available():
            return None
        thresholds = self._thresholds_for(name, base, models, weights, stats)
        return kernels.ties_edit(base, models, weights, thresholds, scale, self.aggregate, out=out,
                                 sign_total=self._sign_total(stats))


@register_method
@dataclass(frozen=True)
class Ties(TiesMerge):
    """TIES: trim each task vector to its top ``density`` magnitudes, elect signs, disjoint mean.

    Options:
        density: fraction of each task vector kept by the trim, in (0, 1] (default 0.2).
        trim: "global" (threshold over the whole model, the paper's code; default) or
            "tensor" (per tensor, as mergekit; "per_tensor" is accepted too).
        aggregate: "mean" (default, the TIES paper) or "sum" of the agreeing entries.
        zero_sign: where the trimmed values of an entry cancel exactly, the elected sign is that
            of the total of elected signs over the whole "model" (default, the authors' code; one
            more read pass) or over the "tensor" (no extra pass).
        dare: ``{drop_rate, seed}`` to DARE each task vector before trimming (default: off).
    """

    name = "ties"
    aliases = ("ties_merging",)

    density: float = 0.2
    trim: str = "global"
    aggregate: str = "mean"
    zero_sign: str = "model"
    dare: DareOptions | None = None


@register_method
@dataclass(frozen=True)
class DareTies(TiesMerge):
    """TIES with DARE in place of the magnitude trim: density defaults to 1, dare to {drop_rate: 0.9, seed: 0}."""

    name = "dare_ties"
    aliases = ()

    density: float = 1.0
    trim: str = "global"
    aggregate: str = "mean"
    zero_sign: str = "model"
    dare: DareOptions | None = DareOptions()
