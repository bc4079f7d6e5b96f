"""A run as data, and the one place an output tensor is computed.

Every command compiles to a ``Plan``: the inputs (``TensorSource``s: model folders, LoRA
adapters seen as checkpoints, Hub snapshots), and one or several outputs, each a method
configuration with its weights, its per-tensor lambda, its dtype and the whole-model
statistics its method declared. ``LinesMerger`` is a plan of one output; a rewarded soup
is one task-arithmetic output per weight vector, all computed from one read pass
(``execute``); a sweep's candidate is a plan's output computed into a loaded model. So a
soup output and the merge its recipe describes are the same bytes by construction: both
are ``output_tensor`` of the same output.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from hf_lines.core.methods import MergeMethod
from hf_lines.core.norms import tensor_norms
from hf_lines.io.buffers import OutputBuffers
from hf_lines.io.checkpoint import TensorInfo, TensorSource
from hf_lines.io.file_sink import WriteMode
from hf_lines.io.writer import ShardedWriter
from hf_lines.pipeline.device import runs_on_device, thread_transfer
from hf_lines.pipeline.executor import check_finite, compute_device, default_prefetch, default_workers, read_inputs
from hf_lines.pipeline.guards import check_output_finite
from hf_lines.pipeline.multi_stream import stream_many

Norms = dict[str, tuple[float, float]]  # tensor -> (||tau_MTL||, ||out - base||)


@dataclass(frozen=True)
class PlanOutput:
    """One output: theta_0 + lambda(tensor) * tau_MTL, tau_MTL from ``method`` over the inputs with ``weights``."""

    method: MergeMethod
    weights: tuple[float, ...]
    scales: Mapping[str, float] = field(default_factory=dict)  # tensor -> lambda
    dtype: torch.dtype | None = None  # None: every tensor keeps the base's dtype
    statistics: Any = None  # the run's whole-model numbers for ``method`` (``MergeMethod.new_statistics``)

    def info(self, base: TensorInfo) -> TensorInfo:
        """The stored tensor: floating tensors take the output dtype, others stay as they are."""
        if self.dtype is None or not base.dtype.is_floating_point:
            return base
        return TensorInfo(base.shape, self.dtype)

    def working_bytes(self, info: TensorInfo) -> int:
        """Memory one tensor of this output holds in flight besides the inputs: the output and the method's temporaries."""
        return self.info(info).nbytes + self.method.working_bytes(info.numel)


@dataclass(frozen=True)
class Plan:
    """The inputs of a run and its outputs."""

    base: TensorSource
    models: tuple[TensorSource, ...]
    outputs: tuple[PlanOutput, ...]

    @property
    def sources(self) -> list[TensorSource]:
        return [self.base, *self.models]

    def names(self) -> list[str]:
        return self.base.names()

    def read(self, name: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Every input's tensor ``name``; finiteness is checked by ``output_tensor`` (for free on the fused path)."""
        return read_inputs(name, self.base, self.models, check=False)

    def tensor(self, k: int, name: str, *, norms: Norms | None = None, device: torch.device | None = None,
               scale: float | None = None) -> torch.Tensor:
        """Output ``k``'s tensor ``name`` on its own (reads only that tensor of each input); ``scale`` overrides lambda."""
        base, models = self.read(name)
        scale = self.outputs[k].scales[name] if scale is None else scale
        return output_tensor(self.outputs[k], name, self.sources, base, models, scale, norms=norms, device=device)


def output_tensor(
    output: PlanOutput,
    name: str,
    sources: Sequence[TensorSource],
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    scale: float,
    *,
    norms: Norms | None = None,
    buffers: OutputBuffers | None = None,
    key: str | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """The output tensor ``name`` from its inputs, on the CPU, in the output's dtype.

    Non-finite inputs are refused naming their checkpoint (``sources``), an overflowed output
    naming lambda; its task-vector norms go into ``norms``. With ``buffers`` the result lives
    in a recycled buffer lent under ``key`` (default: ``name``), which the caller gives back
    once it is written. ``device`` is where the arithmetic runs (default: the CPU).
    """
    key = key or name
    method, weights, stats = output.method, output.weights, output.statistics
    on_cpu = device is None or device.type == "cpu"
    if on_cpu and base.is_floating_point() and output.dtype in (None, base.dtype):
        # one fused pass: the edit, its norms and the finiteness check (hf_lines.core.kernels)
        out = buffers.take(key, base.shape, base.dtype) if buffers is not None else None
        fused = method.fused_merge(name, base, models, weights, scale, out=out, stats=stats)
        if fused is not None:
            out, kernel = fused
            if not kernel.finite:
                check_finite(name, sources, [base, *models])  # raises, naming the checkpoint
            check_output_finite(name, scale, kernel.norms[1], out)
            if norms is not None:
                norms[name] = kernel.norms
            return out
        if buffers is not None:
            buffers.give_back(key)
    if not on_cpu and not runs_on_device(method):
        warnings.warn(f"merge method {method.name!r} with dare computes on the CPU: DARE's masks are drawn "
                      "there (seeded, the same on every device)", RuntimeWarning, stacklevel=3)
    if on_cpu or not base.is_floating_point() or not runs_on_device(method):
        check_finite(name, sources, [base, *models])
        return _merge(output, name, base, models, scale, norms, buffers, key)
    # this worker's CUDA stream and pinned staging: reading overlaps the copies (hf_lines.pipeline.device)
    transfer = thread_transfer(device)  # type: ignore[arg-type]
    with transfer.computing():
        base, models = transfer.upload(base), [transfer.upload(m) for m in models]
        check_finite(name, sources, [base, *models])
        out = _merge(output, name, base, models, scale, norms, None, key)
    return transfer.download(out, buffers.take(key, out.shape, out.dtype) if buffers is not None else None)


def _merge(output: PlanOutput, name: str, base: torch.Tensor, models: Sequence[torch.Tensor], scale: float,
           norms: Norms | None, buffers: OutputBuffers | None, key: str) -> torch.Tensor:
    """``method.merge`` where the inputs lie, then the output dtype, the norms and the overflow check."""
    method, weights, stats, dtype = output.method, output.weights, output.statistics, output.dtype
    if dtype is not None and base.is_floating_point():
        base = base.float()  # compute in float32 and round once, to the output dtype
    out = None
    if buffers is not None and dtype is None and base.is_floating_point():
        out = buffers.take(key, base.shape, base.dtype)
    out = method.merge(name, base, models, weights, scale, out=out, stats=stats)
    if dtype is not None and out.is_floating_point():
        out = out.to(dtype)
    if norms is not None and out.is_floating_point():
        norms[name] = tensor_norms(base, out, scale, lambda: method.task_vector(name, base, models, weights, stats))
        check_output_finite(name, scale, norms[name][1], out)
    return out


def execute(
    plan: Plan,
    folders: Sequence[Path],
    *,
    max_shard_size: int | str,
    write_mode: WriteMode = "auto",
    workers: int | None = None,
    memory_budget: int | None = None,
    device: str | torch.device | None = None,
    norms: bool = True,
    progress: bool = True,
    desc: str = "LiNeS",
) -> list[Norms]:
    """Stream every output of ``plan`` into its folder's safetensors shards, reading each input tensor once.

    Returns, per output, the norms its card reports (empty with ``norms=False``). Memory is
    bounded by ``memory_budget`` bytes of tensors in flight (inputs counted once per name,
    plus each output and the method's temporaries), never by the model or the number of outputs.
    """
    infos = {n: plan.base.info(n) for n in plan.names()}
    writers = [ShardedWriter(folder, {n: o.info(i) for n, i in infos.items()}, max_shard_size,
                             metadata={"hf_lines": "LiNeS"}, write_mode=write_mode)
               for o, folder in zip(plan.outputs, folders)]
    found: list[Norms] = [{} for _ in plan.outputs]
    workers = workers or default_workers()
    prefetch = default_prefetch(workers)
    # one more than can be in flight: take() never waits forever. Writers of one plan share a layout.
    phases = writers[0].phases()
    buffers = OutputBuffers(prefetch + 1, phases={f"{k}:{n}": p for n, p in phases.items()
                                                  for k in range(len(writers))})
    sources, on = plan.sources, compute_device(device)
    inputs_bytes = {n: i.nbytes * len(sources) for n, i in infos.items()}

    def compute(k: int, name: str, inputs: tuple[torch.Tensor, list[torch.Tensor]]) -> torch.Tensor:
        out = plan.outputs[k]
        return output_tensor(out, name, sources, inputs[0], inputs[1], out.scales[name],
                             norms=found[k] if norms else None, buffers=buffers, key=f"{k}:{name}", device=on)

    def writer_of(k: int):
        def write(name: str, tensor: torch.Tensor) -> None:
            writers[k].write(name, tensor)
            buffers.give_back(f"{k}:{name}")
        return write

    try:
        stream_many(
            writers[0].order, plan.read, compute, [writer_of(k) for k in range(len(writers))],
            sizes={n: plan.outputs[0].info(i).nbytes for n, i in infos.items()},
            # a name's inputs are alive while any of its outputs is in flight: counted with the first
            costs=lambda k, n: (inputs_bytes[n] if k == 0 else 0) + plan.outputs[k].working_bytes(infos[n]),
            budget=memory_budget, prefetch=prefetch,
            desc=desc, workers=workers, progress=progress,
        )
        for w in writers:
            w.close()
    except BaseException:
        for w in writers:
            w.abort()
        raise
    return found
