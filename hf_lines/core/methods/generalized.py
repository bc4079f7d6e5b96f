"""Generalized task arithmetic (mergekit's shape): one staged function computes every method's tau_MTL.

Task arithmetic, mean, soups, WiSE-FT, DARE, TIES and Consensus differ only in which steps
they run over the (N, B) stacks of weighted task vectors w_t * tau_t:

1. sparsify: DARE (drop entries at random, rescale the rest), then a magnitude trim by a
   threshold per task (TIES);
2. elect: none, or TIES' sign election, whose zero-sign rule settles the entries where the
   kept values cancel exactly;
3. aggregate: the sum, or (with election) the mean over the agreeing entries;
4. mask: none, or Consensus' TALL masks (at least k tasks mark the entry).

A method turns its options into a ``Stages`` (plain data) and ``staged_task_vector`` runs it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from hf_lines.core.methods.arithmetic import task_vector_sum
from hf_lines.core.methods.dare import DareOptions
from hf_lines.core.methods.stack_steps import (
    apply_consensus,
    disjoint_merge_counted,
    elect_sign,
    sum_in_task_order,
    trim_by_threshold,
)
from hf_lines.core.methods.task_vectors import STACK_CHUNK, iter_task_vectors

AGGREGATES = ("sum", "mean")


@dataclass(frozen=True)
class Stages:
    """The steps one method runs over one tensor's task vectors: plain data, no tensors.

    Args:
        dare: sparsify by DARE first (drop rate and seed), or None.
        thresholds: sparsify by magnitude: per task, keep ``|tau_t| >= threshold_t``; None: no trim.
        elect: elect a sign per entry (TIES) and merge only the values that agree with it.
        sign_total: the whole model's total of elected signs, which settles entries whose kept values
            cancel exactly (> 0: the positive ones, else the negative ones); None: this tensor's own total.
        aggregate: "sum", or "mean" over the agreeing entries (needs ``elect``).
        consensus_k: keep the entries that at least this many TALL masks mark; None: no mask.
        consensus_lams: the TALL-mask lambda of each task (with ``consensus_k``).
    """

    dare: DareOptions | None = None
    thresholds: tuple[float, ...] | None = None
    elect: bool = False
    sign_total: int | None = None
    aggregate: str = "sum"
    consensus_k: int | None = None
    consensus_lams: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {list(AGGREGATES)}, got {self.aggregate!r}")
        if not self.elect and (self.aggregate == "mean" or self.sign_total is not None):
            raise ValueError("aggregate 'mean' and sign_total apply to elected signs only (elect=True)")
        if (self.consensus_k is None) != (self.consensus_lams is None):
            raise ValueError("consensus_k and consensus_lams go together")

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps in the order they run, e.g. ("dare", "trim", "elect", "sum", "consensus")."""
        sparsify = ("dare",) * (self.dare is not None) + ("trim",) * (self.thresholds is not None)
        mask = ("consensus",) * (self.consensus_k is not None)
        return (*sparsify, *("elect",) * self.elect, self.aggregate, *mask)

    @property
    def plain_sum(self) -> bool:
        """Nothing but the weighted sum: task arithmetic, whose arithmetic is the fused kernel's."""
        return self.steps == ("sum",)

    def check(self, num_models: int) -> None:
        """Refuse per-task lists whose length is not the number of models (raise ValueError)."""
        for what, values in (("thresholds", self.thresholds), ("consensus_lams", self.consensus_lams)):
            if values is not None and len(values) != num_models:
                raise ValueError(f"stages list {len(values)} {what} for {num_models} models")


def _column(values: Sequence[float] | None) -> torch.Tensor | None:
    """(N, 1) float32 per-task values, to broadcast over an (N, B) stack."""
    return None if values is None else torch.tensor(list(values), dtype=torch.float32).reshape(-1, 1)


def staged_task_vector(
    name: str, base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], stages: Stages
) -> torch.Tensor:
    """tau_MTL of one tensor by ``stages``: a new float32 tensor shaped like ``base``, slice by slice.

    Args:
        name: tensor name (seeds DARE).
        base: theta_0.
        models: theta_t per model.
        weights: w_t per model (the method's coefficients).
        stages: the steps to run.
    """
    stages.check(len(models))
    out = torch.empty(base.numel(), dtype=torch.float32)
    b, flat = base.reshape(-1), [m.reshape(-1) for m in models]
    if stages.plain_sum:  # no stack needed: task arithmetic's own accumulation, slice by slice
        for start in range(0, b.numel(), STACK_CHUNK):
            stop = start + STACK_CHUNK
            out[start:stop] = task_vector_sum(b[start:stop], [m[start:stop] for m in flat], weights)
        return out.view(base.shape)
    thr, lam, k = _column(stages.thresholds), _column(stages.consensus_lams), stages.consensus_k
    masked = k is not None and k > 0  # k = 0 keeps every entry
    tensor_total = 0  # the tensor's own total of elected signs, when the model's is not given
    cancelled: list[tuple[torch.Tensor, torch.Tensor]] = []  # (entries, their value if the negatives win)
    for start, stop, taus in iter_task_vectors(name, base, models, weights, stages.dare):  # sparsify: DARE
        part = out[start:stop]
        # sparsify: trim (into a copy when masks follow: they compare tau_MTL with the untrimmed task vectors)
        kept = taus if thr is None else trim_by_threshold(taus, thr, inplace=not masked)
        if stages.elect:  # elect, then aggregate the agreeing entries
            signs, ambiguous = _elect_and_merge(kept, part, stages)
            tensor_total += signs
            cancelled += _negative_merges(kept, taus, ambiguous, start, stages, lam if masked else None)
        elif thr is not None:  # aggregate: the sum
            part.copy_(sum_in_task_order(kept))
        elif stages.dare is not None:
            torch.sum(kept, 0, out=part)  # DARE'd sums have always used torch.sum's order (no kernel to match)
        else:  # the fused kernel's bytes for every dtype (a float64 stack is rounded differently)
            part.copy_(task_vector_sum(b[start:stop], [m[start:stop] for m in flat], weights))
        if masked:  # mask
            apply_consensus(part, taus, lam, k)
    if stages.elect and stages.sign_total is None and tensor_total <= 0:
        for idx, value in cancelled:
            out[idx] = value
    return out.view(base.shape)


def _elect_and_merge(kept: torch.Tensor, part: torch.Tensor, stages: Stages) -> tuple[int, torch.Tensor | None]:
    """TIES on one slice, into ``part``: (the slice's total of elected signs, its entries whose kept values cancel).

    Where they cancel the positive values are merged, unless the model's total already says the
    negative ones; without that total the caller settles them (``_negative_merges``), and the
    cancelling entries are returned (None otherwise).
    """
    sign = elect_sign(kept)
    zero = sign == 0
    known = stages.sign_total is not None
    total = 0 if known else int(sign.sum())  # exact: a float32 sum of at most 2**24 values +-1
    fill = -1.0 if known and stages.sign_total <= 0 else 1.0
    merged, count = disjoint_merge_counted(kept, sign.masked_fill_(zero, fill), stages.aggregate)
    part.copy_(merged)
    return total, None if known else zero & (count > 0)  # count > 0: some positive values were merged


def _negative_merges(
    kept: torch.Tensor, taus: torch.Tensor, ambiguous: torch.Tensor | None, start: int, stages: Stages,
    lam: torch.Tensor | None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The entries whose kept values cancel, and their merged (and masked) value should the negatives win."""
    if ambiguous is None or not bool(ambiguous.any()):
        return []
    idx = ambiguous.nonzero().reshape(-1)
    value = disjoint_merge_counted(kept[:, idx], torch.full((idx.numel(),), -1.0), stages.aggregate)[0]
    if lam is not None:
        apply_consensus(value, taus[:, idx], lam, stages.consensus_k)
    return [(idx + start, value)]


def staged_sign_total(
    name: str, base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], stages: Stages
) -> int:
    """The total of one tensor's elected signs (+1, -1 or 0 per entry) after the sparsify steps, exact.

    Summed over the whole model, its sign settles the entries whose kept values cancel
    exactly (``zero_sign: model``, the authors' ``resolve_zero_signs``).
    """
    thr = _column(stages.thresholds)
    total = 0
    for _, _, taus in iter_task_vectors(name, base, models, weights, stages.dare):
        kept = taus if thr is None else trim_by_threshold(taus, thr, inplace=True)
        total += int(elect_sign(kept).sum(dtype=torch.int64))
    return total
