"""Fused CPU kernels (``_native.c``) behind plain tensor functions, with ``None`` meaning "not here".

One pass over the inputs in their stored dtype does the edit, the norms the card reports
and the finiteness check, where the torch reference (``hf_lines.core.methods``) takes three to
five passes and float32 round trips. The kernels cover contiguous CPU tensors of float32,
bfloat16 or float16 (one dtype for every input and the output); each function returns
``None`` for anything else, and the caller takes the torch path. Both compute the same
float32 operations in the same order, so where a kernel applies the torch path gives the
same bytes (tests/test_one_arithmetic.py). ``HF_LINES_NATIVE=0`` turns them off (to
compare, or if the extension misbehaves on a new platform).

ctypes drops the GIL for each call, so the engine's worker threads run kernels in
parallel while the main thread writes.
"""
from __future__ import annotations

import ctypes
import math
import os
import threading
from dataclasses import dataclass
from typing import Sequence

import torch

from hf_lines.core.scratch import scratch_like

_DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
MAX_TASKS = 64  # _native.c's MAX_TASKS

_p = ctypes.c_void_p
_i64 = ctypes.c_int64
_f32 = ctypes.c_float
_int = ctypes.c_int
_SIGNATURES = {
    "hfl_dtypes": (_int, []),
    "hfl_lerp": (_int, [_int, _p, _p, _p, _i64, _f32, _p]),
    "hfl_wsum": (_int, [_int, _p, _p, _p, _int, _p, _i64, _f32, _p]),
    "hfl_ties_hist": (_int, [_int, _p, _p, _p, _int, _i64, _int, _p, _p, _p, _p]),
    "hfl_ties_hist_low": (_int, [_int, _p, _p, _f32, _i64, _int, _i64, _p]),
    "hfl_ties_merge": (_i64, [_int, _p, _p, _p, _int, _p, _i64, _f32, _int, _p, _p, _p, _p, _p, _p]),
    "hfl_ties_settle": (_int, [_int, _p, _p, _i64, _f32, _p, _p, _p]),
}


def _load() -> ctypes.CDLL | None:
    if os.environ.get("HF_LINES_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        from hf_lines.core.kernels import _native
    except ImportError:  # built without a C compiler: the torch path does everything
        return None
    lib = ctypes.CDLL(_native.__file__)
    for fname, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, fname)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


_LIB = _load()
_SUPPORTED = {d for d, code in _DTYPES.items() if _LIB is not None and _LIB.hfl_dtypes() >> code & 1}


def available() -> bool:
    """True when the compiled kernels are loaded (and not turned off by ``HF_LINES_NATIVE=0``)."""
    return _LIB is not None


@dataclass
class KernelStats:
    """What a kernel measured on the way: squared norms and whether every input value was finite."""

    tau_sq: float = 0.0  # ||tau_MTL||^2 (before LiNeS scaling)
    out_sq: float = 0.0  # ||out - base||^2, from the rounded output
    probe: float = 0.0  # NaN when an input value is NaN or infinite

    @property
    def finite(self) -> bool:
        return not math.isnan(self.probe)

    @property
    def norms(self) -> tuple[float, float]:
        """(||tau_MTL||, ||out - base||), as the model card reports them."""
        return math.sqrt(self.tau_sq), math.sqrt(self.out_sq)


def _usable(tensors: Sequence[torch.Tensor]) -> int | None:
    """The dtype code when every tensor is a contiguous, aligned CPU tensor of one supported dtype."""
    dtype = tensors[0].dtype
    if dtype not in _SUPPORTED:
        return None
    for t in tensors:
        if t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous() or t.shape != tensors[0].shape:
            return None
        # C reads float* / uint16_t* that must be aligned (UB otherwise); the reader aligns
        # what it maps, this catches any other source of a misaligned view
        if t.data_ptr() % t.element_size():
            return None
    return _DTYPES[dtype]


def _ptrs(tensors: Sequence[torch.Tensor]) -> ctypes.Array:
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


def _floats(values: Sequence[float]) -> ctypes.Array:
    return (ctypes.c_float * len(values))(*[float(v) for v in values])


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise RuntimeError(f"native kernel {what} failed with code {rc}")


def _output(base: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor | None:
    if out is None:
        return torch.empty_like(base)
    if out.dtype != base.dtype or out.shape != base.shape or not out.is_contiguous() or out.device.type != "cpu":
        return None
    return out


def weighted_sum_edit(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    weights: Sequence[float],
    scale: float,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, KernelStats] | None:
    """base + scale * sum_t w_t (m_t - base) in one pass, or None where the kernels do not apply.

    The bytes of ``methods.arithmetic.weighted_sum_edit`` (same float32 operations, same
    order, no fused multiply-add). One model, s = float32(scale * w): ``base + s * tau``
    for s < 0.5, ``ft - tau * (1 - s)`` otherwise (s = 1 gives ft exactly; s = 0 and 1
    copy the stored bits). Several: acc = 0; acc = acc + w_t * (m_t - base) in task order;
    ``base + s * acc``.
    """
    if _LIB is None or not models or len(models) > MAX_TASKS:
        return None
    code = _usable([base, *models])
    target = _output(base, out) if code is not None else None
    if target is None:
        return None
    st = (ctypes.c_double * 3)()
    if len(models) == 1:
        _check(_LIB.hfl_lerp(code, base.data_ptr(), models[0].data_ptr(), target.data_ptr(), base.numel(),
                             float(scale) * float(weights[0]), st), "lerp")
        tau_sq = st[0] * float(weights[0]) ** 2
    else:
        _check(_LIB.hfl_wsum(code, base.data_ptr(), _ptrs(models), _floats(weights), len(models),
                             target.data_ptr(), base.numel(), float(scale), st), "wsum")
        tau_sq = st[0]
    return target, KernelStats(tau_sq, st[1], st[2])


_scratch = threading.local()


def _sub_histograms(shift: int, tasks: int) -> torch.Tensor:
    """This thread's zeroed uint32 scratch for ``hfl_ties_hist`` (the kernel leaves it zeroed)."""
    size = tasks * 4 << (32 - shift)
    sub = getattr(_scratch, "sub", None)
    if sub is None or sub.numel() < size or getattr(_scratch, "shift", None) != shift:
        sub = _scratch.sub = torch.zeros(size, dtype=torch.int32)
        _scratch.shift = shift
    return sub


def ties_histograms(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    weights: Sequence[float],
    shift: int,
    counts: torch.Tensor | None = None,
    inexact: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, bool] | None:
    """(counts, inexact, finite): per-task radix histograms of |w_t tau_t| as float32 bits (see ``kth_magnitude``).

    Both are (N, 2**(31 - shift)) int64; given ``counts`` and ``inexact`` are added into (a
    thread's running totals), else fresh ones are returned. None where the kernels do not apply.
    """
    if _LIB is None or not models or len(models) > MAX_TASKS:
        return None
    code = _usable([base, *models])
    if code is None:
        return None
    bins = 1 << (31 - shift)
    if counts is None or inexact is None:
        counts = torch.zeros((len(models), bins), dtype=torch.int64)
        inexact = torch.zeros_like(counts)
    st = (ctypes.c_double * 3)()
    _check(_LIB.hfl_ties_hist(code, base.data_ptr(), _ptrs(models), _floats(weights), len(models), base.numel(),
                              shift, counts.data_ptr(), inexact.data_ptr(),
                              _sub_histograms(shift, len(models)).data_ptr(), st), "ties_hist")
    return counts, inexact, not math.isnan(st[2])


def ties_low_histogram(
    base: torch.Tensor, model: torch.Tensor, weight: float, shift: int, bin: int
) -> torch.Tensor | None:
    """The low ``shift`` bits of the magnitudes in radix bin ``bin`` of one task, as a 2**shift histogram."""
    if _LIB is None:
        return None
    code = _usable([base, model])
    if code is None:
        return None
    low = torch.zeros(1 << shift, dtype=torch.int64)
    _check(_LIB.hfl_ties_hist_low(code, base.data_ptr(), model.data_ptr(), float(weight), base.numel(), shift, bin,
                                  low.data_ptr()), "ties_hist_low")
    return low


def _ties_merge(code: int, base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float],
                thresholds: Sequence[float], scale: float, mean: bool, target: torch.Tensor):
    """One ``hfl_ties_merge`` call: (flagged, stats, flagged entries' positive-merge stats, sign total, amb, negv)."""
    n = base.numel()
    st, pos, total = (ctypes.c_double * 3)(), (ctypes.c_double * 2)(), ctypes.c_int64(0)
    amb = torch.zeros((n + 7) // 8 + 1, dtype=torch.uint8)
    negv = torch.empty(n + 512, dtype=torch.float32)  # pages are touched only as entries are flagged
    flagged = _LIB.hfl_ties_merge(code, base.data_ptr(), _ptrs(models), _floats(weights), len(models),
                                  _floats(thresholds), n, float(scale), int(mean), target.data_ptr(),
                                  st, ctypes.byref(total), amb.data_ptr(), negv.data_ptr(), pos)
    _check(flagged, "ties_merge")
    return flagged, st, pos, total.value, amb, negv


def ties_edit(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    weights: Sequence[float],
    thresholds: Sequence[float],
    scale: float,
    aggregate: str = "mean",
    out: torch.Tensor | None = None,
    sign_total: int | None = None,
) -> tuple[torch.Tensor, KernelStats] | None:
    """base + scale * TIES(tau_1..tau_N) in one pass (``methods.ties_math.ties_task_vector``'s rules), or None.

    Entries whose trimmed values cancel exactly are settled by ``sign_total`` (the whole
    model's total of elected signs), or by the tensor's own total when it is None, as the
    torch path does.
    """
    if _LIB is None or not models or len(models) > MAX_TASKS:
        return None
    code = _usable([base, *models])
    target = _output(base, out) if code is not None else None
    if target is None:
        return None
    flagged, st, pos, total, amb, negv = _ties_merge(code, base, models, weights, thresholds, scale,
                                                     aggregate == "mean", target)
    decider = sign_total if sign_total is not None else total  # the model's total, else the tensor's
    if flagged and decider <= 0:  # entries whose kept values cancel exactly: the negative ones
        _check(_LIB.hfl_ties_settle(code, base.data_ptr(), target.data_ptr(), base.numel(), float(scale),
                                    amb.data_ptr(), negv.data_ptr(), st), "ties_settle")
    elif flagged:
        st[0] += pos[0]
        st[1] += pos[1]
    return target, KernelStats(st[0], st[1], st[2])


def ties_sign_total(
    base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], thresholds: Sequence[float]
) -> int | None:
    """The total of one tensor's TIES elected signs (``methods.ties_math.ties_sign_total``), or None.

    The merge kernel counts them on its way; its output goes to a scratch buffer here.
    """
    if _LIB is None or not models or len(models) > MAX_TASKS:
        return None
    code = _usable([base, *models])
    if code is None:
        return None
    # the merge goes to this thread's recycled scratch: fresh pages would cost as much as the count
    return int(_ties_merge(code, base, models, weights, thresholds, 1.0, True, scratch_like(base))[3])
