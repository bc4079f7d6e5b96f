"""Full-model outputs of a sweep, several per read pass over the inputs.

Output k, tensor n: theta_SFT + lambda_k(n) * sum_i w_ki (theta_i - theta_SFT), computed
as ``LinesMerger`` computes task arithmetic: the fused kernel ``kernels.weighted_sum_edit``
where it applies, else ``methods.arithmetic.weighted_sum_edit`` (the same float32
operations in the same order), stored in the SFT's dtype. So a soup output and the merge
its recipe describes are the same bytes (tests/test_soup.py::test_soup_equals_merge_of_its_recipe).
The per-tensor Gram matrix of the task vectors, computed once per tensor, gives every
output's ||sum_i w_i tau_i|| for its model card.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from hf_lines.core.threads import intra_op_threads, per_worker
from hf_lines.pipeline.executor import default_workers
from hf_lines.core.methods.arithmetic import CHUNK
from hf_lines.core.methods.task_arithmetic import TaskArithmetic
from hf_lines.pipeline.multi_stream import stream_many
from hf_lines.io.writer import ShardedWriter
from hf_lines.soups.inputs import SoupInputs
from hf_lines.soups.outputs import SoupOutput

Inputs = tuple[torch.Tensor, list[torch.Tensor], "torch.Tensor | None"]
_TASK_ARITHMETIC = TaskArithmetic()


def task_vector_gram(base: torch.Tensor, models: Sequence[torch.Tensor], chunk: int = CHUNK) -> torch.Tensor:
    """G[i, j] = <tau_i, tau_j> in float64 (float32 products summed per chunk), tau_i = models[i] - base."""
    n = len(models)
    gram = torch.zeros(n, n, dtype=torch.float64)
    b, flat = base.reshape(-1), [m.reshape(-1) for m in models]
    taus = torch.empty(n, min(chunk, b.numel()), dtype=torch.float32)
    for start in range(0, b.numel(), chunk):
        stop = min(start + chunk, b.numel())
        b32 = b[start:stop].float()
        t = taus[:, : stop - start]
        for i, m in enumerate(flat):
            torch.sub(m[start:stop], b32, out=t[i])
        gram += (t @ t.T).double()
    return gram


def soup_tensor(base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], scale: float,
                dtype: torch.dtype) -> torch.Tensor:
    """base + scale * sum_i w_i (models[i] - base), stored in ``dtype`` (non-floating tensors: base)."""
    if not base.is_floating_point():
        return base.clone()
    # task arithmetic's own dispatch, so the bytes are those of `hf-lines merge` of the output's recipe
    fused = _TASK_ARITHMETIC.fused_merge("", base, models, weights, scale)
    out = fused[0] if fused is not None else _TASK_ARITHMETIC.merge("", base, models, weights, scale)
    return out if out.dtype == dtype else out.to(dtype)


def write_full_outputs(
    inputs: SoupInputs,
    outputs: Sequence[SoupOutput],
    folders: Sequence[Path],
    scales: Sequence[dict[str, float]],
    *,
    max_shard_size: int | str = "5GB",
    workers: int | None = None,
    progress: bool = True,
    norms: bool = True,
) -> list[dict[str, tuple[float, float]]]:
    """Stream every output into its folder in one read pass; returns per output {tensor: (||tau||, ||theta - theta_SFT||)}.

    ``||theta - theta_SFT||`` is reported as |lambda| ||sum_i w_i tau_i|| (exact arithmetic, before rounding).
    """
    infos = inputs.infos()
    writers = [ShardedWriter(f, infos, max_shard_size, metadata={"hf_lines": "LiNeS"}) for f in folders]
    found: list[dict[str, tuple[float, float]]] = [{} for _ in outputs]

    def read(name: str) -> Inputs:
        base, models = inputs.read(name)
        gram = task_vector_gram(base, models) if norms and base.is_floating_point() else None
        return base, models, gram

    def compute(k: int, name: str, data: Inputs) -> torch.Tensor:
        base, models, gram = data
        out, scale = outputs[k], scales[k][name]
        if gram is not None:
            w = torch.tensor(out.weights, dtype=torch.float64)
            before = math.sqrt(max(float(w @ gram @ w), 0.0))
            found[k][name] = (before, abs(scale) * before)
        return soup_tensor(base, models, out.weights, scale, infos[name].dtype)

    workers = workers or default_workers()
    try:
        with intra_op_threads(per_worker(workers)):
            stream_many(
                writers[0].order, read, compute, [w.write for w in writers],
                sizes={n: i.nbytes for n, i in infos.items()},
                desc=f"rewarded soup x{len(outputs)}", workers=workers, progress=progress,
            )
        for w in writers:
            w.close()
    except BaseException:
        for w in writers:
            w.abort()
        raise
    return found
