"""Pure tensor functions for task vectors: theta_0 + lambda * g(tau_1..tau_N).

Results are as accurate as float32 arithmetic and stored in the base's dtype. The edits do,
in float32 chunk by chunk, the same operations in the same order as the fused kernels
(``hf_lines.core.kernels``, ``_kernels_impl.h``), so the two give the same bytes for float32,
bfloat16 and float16 inputs and any number of tasks (tests/test_one_arithmetic.py):

- one model (``lines_edit``): tau = m - b, s = float32(lambda);
  ``b + s * tau`` for s < 0.5, ``m - tau * (1 - s)`` otherwise; s = 0 and s = 1 give b and m as stored;
- several (``weighted_sum_edit``): acc = 0; acc = acc + w_t * (m_t - b) in task order; ``b + s * acc``;

each operation rounded in float32, the result rounded once to the stored dtype. Nothing may be
fused: ATen's vectorized CPU kernels compute ``add``/``sub`` with ``alpha != 1``, ``addcmul`` and
``lerp`` with a fused multiply-add (one rounding instead of two), while the C kernels are built
with ``-ffp-contract=off``; so every product here is its own ``mul`` and every sum a plain ``add``.
Scalars are rounded to float32 the way ctypes hands them to C (``f32``).
"""
from __future__ import annotations

import ctypes
from typing import Sequence

import torch

# Elements per float32 chunk when accumulating several deltas: keeps temporaries in cache.
CHUNK = 1 << 16  # measured: 2.4 ns/entry at 64 K entries, 11 ns at 1 M (cache)


def f32(x: float) -> float:
    """``x`` rounded to the nearest float32 (+-inf past its range), exactly as ``ctypes.c_float`` passes it to C."""
    return ctypes.c_float(x).value


def _work_dtype(base: torch.Tensor) -> torch.dtype:
    # float64 checkpoints keep their precision; every other floating dtype computes in float32
    return torch.float64 if base.dtype == torch.float64 else torch.float32


def _scalar(x: float, work: torch.dtype) -> float:
    return f32(x) if work == torch.float32 else float(x)


def _chunk(base: torch.Tensor, chunk: int) -> int:
    # the chunk only partitions elementwise work (the bytes do not depend on it); on an accelerator
    # each op is a kernel launch, so chunks of 16 M entries (64 MB temporaries) keep launches few
    return chunk if base.device.type == "cpu" else max(chunk, 1 << 24)


def _operand(x: torch.Tensor, work: torch.dtype) -> torch.Tensor:
    # a half-precision or float32 operand is promoted exactly by the op itself (no conversion pass)
    return x if torch.promote_types(x.dtype, work) == work else x.to(work)


def lines_edit(
    base: torch.Tensor, finetuned: torch.Tensor, scale: float, out: torch.Tensor | None = None, chunk: int = CHUNK
) -> torch.Tensor:
    """lerp(base, finetuned, s) in base's dtype, s = ``scale`` rounded to float32, into ``out`` when given.

    With tau = finetuned - base: ``base + s * tau`` for s < 0.5, ``finetuned - tau * (1 - s)``
    otherwise, each operation in float32 (``1 - s`` too), rounded once. Anchoring on the
    nearer end keeps s = 1 exact, which ``base + s * tau`` is not; the branch is on the signed
    s, so extrapolating below 0 stays anchored on the base. The fused kernel ``lerp`` does the
    same operations. (``torch.lerp`` branches on |s| and fuses its multiply-add, so it is not
    used.)
    """
    if not base.is_floating_point():
        return base.clone()
    out = torch.empty_like(base) if out is None else out
    work = _work_dtype(base)
    s = _scalar(scale, work)
    if s == 0.0 or s == 1.0:
        # the formula gives these values too, but turns a stored -0.0 into +0.0: copy the bits
        return out.copy_(base if s == 0.0 else finetuned)
    u = _scalar(1.0 - s, work)  # 1 - s is exact in double for any float32 s < 2**53: one rounding, as 1.0f - s in C
    b, m, o = base.reshape(-1), finetuned.reshape(-1), out.view(-1)
    chunk = _chunk(base, chunk)
    for start in range(0, b.numel(), chunk):
        stop = start + chunk
        b32 = b[start:stop].to(work)  # for float32 this is b's own memory: only ever read
        mb = _operand(m[start:stop], work)
        tau = torch.sub(mb, b32)
        o[start:stop] = tau.mul_(s).add_(b32) if s < 0.5 else torch.sub(mb, tau.mul_(u))
    return out


def weighted_sum_edit(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    weights: Sequence[float],
    scale: float,
    chunk: int = CHUNK,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """base + scale * sum_t w_t (m_t - base) in base's dtype, into ``out`` when given.

    One model is ``lines_edit`` with lambda = scale * w_1 (the product in double, then
    rounded to float32). Several: acc = 0, acc = acc + w_t * (m_t - base) in task order,
    then base + s * acc, with w_t and s rounded to float32, every operation in float32 chunk
    by chunk and the result rounded once: the fused kernel ``wsum``'s operations.
    """
    if not base.is_floating_point():
        return base.clone()
    if len(models) == 1:
        return lines_edit(base, models[0], float(scale) * float(weights[0]), out=out, chunk=chunk)
    out = torch.empty_like(base) if out is None else out
    work = _work_dtype(base)
    s, ws = _scalar(scale, work), [_scalar(w, work) for w in weights]
    b, o = base.reshape(-1), out.view(-1)
    flat = [m.reshape(-1) for m in models]
    chunk = _chunk(base, chunk)
    acc_buf = torch.empty(min(chunk, b.numel()), dtype=work, device=base.device)
    d_buf = torch.empty_like(acc_buf)
    for start in range(0, b.numel(), chunk):
        stop = min(start + chunk, b.numel())
        b32 = b[start:stop].to(work)  # for float32 this is b's own memory: only ever read
        acc, d = acc_buf[: stop - start].zero_(), d_buf[: stop - start]
        for w, m in zip(ws, flat):
            torch.sub(_operand(m[start:stop], work), b32, out=d)
            acc.add_(d.mul_(w))  # acc.add_(d, alpha=w) would be one fused multiply-add
        o[start:stop] = acc.mul_(s).add_(b32)
    return out


def task_vector_sum(
    base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float]
) -> torch.Tensor:
    """sum_t w_t (m_t - base) in float32: ``weighted_sum_edit``'s acc (w_t rounded to float32, task order, no FMA)."""
    b32 = base.float()
    acc = torch.zeros_like(b32)
    d = torch.empty_like(b32)
    for w, m in zip(weights, models):
        torch.sub(_operand(m, torch.float32), b32, out=d)
        acc.add_(d.mul_(f32(w)))
    return acc


def is_finite(t: torch.Tensor) -> bool:
    """True when no element is NaN or infinite (a sum carries any NaN/inf, and costs ~1/20 of isfinite)."""
    if not t.is_floating_point() or t.numel() == 0:
        return True
    if bool(torch.isfinite(t.sum())):  # a false alarm on overflow is settled by the exact check below
        return True
    return bool(torch.isfinite(t).all())
