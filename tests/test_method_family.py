"""Task arithmetic, DARE, TIES and Consensus as one family: ``generalized.staged_task_vector`` over ``Stages``.

The staged function is checked against the plain references of tests/merge_reference.py
(written from the papers' code, sums in float64): tolerance TAU_TOL, float32 arithmetic on
task vectors of magnitude ~1e-3 (decisions -- trim, sign, masks -- are made on the same
float32 values, so they agree exactly). Where the values are exact in float32 (the
cancellation tests) the comparison is bytes-exact, as it is against the fast path and the
fused kernels, which do the same float32 operations in the same order.
"""
from __future__ import annotations

import pytest
import torch

import merge_reference as ref
from hf_lines.core import kernels
from hf_lines.core.methods import MergeMethod, get_method
from hf_lines.core.methods.arithmetic import task_vector_sum, weighted_sum_edit
from hf_lines.core.methods.dare import DareOptions
from hf_lines.core.methods.generalized import Stages, staged_task_vector
from hf_lines.core.methods.task_vectors import STACK_CHUNK

TAU_TOL = dict(rtol=1e-5, atol=1e-8)
DARE = {"drop_rate": 0.5, "seed": 7}
SHAPES = {"a": (STACK_CHUNK + 1234,), "b": (37, 53)}  # two slices, and a small matrix
needs_kernels = pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built (or HF_LINES_NATIVE=0)")


def _model(n: int, seed: int, dtype=torch.float32, quantized: bool = False, tilt: float = 0.0):
    """(base, fine-tunes) as name -> tensor dicts; ``quantized``: task vectors on a 2**-12 grid (exact cancellations)."""
    g = torch.Generator().manual_seed(seed)
    work = torch.float64 if dtype == torch.float64 else torch.float32  # float64 values that float32 cannot hold
    base, fts = {}, [{} for _ in range(n)]
    for name, shape in SHAPES.items():
        b = torch.randn(shape, generator=g, dtype=work) * 0.02
        b = (b.mul(4096).round().div(4096) if quantized else b).to(dtype)  # on the grid: exact task vectors
        base[name] = b
        for ft in fts:
            if quantized:
                delta = 2.0**-12 * torch.randint(-2, 3, shape, generator=g).to(work)
                delta.reshape(-1)[:2000] += tilt * 2.0**-12  # tilts the sign total
            else:
                delta = 1e-3 * torch.randn(shape, generator=g, dtype=work)
            ft[name] = (b.to(work) + delta).to(dtype)
    return base, fts


def _staged(base, fts, weights, stages_of) -> dict:
    """name -> flattened staged tau_MTL; ``stages_of(name)`` gives each tensor's Stages."""
    return {name: staged_task_vector(name, b, [f[name] for f in fts], weights, stages_of(name)).reshape(-1)
            for name, b in base.items()}


def _close(got: dict, expected: dict, exact: bool = False) -> None:
    for name, e in expected.items():
        if exact:
            assert torch.equal(got[name], e.float()), name
        else:
            torch.testing.assert_close(got[name].double(), e.double(), **TAU_TOL, msg=name)


def _thresholds(taus: dict, density: float, trim: str) -> dict:
    return {name: tuple(t.reshape(-1).tolist()) for name, t in ref.ties_thresholds(taus, density, trim).items()}


def _model_sign_total(taus: dict, thresholds: dict) -> int:
    """The authors' whole-model total of elected signs (trimmed, summed, signed, over every tensor)."""
    return sum(int(torch.sign((v * (v.abs() >= torch.tensor(thresholds[n]).reshape(-1, 1))).sum(0)).sum())
               for n, v in taus.items())


# ------------------------------------------------------------------ against the papers' references
@pytest.mark.parametrize("case", ["task_arithmetic", "mean", "dare_linear", "weighted"])
def test_sum_stages_match_reference(case):
    base, fts = _model(4, seed=1)
    weights = [0.9, 0.6, 1.3, 0.5] if case == "weighted" else [1.0] * 4
    dare = DARE if case == "dare_linear" else None
    taus = ref.task_vectors(base, fts, weights, dare)
    coefficients = [w / 4 for w in weights] if case == "mean" else weights
    got = _staged(base, fts, coefficients, lambda _: Stages(dare=DareOptions.coerce(dare)))
    expected = ref.task_arithmetic(taus)
    _close(got, {n: v / 4 for n, v in expected.items()} if case == "mean" else expected)


@pytest.mark.parametrize("dare", [None, DARE], ids=["plain", "dare"])
@pytest.mark.parametrize("density", [0.3, 1.0])  # density 1 with DARE is dare_ties
@pytest.mark.parametrize("zero_sign", ["model", "tensor"])
@pytest.mark.parametrize("aggregate", ["mean", "sum"])
@pytest.mark.parametrize("trim", ["global", "tensor"])
def test_ties_stages_match_reference(trim, aggregate, zero_sign, density, dare):
    base, fts = _model(4, seed=2)
    weights = [1.0, 0.8, 1.2, 0.5]
    taus = ref.task_vectors(base, fts, weights, dare)
    thresholds = _thresholds(taus, density, trim)
    total = _model_sign_total(taus, thresholds) if zero_sign == "model" else None
    got = _staged(base, fts, weights, lambda n: Stages(
        dare=DareOptions.coerce(dare), thresholds=None if density == 1.0 else thresholds[n], elect=True,
        sign_total=total, aggregate=aggregate))
    _close(got, ref.ties(taus, density, trim, aggregate, zero_sign))


@pytest.mark.parametrize("lam", [0.4, [0.2, 0.5, 0.3, 0.6]], ids=["lam", "per_task"])
@pytest.mark.parametrize("k", [0, 1, 2])
@pytest.mark.parametrize("merged_by", ["task_arithmetic", "ties", "ties_dare"])
def test_consensus_stages_match_reference(merged_by, k, lam):
    base, fts = _model(4, seed=3)
    dare = DARE if merged_by == "ties_dare" else None
    taus = ref.task_vectors(base, fts, [1.0] * 4, dare)
    lams = tuple(lam) if isinstance(lam, list) else (lam,) * 4
    if merged_by == "task_arithmetic":
        merged = ref.task_arithmetic(taus)
        got = _staged(base, fts, [1.0] * 4, lambda _: Stages(consensus_k=k, consensus_lams=lams))
    else:  # the authors' use_ties: TIES with a sum of the agreeing entries
        thresholds = _thresholds(taus, 0.2, "global")
        total = _model_sign_total(taus, thresholds)
        merged = ref.ties(taus, 0.2, "global", "sum")
        got = _staged(base, fts, [1.0] * 4, lambda n: Stages(
            dare=DareOptions.coerce(dare), thresholds=thresholds[n], elect=True, sign_total=total,
            consensus_k=k, consensus_lams=lams))
    _close(got, ref.consensus(taus, merged, k, lam))


@pytest.mark.parametrize("tilt", [-3.0, 3.0], ids=["negative_total", "positive_total"])
@pytest.mark.parametrize("aggregate", ["mean", "sum"])
@pytest.mark.parametrize("k", [None, 1, 2])
def test_cancelled_entries_follow_the_tensor_total_through_the_mask(k, aggregate, tilt):
    """zero_sign: tensor settles cancelled entries after the last slice; masks must see the settled value."""
    base, fts = _model(3, seed=4, quantized=True, tilt=tilt)
    taus = ref.task_vectors(base, fts, [1.0] * 3)
    thresholds = _thresholds(taus, 0.6, "tensor")
    cancelling = sum(int(((t.sum(0) == 0) & (t != 0).any(0)).sum()) for t in taus.values())
    assert cancelling > 1000
    lams = None if k is None else (0.5, 0.3, 0.4)
    got = _staged(base, fts, [1.0] * 3, lambda n: Stages(
        thresholds=thresholds[n], elect=True, aggregate=aggregate, consensus_k=k, consensus_lams=lams))
    merged = ref.ties(taus, 0.6, "tensor", aggregate, zero_sign="tensor")
    _close(got, merged if k is None else ref.consensus(taus, merged, k, list(lams)), exact=True)


# ------------------------------------------------------------------ each method's stages are its options
def test_each_method_declares_the_stages_its_options_say():
    base, fts = _model(3, seed=5)
    b, ms = base["a"], [f["a"] for f in fts]

    def stages(name, **options):
        method = get_method(name, **options)
        return method.stages("a", b, ms, [1.0] * 3), method

    for name in ("task_arithmetic", "mean", "soup", "wise_ft"):
        assert stages(name)[0] == Stages() and stages(name)[0].steps == ("sum",) and Stages().plain_sum
    assert stages("task_arithmetic", dare=DARE)[0].steps == ("dare", "sum")
    assert stages("dare_linear")[0] == Stages(dare=DareOptions())
    assert stages("mean")[1].task_weights([1.0, 2.0]) == [0.5, 1.0] == stages("soup")[1].task_weights([1.0, 2.0])
    assert stages("wise_ft", gamma=0.3)[1].task_weights([1.0, 2.0]) == [0.3 * 0.5, 0.3 * 1.0]
    dare_ties = stages("dare_ties", zero_sign="tensor")[0]  # density 1: no magnitude trim
    assert dare_ties == Stages(dare=DareOptions(), elect=True, aggregate="mean")
    assert dare_ties.steps == ("dare", "elect", "mean")
    per_tensor = stages("ties", trim="tensor", density=0.3, zero_sign="tensor", aggregate="sum")[0]
    taus = ref.task_vectors({"a": b}, [{"a": m} for m in ms], [1.0] * 3)
    assert per_tensor.steps == ("trim", "elect", "sum") and per_tensor.thresholds == _thresholds(taus, 0.3, "tensor")["a"]
    assert stages("dare_ties", density=0.4, trim="tensor", zero_sign="tensor")[0].steps == ("dare", "trim", "elect", "mean")
    ta = stages("consensus", k=1, lam=[0.2, 0.3, 0.4])[0]
    assert ta == Stages(consensus_k=1, consensus_lams=(0.2, 0.3, 0.4)) and ta.steps == ("sum", "consensus")
    ties = stages("consensus", base_method="ties", trim="tensor", zero_sign="tensor", dare=DARE)[0]
    assert ties.steps == ("dare", "trim", "elect", "sum", "consensus") and ties.consensus_lams == (0.4,) * 3


def test_global_stages_take_the_runs_statistics():
    base, fts = _model(3, seed=6)
    method = get_method("consensus", base_method="ties")  # global trim, zero_sign model: two statistics passes
    stats = method.new_statistics(3)
    for _ in range(4):
        for name, b in base.items():
            method.observe(stats, name, b, [f[name] for f in fts], [1.0] * 3)
        if not method.finish_statistics(stats):
            break
    taus = ref.task_vectors(base, fts, [1.0] * 3)
    thresholds = _thresholds(taus, 0.2, "global")
    got = method.stages("a", base["a"], [f["a"] for f in fts], [1.0] * 3, stats)
    assert got.thresholds == thresholds["a"] and got.sign_total == _model_sign_total(taus, thresholds)
    assert got.steps == ("trim", "elect", "sum", "consensus")


def test_stages_refuse_steps_that_do_not_fit():
    with pytest.raises(ValueError, match="elect"):
        Stages(aggregate="mean")  # a mean over agreeing entries needs elected signs
    with pytest.raises(ValueError, match="together"):
        Stages(consensus_k=2)
    with pytest.raises(ValueError, match="2 consensus_lams for 3 models"):
        staged_task_vector("w", torch.zeros(4), [torch.ones(4)] * 3, [1.0] * 3, Stages(consensus_k=1, consensus_lams=(1.0, 2.0)))


# ------------------------------------------------------------------ the fast paths' bytes
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("n", [1, 2, 5, 33])
def test_plain_sum_stages_are_the_fast_paths_bytes(dtype, n):
    """Task arithmetic may skip the stack: its staged tau and edit are task_vector_sum's and weighted_sum_edit's bytes."""
    base, fts = _model(n, seed=7, dtype=dtype)
    weights = [0.5 + 0.1 * t for t in range(n)]
    for name, b in base.items():
        ms = [f[name] for f in fts]
        tau = staged_task_vector(name, b, ms, weights, Stages())
        assert torch.equal(tau, task_vector_sum(b, ms, weights)), name
        keep_all = Stages(consensus_k=0, consensus_lams=(0.4,) * n)  # k = 0 keeps every entry: the same bytes
        assert torch.equal(staged_task_vector(name, b, ms, weights, keep_all), tau), name
        if n > 1 and dtype != torch.float64:  # one model is the lerp edit; float64 edits compute in float64
            edit = tau.mul_(0.7).add_(b).to(dtype)
            assert torch.equal(edit.view(torch.uint8), weighted_sum_edit(b, ms, weights, 0.7).view(torch.uint8)), name


FUSED = [("task_arithmetic", {}), ("mean", {}), ("soup", {}), ("wise_ft", {"gamma": 0.3}),
         *[("ties", {"trim": trim, "aggregate": agg, "zero_sign": zs, "density": d})
           for trim in ("global", "tensor") for agg in ("mean", "sum") for zs in ("model", "tensor") for d in (0.3, 1.0)],
         ("dare_ties", {"dare": None})]


@needs_kernels
@pytest.mark.parametrize("method, options", FUSED, ids=[f"{m}-{'-'.join(map(str, o.values()))}" for m, o in FUSED])
@pytest.mark.parametrize("tilt", [-3.0, 3.0], ids=["negative_total", "positive_total"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_staged_merge_is_the_fused_kernels_bytes(method, options, tilt, dtype):
    """Every method with a fused path: kernel edit == base + scale * staged tau_MTL, rounded once."""
    base, fts = _model(3, seed=8, dtype=dtype, quantized=True, tilt=tilt)
    m, weights = get_method(method, **options), [1.0, 0.75, 1.25]
    stats = m.new_statistics(3)
    while m.needs_statistics:
        for name, b in base.items():
            m.observe(stats, name, b, [f[name] for f in fts], weights)
        if not m.finish_statistics(stats):
            break
    for name, b in base.items():
        ms = [f[name] for f in fts]
        fused = m.fused_merge(name, b, ms, weights, 0.6, stats=stats)
        assert fused is not None, name
        staged = MergeMethod.merge(m, name, b, ms, weights, 0.6, stats=stats)  # task_vector -> staged_task_vector
        assert torch.equal(fused[0].view(torch.uint8), staged.view(torch.uint8)), name
