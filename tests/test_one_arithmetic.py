"""One arithmetic: the fused kernels and the torch path give the same bytes.

Each operation has one formula (``hf_lines.core.methods.arithmetic``'s docstring), computed by
both in the same float32 operations in the same order with no fused multiply-add. So for
float32, bfloat16 and float16 inputs, any shape and any number of tasks, the count of values
whose bits differ must be 0. Kernel-vs-torch tests skip without the compiled kernels; the
exact endpoints run on whichever path is there.
"""
from __future__ import annotations

import random

import pytest
import torch

from hf_lines import LinesMerger
from hf_lines.core import kernels
from hf_lines.core.methods.arithmetic import f32, lines_edit, weighted_sum_edit
from hf_lines.core.methods.ties_math import ties_task_vector
from hf_lines.core.methods.ties_statistics import tensor_thresholds
from reference import load_folder

needs_kernels = pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built (or HF_LINES_NATIVE=0)")

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# 0 and 1: the endpoints; 0.5 / 0.49999: either side of the branch; -0.3 and 2.5: extrapolation
EDGE_SCALES = [0.0, 1.0, 0.5, 0.49999, 0.7, -0.3, 2.5]
IMPLS = [pytest.param("kernel", marks=needs_kernels), "torch"]


def differing(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many values differ in their bits (+0.0 and -0.0 differ)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    ints = {2: torch.int16, 4: torch.int32}[a.element_size()]
    return int((a.contiguous().view(ints) != b.contiguous().view(ints)).sum())


def random_shape(rng: random.Random) -> tuple[int, ...]:
    dims = rng.choice([1, 2, 3])
    return tuple(rng.choice([1, 3, 7, 17, 31, 64, 97, 130]) for _ in range(dims))


def random_inputs(dtype, shape, tasks, seed):
    """Base and fine-tuned tensors with task vectors of 1e-4 to 1e-1 of the weights, some entries
    unchanged, and signed zeros in both (their bits must survive the endpoints)."""
    g = torch.Generator().manual_seed(seed)
    base32 = torch.randn(shape, generator=g) * 0.02
    base32.view(-1)[::11] = -0.0
    base = base32.to(dtype)
    models = []
    for t in range(tasks):
        m = base32 + 0.02 * 10 ** -(1 + t % 4) * torch.randn(shape, generator=g)
        m.view(-1)[5::13] = base32.view(-1)[5::13]
        m.view(-1)[7::17] = -0.0
        models.append(m.to(dtype))
    return base, models


def kernel_edit(base, models, weights, scale):
    fused = kernels.weighted_sum_edit(base, models, weights, scale)
    assert fused is not None  # contiguous CPU tensors of one supported dtype: the kernel must apply
    return fused[0]


# ------------------------------------------------------------------------------------------ edits
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", EDGE_SCALES + [0.123, 1.0000001, 100.0])
@pytest.mark.parametrize("weight", [1.0, 0.37])
def test_edit_kernel_equals_torch_path(dtype, scale, weight):
    base, (m,) = random_inputs(dtype, (257, 129), 1, seed=int(scale * 1000) + 7)
    torch_path = weighted_sum_edit(base, [m], [weight], scale)
    assert differing(kernel_edit(base, [m], [weight], scale), torch_path) == 0


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tasks", range(1, 41))
def test_weighted_sum_kernel_equals_torch_path(dtype, tasks):
    rng = random.Random(tasks * 31 + DTYPES.index(dtype))
    shape = random_shape(rng) if tasks % 10 else (70_001,)  # one size past the torch path's block
    base, models = random_inputs(dtype, shape, tasks, seed=tasks)
    weights = [rng.uniform(-1.5, 1.5) for _ in range(tasks)]
    for scale in EDGE_SCALES + [rng.uniform(-3, 3)]:
        fused = kernel_edit(base, models, weights, scale)
        assert differing(fused, weighted_sum_edit(base, models, weights, scale)) == 0, scale


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_one_gives_the_finetuned_bytes_and_zero_the_base(impl, dtype):
    base, (m,) = random_inputs(dtype, (4096,), 1, seed=3)
    # base + 1 * (m - base) is not m: here it rounds to 0 in float32 for the first entry
    base[0], m[0] = 1.0, 2.0**-20 if dtype != torch.float16 else 2.0**-12
    base[1], m[1] = 0.5, -0.0  # +0.0 from the formula
    edit = (lambda b, ms, ws, s: kernel_edit(b, ms, ws, s)) if impl == "kernel" else weighted_sum_edit
    assert differing(edit(base, [m], [1.0], 1.0), m) == 0
    assert differing(edit(base, [m], [2.0], 0.5), m) == 0  # lambda = scale * w
    assert differing(edit(base, [m], [1.0], 0.0), base) == 0
    assert differing(edit(base, [m], [0.0], 0.7), base) == 0


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_alpha_one_beta_zero_is_the_finetuned_model(family_models, monkeypatch, impl, dtype):
    base, (ft,) = family_models("llama", dtype=dtype)
    if impl == "torch":
        monkeypatch.setattr(kernels, "_LIB", None)
    for alpha, expected in ((1.0, load_folder(ft)), (0.0, load_folder(base))):
        got = LinesMerger.from_pretrained(base, [ft], alpha=alpha, beta=0.0).state_dict()
        assert {n: differing(t, expected[n]) for n, t in got.items() if differing(t, expected[n])} == {}


def test_scalars_round_as_ctypes_hands_them_to_c():
    assert f32(0.1) == float(torch.tensor(0.1, dtype=torch.float32))
    assert f32(1e39) == float("inf") and f32(-1e39) == float("-inf")
    assert f32(0.49999999) == 0.5  # the branch is taken on the float32 lambda, on both paths


@pytest.mark.parametrize("tasks", [1, 3])
def test_torch_path_bytes_do_not_depend_on_the_block(tasks):
    # blocks only partition elementwise work (accelerators use larger ones)
    base, models = random_inputs(torch.bfloat16, (70_001,), tasks, seed=9)
    weights = [0.7, -0.4, 1.1][:tasks]
    expected = weighted_sum_edit(base, models, weights, 0.8)
    for block in (1000, 1 << 24):
        assert differing(weighted_sum_edit(base, models, weights, 0.8, chunk=block), expected) == 0


def test_torch_path_edit_is_the_documented_formula():
    # the two branches, spelled out in float32 with a rounding after every operation
    base, (m,) = random_inputs(torch.float32, (1000,), 1, seed=5)
    for s in (0.3, 0.7, -0.3, 2.5):
        s32 = torch.tensor(s, dtype=torch.float32)
        tau = m - base
        ref = base + s32 * tau if s < 0.5 else m - tau * (torch.tensor(1.0) - s32)
        assert differing(lines_edit(base, m, s), ref) == 0, s


# ------------------------------------------------------------------------------------------ TIES
def ties_torch_path(base, models, weights, thresholds, scale, aggregate):
    """MergeMethod.merge over ties_task_vector: tau * s + base, rounded once."""
    tau = ties_task_vector("w", base, models, weights, thresholds, aggregate)
    return tau.mul_(float(scale)).add_(base).to(base.dtype)


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tasks", [1, 2, 3, 5, 16, 32, 33, 40])
@pytest.mark.parametrize("aggregate", ["mean", "sum"])
def test_ties_kernel_equals_torch_path(dtype, tasks, aggregate):
    rng = random.Random(tasks)
    base, models = random_inputs(dtype, (rng.choice([3001, 20_011]),), tasks, seed=100 + tasks)
    weights = [rng.uniform(0.2, 1.5) for _ in range(tasks)]
    for density, scale in ((0.3, 0.7), (1.0, 0.49999), (0.5, 2.5)):
        thresholds = tensor_thresholds("w", base, models, weights, density)
        fused = kernels.ties_edit(base, models, weights, thresholds, scale, aggregate)
        assert fused is not None
        expected = ties_torch_path(base, models, weights, thresholds, scale, aggregate)
        assert differing(fused[0], expected) == 0, (density, scale)
