"""TIES' whole-model numbers for one run: the trim thresholds of each task and the total of elected signs."""
from __future__ import annotations

import threading
from typing import Sequence

import torch

from hf_lines.core import kernels
from hf_lines.core.methods.dare import DareOptions
from hf_lines.core.methods.kth_magnitude import KthMagnitude
from hf_lines.core.methods.task_vectors import iter_task_vectors


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
