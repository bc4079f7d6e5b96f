"""Per-block norms of the task vector before and after LiNeS, for summaries, cards and plots."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from hf_lines.core.scratch import scratch_like
from hf_lines.core.layers import LayerMap


@dataclass(frozen=True)
class BlockNorm:
    tower: str
    block: int | None  # None: the tensors outside every block
    scale: float | None  # None when the tensors of the group have different scales
    before: float  # ||tau_MTL|| over the group's tensors (L2)
    after: float  # ||theta - theta_0|| over the group's tensors


def tensor_norms(
    base: torch.Tensor, out: torch.Tensor, scale: float, task_vector: Callable[[], torch.Tensor]
) -> tuple[float, float]:
    """(||tau_MTL||, ||out - base||) of one tensor; tau_MTL is recomputed only where lambda = 0."""
    # In the stored dtype (the difference of close values is exact) and in recycled memory:
    # the norm is a report, and must not cost as much as the edit it reports on.
    diff = scratch_like(out)
    if base.dtype == out.dtype:
        torch.sub(out, base, out=diff)
    else:
        diff.copy_(out - base.to(out.dtype))
    after = float(torch.linalg.vector_norm(diff, dtype=torch.float32))  # a bf16 result would round the norm itself
    if scale != 0:
        return after / abs(scale), after
    return float(torch.linalg.vector_norm(task_vector())), after


def block_norms(layer_map: LayerMap, norms: dict[str, tuple[float, float]], scales: dict[str, float]) -> list[BlockNorm]:
    """Aggregate per-tensor norms by block (L2 over the block's tensors), shallow to deep, then non-block tensors."""
    groups: dict[tuple[int, int | None], list[str]] = {}
    for name in norms:
        index = layer_map.params.get(name)
        tower = (layer_map._tower_of or {}).get(name, 0)
        groups.setdefault((tower, index), []).append(name)
    rows = []
    for (tower, index), names in sorted(groups.items(), key=lambda kv: (kv[0][1] is None, kv[0][0], kv[0][1] or 0)):
        distinct = {round(scales[n], 12) for n in names}
        rows.append(
            BlockNorm(
                tower=layer_map.towers[tower].name if layer_map.towers else "",
                block=index,
                scale=scales[names[0]] if len(distinct) == 1 else None,
                before=math.sqrt(sum(norms[n][0] ** 2 for n in names)),
                after=math.sqrt(sum(norms[n][1] ** 2 for n in names)),
            )
        )
    return rows
