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
paper combines them.
"""
from __future__ import annotations

import threading
from typing import Any, Sequence

import torch

from hf_lines.core import kernels
from hf_lines.errors import OptionError
from hf_lines.core.methods.base import MergeMethod, register_method
from hf_lines.core.methods.dare import DareOptions
from hf_lines.core.methods.kth_magnitude import KthMagnitude
from hf_lines.core.methods.task_vectors import iter_task_vectors

TRIM_SCOPES = ("global", "tensor")
AGGREGATES = ("mean", "sum")
ZERO_SIGNS = ("model", "tensor")
_TRIM_ALIASES = {"per_tensor": "tensor", "per-tensor": "tensor", "model": "global"}


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


def tensor_thresholds(
    name: str,
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    weights: Sequence[float],
    density: float,
    dare: DareOptions | None = None,
) -> list[float]:
    """Each task's trim threshold over one tensor (``trim: tensor``), exact, without sorting.

    The same radix selection as the global threshold, over the tensor's slices: 2x
    (float32) to 6x (bfloat16) faster than ``torch.kthvalue`` on large tensors, and no
    task vector is held whole.

    Args:
        name: tensor name (seeds DARE).
        base: theta_0.
        models: theta_t per model.
        weights: w_t per model.
        density: fraction kept, in (0, 1].
        dare: DARE each task vector first, when given.
    """
    trackers = [KthMagnitude(density) for _ in models]
    if dare is None and fused_histograms(trackers, base, models, weights) is not None:
        return [float(k.threshold) for k in trackers]  # type: ignore[arg-type]
    active = list(range(len(models)))
    while active:
        for _, _, taus in iter_task_vectors(name, base, models, weights, dare):
            for t in active:
                trackers[t].add(taus[t])
        active = [t for t in active if trackers[t].finish()]
    return [float(k.threshold) for k in trackers]  # type: ignore[arg-type]


def fused_histograms(
    trackers: Sequence[KthMagnitude], base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float]
) -> bool | None:
    """Every pass the trackers need over one tensor, by the fused kernels: per-tensor thresholds.

    Returns whether every value was finite, or None where the kernels do not apply.
    """
    finite = observe_histograms(trackers, base, models, weights)
    if finite is None:
        return None
    while any([k.finish() for k in trackers if k.needs_values]):
        if observe_histograms(trackers, base, models, weights) is None:
            return None
    return finite


def observe_histograms(
    trackers: Sequence[KthMagnitude],
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    weights: Sequence[float],
    totals: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> bool | None:
    """Count one tensor in the current pass of each tracker that needs values; True when all were finite.

    With ``totals`` (a thread's running (counts, inexact) of pass 1, see ``Ties``) pass-1
    histograms are added there and reach the trackers at the end of the pass; otherwise
    they are added to the trackers now. None where the kernels do not apply (nothing was
    counted then).
    """
    wanted = [t for t, k in enumerate(trackers) if k.needs_values]
    if not wanted:
        return True
    shift = trackers[wanted[0]].shift
    refine = [t for t in wanted if trackers[t].bin_to_refine is not None]
    if not refine:  # pass 1 for every task at once: the base is read once
        hist = kernels.ties_histograms(base, models, weights, shift, *(totals or (None, None)))
        if hist is None:
            return None
        counts, inexact, finite = hist
        if totals is None:
            for t in wanted:
                trackers[t].add_histogram(counts[t], inexact[t])
        return finite
    lows = [kernels.ties_low_histogram(base, models[t], weights[t], shift, trackers[t].bin_to_refine) for t in refine]
    if any(low is None for low in lows):
        return None
    for t, low in zip(refine, lows):
        trackers[t].add_histogram(None, low=low)
    return None if len(refine) < len(wanted) else True


@register_method
class Ties(MergeMethod):
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
    option_names = ("density", "trim", "aggregate", "zero_sign", "dare")
    default_density = 0.2
    default_dare = False

    def __init__(self, **options: Any):
        super().__init__(**options)
        density = options.get("density", self.default_density)
        if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0.0 < density <= 1.0:
            raise OptionError(f"ties option density must be a number in (0, 1], got {density!r}")
        trim = options.get("trim", "global")
        trim = _TRIM_ALIASES.get(trim, trim) if isinstance(trim, str) else trim
        if trim not in TRIM_SCOPES:
            raise OptionError(f"ties option trim must be one of {list(TRIM_SCOPES)}, got {options.get('trim')!r}")
        aggregate = options.get("aggregate", "mean")
        if aggregate not in AGGREGATES:
            raise OptionError(f"ties option aggregate must be one of {list(AGGREGATES)}, got {aggregate!r}")
        zero_sign = options.get("zero_sign", "model")
        if zero_sign not in ZERO_SIGNS:
            raise OptionError(f"ties option zero_sign must be one of {list(ZERO_SIGNS)}, got {zero_sign!r}")
        self.density = float(density)
        self.trim = trim
        self.aggregate = aggregate
        self.zero_sign = zero_sign
        self.dare = DareOptions.coerce(options.get("dare", True if self.default_dare else None))
        self.options = {
            "density": self.density,
            "trim": self.trim,
            "aggregate": self.aggregate,
            "zero_sign": self.zero_sign,
            "dare": self.dare.as_dict() if self.dare else None,
        }

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

    def fused_merge(self, name, base, models, weights, scale, out=None, stats=None):
        if self.dare is not None or not kernels.available():
            return None
        thresholds = self._thresholds_for(name, base, models, weights, stats)
        return kernels.ties_edit(base, models, weights, thresholds, scale, self.aggregate, out=out,
                                 sign_total=self._sign_total(stats))

    def task_vector(self, name, base, models, weights, stats=None) -> torch.Tensor:
        thresholds = self._thresholds_for(name, base, models, weights, stats)
        return ties_task_vector(name, base, models, weights, thresholds, self.aggregate, self.dare,
                                self._sign_total(stats))

    def statistics_record(self, stats: "TiesStatistics | None") -> dict[str, Any]:
        record: dict[str, Any] = {}
        if stats is not None and self.global_trim and stats.thresholds is not None:
            record["global_thresholds"] = stats.thresholds
        if stats is not None and stats.sign_total is not None:
            record["sign_total"] = stats.sign_total
        return record


class TiesStatistics:
    """One run's whole-model TIES numbers: the global trim thresholds, then the total of elected signs.

    The thresholds take one or two passes (a radix tracker per task; pass-1 histograms are kept
    per worker thread, so a tensor's histogram is not allocated, zeroed and added up per tensor).
    The sign total needs final thresholds, so it takes one more pass (``zero_sign: model``).
    """

    def __init__(self, density: float | None, num_models: int, count_signs: bool):
        self.trackers = [KthMagnitude(density) for _ in range(num_models)] if density is not None else []
        self.sign_total: int | None = None
        self._count_signs = count_signs
        self._signs = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._totals: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def counting_signs(self) -> bool:
        """True during the pass that counts elected signs (thresholds final, sign total still to come)."""
        return self._count_signs and self.sign_total is None and self.thresholds_final

    @property
    def thresholds_final(self) -> bool:
        return all(k.threshold is not None for k in self.trackers)

    def add_signs(self, count: int) -> None:
        with self._lock:
            self._signs += count

    def thread_totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        totals = getattr(self._local, "totals", None)
        if totals is None:
            counts = torch.zeros((len(self.trackers), self.trackers[0].counts.numel()), dtype=torch.int64)
            totals = self._local.totals = (counts, torch.zeros_like(counts))
            with self._lock:
                self._totals.append(totals)
        return totals

    def finish(self) -> bool:
        """End of a pass: True when another pass is needed (a threshold refinement, or the sign count)."""
        if self.counting_signs:
            self.sign_total = self._signs
            return False
        for counts, inexact in self._totals:
            for t, k in enumerate(self.trackers):
                if k.needs_values and k.bin_to_refine is None:
                    k.add_histogram(counts[t], inexact[t])
        self._totals = []
        self._local = threading.local()
        if any([k.finish() for k in self.trackers if k.needs_values]):
            return True
        return self.counting_signs

    @property
    def thresholds(self) -> list[float] | None:
        """The global trim threshold of each task once its passes are done (None before, or without global trim)."""
        if not self.trackers or not self.thresholds_final:
            return None
        return [float(k.threshold) for k in self.trackers]  # type: ignore[arg-type]


@register_method
class DareTies(Ties):
    """TIES with DARE in place of the magnitude trim: density defaults to 1, dare to {drop_rate: 0.9, seed: 0}."""

    name = "dare_ties"
    aliases = ()
    default_density = 1.0
    default_dare = True
