"""Statistics passes before any output is written: the merge method's whole-model numbers and auto alpha.

Auto alpha is the LiNeS paper's choice for multi-task merges (its code's ``norm_summed_tvs``
and ``norm_mtv``): alpha = (1/N) * ||sum_t w_t tau_t||_1 / ||tau_MTL||_1 over every
floating tensor, so that the shallow layers of the merge move about as far as one
average task vector would; plain task arithmetic gets exactly 1/N, a mean gets 1.

Read passes over the inputs, besides the one that writes the output:

* none for a method without statistics and an explicit alpha;
* one for auto alpha when tau_MTL is local to a tensor (task arithmetic, mean, soups,
  WiSE-FT, DARE, per-tensor TIES, Consensus over those): both norms in the same pass;
* for TIES (and Consensus over it): one for the global thresholds, two when they need the
  refinement pass (see ``methods/kth_magnitude.py``: float32 inputs), none with per-tensor
  trim; then one for the whole model's total of elected signs (``zero_sign: model``), which
  needs the final thresholds;
* TIES with auto alpha needs one more: ||tau_MTL||_1 depends on every task's threshold and
  on the sign total, known only when those passes have ended.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from hf_lines.pipeline.executor import statistics_pass
from hf_lines.errors import LinesError
from hf_lines.core.methods import MergeMethod
from hf_lines.core.methods.task_vectors import sum_l1_norm

Reader = Callable[[str], "tuple[torch.Tensor, list[torch.Tensor]]"]


@dataclass(frozen=True)
class AutoAlpha:
    """The numbers behind alpha = (1/N) * ||sum_t w_t tau_t||_1 / ||tau_MTL||_1."""

    num_models: int
    sum_l1: float
    merged_l1: float

    @property
    def value(self) -> float:
        if self.merged_l1 == 0.0:
            raise LinesError(
                "auto alpha is undefined: the merged task vector is zero everywhere "
                "(are the fine-tuned models identical to the base, or did the method drop every entry?); give alpha explicitly"
            )
        return (self.sum_l1 / self.merged_l1) / self.num_models

    def as_dict(self) -> dict[str, Any]:
        return {"num_models": self.num_models, "sum_l1": self.sum_l1, "merged_l1": self.merged_l1}


class L1Norms:
    """Per-tensor L1 norms (float64) summed in name order, so the total never depends on thread timing."""

    def __init__(self) -> None:
        self._norms: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, name: str, value: float) -> None:
        with self._lock:
            self._norms[name] = value

    def total(self) -> float:
        return float(sum(self._norms[n] for n in sorted(self._norms)))


def run_statistics(
    names: Sequence[str],
    read: Reader,
    method: MergeMethod,
    weights: Sequence[float],
    *,
    stats: Any = None,
    auto_alpha: bool,
    progress: bool = True,
    workers: int | None = None,
    sizes: dict[str, int] | None = None,
    check: Callable[[str, torch.Tensor, list[torch.Tensor]], None] | None = None,
) -> AutoAlpha | None:
    """Run the statistics passes ``method`` and auto alpha need; returns the auto-alpha numbers when asked.

    ``stats`` is this run's ``method.new_statistics(...)``: the method's findings go there, never into the method.

    ``check(name, base, models)`` refuses non-finite inputs; it runs for the tensors whose
    values the method's fused kernels did not already find finite (``read`` need not check).
    """
    method_pending = bool(method.needs_statistics)
    sum_norms = L1Norms() if auto_alpha else None
    merged_norms = L1Norms() if auto_alpha else None
    merged_pending = auto_alpha
    first = True
    pass_no = 0
    while method_pending or merged_pending:
        pass_no += 1
        # tau_MTL is final only once the method's own statistics are complete
        do_merged = merged_pending and not method_pending
        do_sum = sum_norms is not None and first
        do_method = method_pending

        def observe(name: str) -> None:
            base, models = read(name)
            if not base.is_floating_point():
                return
            verified = bool(do_method and method.observe(stats, name, base, models, weights))
            if not verified and check is not None:
                check(name, base, models)
            if do_sum:
                sum_norms.add(name, sum_l1_norm(base, models, weights))
            if do_merged:
                merged_norms.add(name, method.task_vector_l1(name, base, models, weights, stats))

        what = [w for w, on in ((method.name, do_method), ("auto alpha", do_sum or do_merged)) if on]
        statistics_pass(
            names, observe, desc=f"statistics {pass_no} ({', '.join(what)})", progress=progress, workers=workers,
            sizes=sizes, costs={n: b * (len(weights) + 2) for n, b in sizes.items()} if sizes else None,
        )
        if do_method:
            method_pending = bool(method.finish_statistics(stats))
        if do_merged:
            merged_pending = False
        first = False
    if not auto_alpha:
        return None
    return AutoAlpha(len(weights), sum_norms.total(), merged_norms.total())
