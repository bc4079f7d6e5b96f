"""The fused CPU kernels and the torch path against plain float64 references, and against each other.

Tolerances: outputs are compared to the float64 result rounded once to the stored dtype
and may differ from it by at most 1 ulp (a float32 computation can round the other way
at a tie-near point); kernel outputs must equal the torch path bit for bit (same float32
operations in the same order, see also tests/test_one_arithmetic.py); norms agree with
float64 norms to 1e-6 relative. Without the compiled kernels (or with HF_LINES_NATIVE=0)
the torch path's tests still run; only those that call a kernel skip.
"""
from __future__ import annotations

import math

import pytest
import torch

from hf_lines.core import kernels
from hf_lines.pipeline.executor import check_finite
from hf_lines.errors import NonFiniteError
from hf_lines.core.methods.arithmetic import weighted_sum_edit
from hf_lines.core.methods.kth_magnitude import KthMagnitude, magnitude_threshold
from hf_lines.core.methods.ties_math import ties_task_vector
from hf_lines.core.methods.ties_statistics import tensor_thresholds

needs_kernels = pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built (or HF_LINES_NATIVE=0)")
IMPLS = [pytest.param("kernel", marks=needs_kernels), "torch"]

DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def inputs(dtype, n=10_007, tasks=3, seed=0, noise=1e-2):
    g = torch.Generator().manual_seed(seed)
    base32 = torch.randn(n, generator=g) * 0.02
    base = base32.to(dtype)
    models = [(base32 + noise * 0.02 * torch.randn(n, generator=g)).to(dtype) for _ in range(tasks)]
    return base, models


def ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance in units in the last place of the stored dtype (same-sign values)."""
    int_dtype = {2: torch.int16, 4: torch.int32}[a.element_size()]
    return (a.view(int_dtype).to(torch.int64) - b.view(int_dtype).to(torch.int64)).abs()


def all_finite_patterns(dtype: torch.dtype) -> torch.Tensor:
    values = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)
    return values[torch.isfinite(values)]


def edit(impl, base, models, weights, scale):
    """The edit by the kernel or by the torch path (``methods.arithmetic``), and the kernel's stats (None for torch)."""
    if impl == "kernel":
        fused = kernels.weighted_sum_edit(base, models, weights, scale)
        assert fused is not None
        return fused
    return weighted_sum_edit(base, models, weights, scale), None


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [0.3, 0.5, 3.0, 1e4])
def test_loads_and_rounding_match_torch_on_every_pattern(impl, dtype, scale):
    # base 0: out = round(s * ft) for s < 0.5 and round(ft - ft * (1 - s)) above (torch's own
    # conversions); any wrong load or rounding shows up here, on every finite bit pattern
    # (subnormals, overflow to inf, ties to even included)
    ft = all_finite_patterns(dtype)
    out, _ = edit(impl, torch.zeros_like(ft), [ft], [1.0], scale)
    f, s = ft.float(), torch.tensor(scale, dtype=torch.float32)
    expected = (f * s if scale < 0.5 else f - f * (1 - s)).to(dtype)
    assert torch.equal(out.float(), expected.float())  # by value: 0 + lambda * (-0.0) is +0.0


def assert_close_to_reference(out, expected, scale_of_terms):
    """<= 1 ulp of the stored dtype for half precision; float32 within 4 eps of the terms' magnitude."""
    if out.dtype == torch.float32:
        assert ((out.double() - expected.double()).abs() <= 4 * 2**-24 * scale_of_terms).all()
    else:
        assert ulps(out, expected.to(out.dtype)).max() <= 1


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tasks", [1, 4])
@pytest.mark.parametrize("scale", [0.3, 0.7, -0.3, 2.5])
def test_weighted_sum_edit_matches_float64_reference(impl, dtype, tasks, scale):
    base, models = inputs(dtype, tasks=tasks)
    weights = [1.0, 0.5, -0.3, 1.25][:tasks]
    out, stats = edit(impl, base, models, weights, scale)
    b64 = base.double()
    tau = sum(w * (m.double() - b64) for w, m in zip(weights, models))
    expected = b64 + scale * tau
    terms = b64.abs() + abs(scale) * sum(abs(w) * (m.double() - b64).abs() for w, m in zip(weights, models))
    assert_close_to_reference(out, expected, terms)
    if stats is None:
        return
    before, after = stats.norms
    assert before == pytest.approx(float(tau.norm()), rel=1e-6)
    assert after == pytest.approx(float((out.double() - b64).norm()), rel=1e-6)
    assert stats.finite


@needs_kernels
def test_weighted_sum_edit_writes_into_out_and_refuses_mixed_dtypes():
    base, models = inputs(torch.bfloat16, tasks=2)
    out = torch.empty_like(base)
    result, _ = kernels.weighted_sum_edit(base, models, [1.0, 1.0], 0.5, out=out)
    assert result.data_ptr() == out.data_ptr()
    assert kernels.weighted_sum_edit(base, [models[0].float(), models[1]], [1.0, 1.0], 0.5) is None
    assert kernels.weighted_sum_edit(base, models, [1.0, 1.0], 0.5, out=torch.empty(base.numel(), dtype=torch.float32)) is None
    strided = torch.stack([base, base], 1)[:, 0]
    assert kernels.weighted_sum_edit(strided, [m for m in models], [1.0, 1.0], 0.5) is None


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_reported(dtype, bad):
    base, models = inputs(dtype, tasks=2)
    models[1][1234] = bad
    _, stats = kernels.weighted_sum_edit(base, models, [1.0, 1.0], 0.5)
    assert not stats.finite
    _, _, finite = kernels.ties_histograms(base, models, [1.0, 1.0], 16)
    assert not finite
    _, stats = kernels.ties_edit(base, models, [1.0, 1.0], [0.0, 0.0], 0.5)
    assert not stats.finite


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("aggregate", ["mean", "sum"])
def test_ties_edit_equals_the_torch_path(dtype, aggregate):
    base, models = inputs(dtype, n=70_001, tasks=4)
    weights = [1.0, 0.8, 1.2, 0.5]
    thresholds = tensor_thresholds("w", base, models, weights, 0.3)
    scale = 0.6
    out, stats = kernels.ties_edit(base, models, weights, thresholds, scale, aggregate)
    tau = ties_task_vector("w", base, models, weights, thresholds, aggregate)
    expected = (base.float() + scale * tau).to(dtype)
    assert torch.equal(out, expected)
    assert stats.norms[0] == pytest.approx(float(tau.double().norm()), rel=1e-6)


@needs_kernels
@pytest.mark.parametrize("negative_total", [False, True])
def test_ties_cancelled_entries_follow_the_sign_total(negative_total):
    # entries 0..3: values that cancel exactly (+x and -x); the rest sets the tensor's sign total
    n = 64
    base = torch.zeros(n, dtype=torch.float32)
    a = torch.full((n,), -0.5 if negative_total else 0.5)
    b = a.clone()
    a[:4], b[:4] = 0.25, -0.25
    out, stats = kernels.ties_edit(base, [a, b], [1.0, 1.0], [0.0, 0.0], 1.0)
    tau = ties_task_vector("w", base, [a, b], [1.0, 1.0], [0.0, 0.0])
    assert torch.equal(out, tau)
    assert out[0].item() == (-0.25 if negative_total else 0.25)
    assert stats.norms[0] == pytest.approx(float(tau.norm()), rel=1e-6)


@needs_kernels
@pytest.mark.parametrize("shift", [0.0, 0.3, -0.3])
def test_ties_many_cancelled_entries_stay_on_the_kernel(shift):
    # bfloat16 task vectors are a few ulps of the weights, so kept values cancel exactly at
    # hundreds of thousands of entries of a large tensor; the kernel must settle them all
    g = torch.Generator().manual_seed(1)
    n = 400_000
    base = (torch.randn(n, generator=g) * 0.02).to(torch.bfloat16)
    step = 2.0**-12
    models = [(base.float() + step * (torch.randint(-2, 3, (n,), generator=g).float() + shift)).to(torch.bfloat16)
              for _ in range(4)]
    weights = [1.0] * 4
    thresholds = tensor_thresholds("w", base, models, weights, 0.2)
    fused = kernels.ties_edit(base, models, weights, thresholds, 0.6)
    assert fused is not None
    tau = ties_task_vector("w", base, models, weights, thresholds)
    assert torch.equal(fused[0], (base.float() + 0.6 * tau).to(torch.bfloat16))
    assert fused[1].norms[0] == pytest.approx(float(tau.double().norm()), rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_histogram_thresholds_equal_kthvalue(dtype):
    base, models = inputs(dtype, n=50_000, tasks=3)
    weights = [1.0, 0.5, 2.0]
    for density in (0.05, 0.2, 0.9):
        fused = tensor_thresholds("w", base, models, weights, density)
        for t, (m, w) in enumerate(zip(models, weights)):
            tau = (m.float() - base.float()) * w
            assert fused[t] == magnitude_threshold(tau, density)


@needs_kernels
def test_histograms_equal_torch_bincount():
    base, models = inputs(torch.float32, n=30_000, tasks=2)
    counts, inexact, finite = kernels.ties_histograms(base, models, [1.0, 1.0], 16)
    assert finite
    for t, m in enumerate(models):
        ref = KthMagnitude(0.2)
        ref.add(m.float() - base.float())
        assert torch.equal(counts[t], ref.counts)
        assert torch.equal(inexact[t], ref.inexact)


def test_check_finite_names_the_checkpoint():
    class Named:
        label = "ft-7"

    with pytest.raises(NonFiniteError, match="ft-7"):
        check_finite("w", [Named()], [torch.tensor([1.0, math.nan])])


@needs_kernels
@pytest.mark.parametrize("method, options", [("task_arithmetic", {}), ("ties", {"density": 0.3}),
                                             ("ties", {"density": 0.3, "trim": "tensor"})])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_merger_outputs_and_norms_agree_with_and_without_kernels(family_models, monkeypatch, method, options, dtype):
    from hf_lines import LinesMerger

    base, fts = family_models("llama", n_models=3, dtype=dtype)

    def run():
        # weights other than 1: a torch path that fused w * tau into the sum would round differently
        m = LinesMerger.from_pretrained(base, fts, alpha=0.4, beta=0.5, method=method, weights=[0.9, 0.6, 1.3], **options)
        m.compute_statistics()  # the statistics pass for global TIES
        scales = m.scales()
        norms: dict = {}
        return {n: m.tensor(n, scales[n], norms) for n in m.base.checkpoint.names()}, norms

    fused, fused_norms = run()
    monkeypatch.setattr(kernels, "_LIB", None)
    plain, plain_norms = run()
    for name, t in plain.items():
        # the same bytes: the kernels and the torch path compute one arithmetic
        assert t.dtype == fused[name].dtype and torch.equal(fused[name].reshape(-1).view(torch.uint8),
                                                            t.reshape(-1).view(torch.uint8)), name
        # the torch path takes the norm in the stored dtype (bf16 holds 3 digits) and derives ||tau||
        # from the rounded output (||out - base|| / lambda); the kernels sum float32 squares in float64
        rel = 1e-2 if dtype == torch.bfloat16 else 1e-5
        assert fused_norms[name][0] == pytest.approx(plain_norms[name][0], rel=rel, abs=1e-9), name
        assert fused_norms[name][1] == pytest.approx(plain_norms[name][1], rel=rel, abs=1e-9), name
