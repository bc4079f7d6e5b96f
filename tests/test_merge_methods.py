"""Multi-task merges against plain in-memory references (tests/merge_reference.py), with and without LiNeS.

Tolerance: tests/reference.py's TOL for the output dtype (float32: rtol 1e-5, atol 1e-6;
bfloat16: rtol 2^-7): the library computes in float32 and rounds once to the output
dtype; the references make the same float32 decisions and sum in float64.
"""
import pytest
import torch

import merge_reference as ref
from hf_lines import LinesMerger
from hf_lines.core.methods import METHODS, get_method
from hf_lines.core.methods.consensus import consensus_mask, tall_masks
from hf_lines.core.methods.kth_magnitude import KthMagnitude, magnitude_threshold
from hf_lines.core.methods.ties_math import disjoint_merge, elect_sign, trim_by_threshold
from reference import assert_close_dict, load_folder

# family -> number of fine-tunes: a decoder LM and an encoder classifier
FAMILIES = {"llama": 4, "bert": 3}
SCHEDULES = {"no_lines": (0.3, 0.0), "lines": (0.2, 0.6)}
DARE = {"drop_rate": 0.5, "seed": 7}

# name -> (method, options, reference tau_MTL from the stacked task vectors)
CASES = {
    "task_arithmetic": ("task_arithmetic", {}, lambda taus: ref.task_arithmetic(taus)),
    "mean": ("mean", {}, lambda taus: {k: v.double().mean(0) for k, v in taus.items()}),
    "ties_global": ("ties", {}, lambda taus: ref.ties(taus, 0.2, "global")),
    "ties_tensor": ("ties", {"trim": "tensor", "density": 0.3}, lambda taus: ref.ties(taus, 0.3, "tensor")),
    "ties_sum": ("ties", {"aggregate": "sum"}, lambda taus: ref.ties(taus, 0.2, "global", "sum")),
    "dare_linear": ("dare_linear", {"dare": DARE}, lambda taus: ref.task_arithmetic(taus)),
    "dare_ties": ("dare_ties", {"dare": DARE}, lambda taus: ref.ties(taus, 1.0, "global")),
    "ties_then_dare": ("ties", {"dare": DARE, "density": 0.4}, lambda taus: ref.ties(taus, 0.4, "global")),
    "consensus_ta": ("consensus", {}, lambda taus: ref.consensus(taus, ref.task_arithmetic(taus))),
    "consensus_ties": ("consensus", {"base_method": "ties", "k": 1, "lam": 0.5},
                       lambda taus: ref.consensus(taus, ref.ties(taus, 0.2, "global", "sum"), k=1, lam=0.5)),
}


def _dare_of(options):
    return options.get("dare")


def _inputs(family_models, family, dtype=torch.float32):
    base, fts = family_models(family, FAMILIES[family], dtype)
    return base, fts, load_folder(base), [load_folder(f) for f in fts]


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_method_matches_reference(family, case, schedule, family_models):
    base, fts, base_sd, ft_sds = _inputs(family_models, family)
    method, options, reference = CASES[case]
    alpha, beta = SCHEDULES[schedule]
    merger = LinesMerger.from_pretrained(base, fts, method=method, alpha=alpha, beta=beta, **options)
    taus = ref.task_vectors(base_sd, ft_sds, [1.0] * len(fts), _dare_of(options))
    expected = ref.apply(base_sd, reference(taus), merger.scales())
    assert_close_dict(merger.state_dict(), expected)
    if beta == 0.0:
        assert set(merger.scales().values()) == {alpha}  # no LiNeS: one constant lambda


@pytest.mark.parametrize("case", ["ties_global", "consensus_ta", "dare_ties"])
def test_auto_alpha_matches_reference(case, family_models):
    base, fts, base_sd, ft_sds = _inputs(family_models, "llama")
    method, options, reference = CASES[case]
    merger = LinesMerger.from_pretrained(base, fts, method=method, alpha="auto", beta=0.5, **options)
    taus = ref.task_vectors(base_sd, ft_sds, [1.0] * len(fts), _dare_of(options))
    merged = reference(taus)
    # the numerator sums the task vectors as fine-tuned (not DARE'd), as the paper's code
    alpha = ref.auto_alpha(ref.task_vectors(base_sd, ft_sds, [1.0] * len(fts)), merged)
    got = merger.state_dict()
    assert merger.lines.alpha == pytest.approx(alpha, rel=1e-6)
    assert merger.describe()["lines"]["alpha_setting"] == "auto"
    assert merger.describe()["lines"]["alpha"] == merger.lines.alpha
    expected = ref.apply(base_sd, merged, merger.layer_map.scales(alpha, 0.5, "paper"))
    assert_close_dict(got, expected)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_auto_alpha_of_a_sum_is_exactly_one_over_n(n, family_models):
    base, fts = family_models("llama", 4)
    merger = LinesMerger.from_pretrained(base, fts[:n], method="sum", alpha="auto", beta=0.3)
    merger.scales()
    assert merger.lines.alpha == 1.0 / n
    mean = LinesMerger.from_pretrained(base, fts[:n], method="mean", alpha="auto")
    assert mean.scales() and mean.lines.alpha == pytest.approx(1.0, rel=1e-6)


def test_ties_global_and_per_tensor_differ(family_models):
    base, fts = family_models("llama", 4)
    glob = LinesMerger.from_pretrained(base, fts, method="ties").state_dict()
    per = LinesMerger.from_pretrained(base, fts, method="ties", trim="tensor").state_dict()
    differing = [n for n in glob if not torch.equal(glob[n], per[n])]
    assert len(differing) > len(glob) // 2


@pytest.mark.parametrize("zero_sign", ["tensor", "model"])
@pytest.mark.parametrize("dtype, passes", [(torch.float32, 2), (torch.bfloat16, 1)])
def test_global_threshold_is_exact(dtype, passes, zero_sign, family_models, monkeypatch):
    """Same threshold, bit for bit, as kthvalue/topk over the flattened model; bf16 needs one pass only
    (and the model's sign total one more)."""
    import hf_lines.pipeline.statistics as stats

    calls = []
    real = stats.statistics_pass
    monkeypatch.setattr(stats, "statistics_pass", lambda *a, **k: (calls.append(k["desc"]), real(*a, **k)))
    base, fts = family_models("llama", 3, dtype)
    merger = LinesMerger.from_pretrained(base, fts, method="ties", density=0.2, zero_sign=zero_sign)
    merger.scales()
    merger.state_dict()
    assert len(calls) == passes + (zero_sign == "model")
    taus = ref.task_vectors(load_folder(base), [load_folder(f) for f in fts], [1.0] * 3)
    flat = torch.cat([taus[k] for k in sorted(taus)], dim=1).abs()
    d = flat.shape[1]
    for t, got in enumerate(merger.statistics.thresholds):
        assert got == ref.kth_threshold(flat[t], 0.2)
        assert got == float(torch.topk(flat[t], int(d * 0.2) + 1).values[-1])  # (m + 1)-th largest
        assert int((flat[t] >= got).sum()) >= int(d * 0.2) + 1


@pytest.mark.parametrize("shift", [13, 16, 20])
def test_kth_magnitude_streaming_with_ties(shift):
    """Heavy duplicates, zeros, several slices: the streamed threshold equals kthvalue on everything."""
    g = torch.Generator().manual_seed(0)
    values = torch.cat([
        torch.randn(50_000, generator=g),
        torch.randint(-5, 6, (30_000,), generator=g).float() * 0.125,  # many exact ties
        torch.zeros(10_000),
        torch.randn(20_000, generator=g) * 1e-30,  # subnormal-range magnitudes
    ])
    values = values[torch.randperm(values.numel(), generator=g)]
    for density in (0.01, 0.2, 0.5, 0.77, 0.95):
        km = KthMagnitude(density, shift)
        slices = values.split(9_973)
        for s in slices:
            km.add(s)
        if km.finish():
            for s in slices:
                km.add(s)
            assert not km.finish()
        assert km.threshold == magnitude_threshold(values, density)


@pytest.mark.parametrize("method, options", [("dare_ties", {}), ("ties", {"trim": "global"})])
def test_dare_is_reproducible_and_independent_of_workers(method, options, family_models, tmp_path):
    """Same seed: the same bytes with 1 or 3 threads (statistics pass included); another seed: another merge."""
    base, fts = family_models("llama", 4)
    outs = []
    for workers in (1, 3):
        merger = LinesMerger.from_pretrained(base, fts, method=method, alpha="auto", beta=0.5,
                                             dare={"drop_rate": 0.7, "seed": 3}, **options)
        out = merger.save_pretrained(tmp_path / f"w{workers}", workers=workers, progress=False)
        outs.append(load_folder(out))
    for n in outs[0]:
        assert torch.equal(outs[0][n], outs[1][n]), n
    other = LinesMerger.from_pretrained(base, fts, method=method, alpha="auto", beta=0.5,
                                        dare={"drop_rate": 0.7, "seed": 4}, **options)
    assert any(not torch.equal(outs[0][n], t) for n, t in other.state_dict().items())


def test_dare_drops_the_asked_fraction_and_keeps_the_expectation(family_models):
    base, fts = family_models("llama", 4)
    base_sd, ft_sds = load_folder(base), [load_folder(f) for f in fts]
    plain = ref.task_vectors(base_sd, ft_sds, [1.0] * 4)
    method = get_method("dare_linear", dare={"drop_rate": 0.8, "seed": 1})
    kept = total = 0
    for name, v in plain.items():
        got = method.task_vector(name, base_sd[name], [ft_sds[0][name]], [1.0]).reshape(-1)
        kept += int((got != 0).sum())
        total += got.numel()
        nz = got != 0
        torch.testing.assert_close(got[nz], v[0][nz] / 0.2, rtol=1e-6, atol=0)  # survivors rescaled by 1/(1-p)
    assert kept / total == pytest.approx(0.2, abs=0.01)


def test_consensus_limits(family_models):
    base, fts = family_models("llama", 4)
    ta = LinesMerger.from_pretrained(base, fts, method="task_arithmetic", alpha=0.5).state_dict()
    k0 = LinesMerger.from_pretrained(base, fts, method="consensus", alpha=0.5, k=0).state_dict()
    assert_close_dict(k0, ta)  # k = 0 keeps every entry: task arithmetic
    none = LinesMerger.from_pretrained(base, fts, method="consensus", alpha=0.5, k=5).state_dict()
    assert_close_dict(none, load_folder(base))  # more tasks than models: nothing survives, the base
    per_task = LinesMerger.from_pretrained(base, fts, method="consensus", lam=[0.2, 0.3, 0.4, 0.6])
    taus = ref.task_vectors(load_folder(base), [load_folder(f) for f in fts], [1.0] * 4)
    expected = ref.apply(load_folder(base), ref.consensus(taus, ref.task_arithmetic(taus), lam=[0.2, 0.3, 0.4, 0.6]),
                         per_task.scales())
    assert_close_dict(per_task.state_dict(), expected)
    with pytest.raises(ValueError, match="lam lists 2 values for 4 models"):
        LinesMerger.from_pretrained(base, fts, method="consensus", lam=[0.2, 0.3])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_soup_is_the_average_and_lines_scales_it(family, family_models):
    base, fts, base_sd, ft_sds = _inputs(family_models, family)
    soup = LinesMerger.from_pretrained(base, fts, method="soup").state_dict()  # no LiNeS: alpha 1, beta 0
    average = {n: torch.stack([f[n].double() for f in ft_sds]).mean(0).to(b.dtype) for n, b in base_sd.items()}
    assert_close_dict(soup, average)
    lines = LinesMerger.from_pretrained(base, fts, method="soup", alpha=0.4, beta=0.6)
    mean_tau = {k: v.double().mean(0) for k, v in ref.task_vectors(base_sd, ft_sds, [1.0] * len(fts)).items()}
    assert_close_dict(lines.state_dict(), ref.apply(base_sd, mean_tau, lines.scales()))
    assert lines.scales() != LinesMerger.from_pretrained(base, fts, method="soup", alpha=0.4).scales()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_wise_ft_interpolates_and_lines_scales_it(family, family_models):
    base, fts, base_sd, ft_sds = _inputs(family_models, family)
    ft, ft_sd = fts[0], ft_sds[0]
    wise = LinesMerger.from_pretrained(base, [ft], method="wise_ft", gamma=0.3).state_dict()
    expected = {n: (0.7 * b.double() + 0.3 * ft_sd[n].double()).to(b.dtype) for n, b in base_sd.items()}
    assert_close_dict(wise, expected)
    lines = LinesMerger.from_pretrained(base, [ft], method="wise_ft", gamma=0.3, alpha=0.5, beta=0.5)
    tau = {k: 0.3 * v[0].double() for k, v in ref.task_vectors(base_sd, [ft_sd], [1.0]).items()}
    assert_close_dict(lines.state_dict(), ref.apply(base_sd, tau, lines.scales()))


def test_weights_scale_task_vectors(family_models):
    base, fts, base_sd, ft_sds = _inputs(family_models, "llama")
    weights = [1.0, 0.5, 2.0, 0.25]
    merger = LinesMerger.from_pretrained(base, fts, method="ties", weights=weights, alpha=0.5, beta=0.5)
    taus = ref.task_vectors(base_sd, ft_sds, weights)
    assert_close_dict(merger.state_dict(), ref.apply(base_sd, ref.ties(taus), merger.scales()))


def test_bfloat16_merges_round_once(family_models):
    base, fts = family_models("llama", 3, torch.bfloat16)
    base_sd, ft_sds = load_folder(base), [load_folder(f) for f in fts]
    merger = LinesMerger.from_pretrained(base, fts, method="ties", alpha="auto", beta=0.5)
    got = merger.state_dict()
    taus = ref.task_vectors(base_sd, ft_sds, [1.0] * 3)
    merged = ref.ties(taus)
    expected = ref.apply(base_sd, merged, merger.layer_map.scales(ref.auto_alpha(taus, merged), 0.5, "paper"))
    assert all(t.dtype == torch.bfloat16 for t in got.values())
    assert_close_dict(got, expected)


def test_pure_functions_on_a_hand_example():
    taus = torch.tensor([[3.0, -1.0, 0.5, 2.0, -2.0],
                         [-1.0, -4.0, 0.125, -2.0, 2.0],
                         [2.0, 0.25, -0.375, 0.0, 0.0]])
    trimmed = trim_by_threshold(taus, torch.tensor([[1.0], [1.0], [0.25]]))  # equal to the threshold: kept
    assert trimmed.tolist() == [[3.0, -1.0, 0.0, 2.0, -2.0], [-1.0, -4.0, 0.0, -2.0, 2.0], [2.0, 0.25, -0.375, 0.0, 0.0]]
    sign = elect_sign(trimmed)
    assert sign.tolist() == [1.0, -1.0, -1.0, 0.0, 0.0]
    assert disjoint_merge(trimmed, sign).tolist() == [2.5, -2.5, -0.375, -2.0, -2.0]  # sign 0: negatives
    assert disjoint_merge(trimmed, torch.ones(5), "sum").tolist() == [5.0, 0.25, 0.0, 2.0, 2.0]
    merged = taus.sum(0)
    masks = tall_masks(taus, merged, torch.full((3, 1), 0.5))
    assert masks[:, 0].tolist() == [True, False, True]  # |3| > 0.5*|1|, |-1| > 0.5*|5| is false, |2| > 0.5*|2|
    assert consensus_mask(masks, 2).tolist()[0] is True


def test_every_registered_method_is_documented_and_validates_options():
    for name, cls in METHODS.items():
        assert cls.__doc__ and cls.__doc__.strip(), name
        with pytest.raises(ValueError, match="no option"):
            get_method(name, not_an_option=1)
    with pytest.raises(ValueError, match="density"):
        get_method("ties", density=0)
    with pytest.raises(ValueError, match="trim"):
        get_method("ties", trim="layer")
    with pytest.raises(ValueError, match="drop_rate"):
        get_method("dare_linear", dare={"drop_rate": 1.0})
    with pytest.raises(ValueError, match="base_method"):
        get_method("consensus", base_method="soup")
    with pytest.raises(ValueError, match="only with base_method: ties"):
        get_method("consensus", density=0.3)
    assert get_method("ties", trim="per_tensor").trim == "tensor"


@pytest.mark.parametrize("offset", [-1.0, 1.0])
def test_cancelling_values_take_the_sign_of_the_tensor_total(offset):
    """Entries whose surviving values sum to exactly zero follow the sign of the tensor's total, across slices."""
    from hf_lines.core.methods.task_vectors import STACK_CHUNK
    from hf_lines.core.methods.ties_math import ties_task_vector

    g = torch.Generator().manual_seed(1)
    n = STACK_CHUNK + 12_345  # two slices
    base = torch.zeros(n)
    models = [torch.randint(-2, 3, (n,), generator=g).float() for _ in range(3)]
    models[0][:1000] += 3 * offset  # tilts the total sign
    for aggregate in ("mean", "sum"):
        got = ties_task_vector("w", base, models, [1.0] * 3, [0.0, 0.0, 0.0], aggregate)
        taus = ref.task_vectors({"w": base}, [{"w": m} for m in models], [1.0] * 3)
        expected = ref.ties(taus, density=1.0, trim="tensor", aggregate=aggregate)["w"]
        cancelled = (taus["w"].sum(0) == 0) & (taus["w"] != 0).any(0)
        assert int(cancelled.sum()) > 1000
        torch.testing.assert_close(got, expected.float(), rtol=1e-6, atol=0)
        assert bool((got[cancelled] * offset > 0).all())


@pytest.mark.parametrize("method", sorted(METHODS))
def test_inputs_are_never_written(method, family_models):
    """float32 .float() is no copy: no method may write into the tensors it reads."""
    base, fts = family_models("llama", 4)
    name = "model.layers.1.mlp.up_proj.weight"
    b, ms = load_folder(base)[name], [load_folder(f)[name] for f in fts]
    copies = [b.clone()] + [m.clone() for m in ms]
    m = get_method(method)
    stats = m.new_statistics(4)
    if m.needs_statistics:
        m.observe(stats, name, b, ms, [1.0] * 4)
        while m.finish_statistics(stats):
            m.observe(stats, name, b, ms, [1.0] * 4)
    m.merge(name, b, ms, [1.0] * 4, 0.7, stats=stats)
    m.task_vector(name, b, ms, [1.0] * 4, stats)
    for before, after in zip(copies, [b] + ms):
        assert torch.equal(before, after)


@pytest.mark.parametrize("zero_sign", ["model", "tensor"])
def test_exact_cancellations_follow_the_authors_rule(zero_sign, family_models):
    """bf16 task vectors cancel exactly at many entries; the authors' code settles them by the sign of the
    whole flattened model's total of elected signs (zero_sign: model), not each tensor's."""
    base, fts = family_models("llama", 3, torch.bfloat16)
    base_sd, ft_sds = load_folder(base), [load_folder(f) for f in fts]
    taus = ref.task_vectors(base_sd, ft_sds, [1.0] * 3)
    thr = ref.ties_thresholds(taus, 0.2, "global")
    trimmed = {n: v * (v.abs() >= thr[n]) for n, v in taus.items()}
    model_total = sum(int(torch.sign(t.sum(0)).sum()) for t in trimmed.values())
    # the two rules disagree somewhere: a tensor with cancelling entries whose own total points the other way
    disagree = [n for n, t in trimmed.items()
                if bool(((t.sum(0) == 0) & (t != 0).any(0)).any())
                and (int(torch.sign(t.sum(0)).sum()) > 0) != (model_total > 0)]
    assert disagree
    merger = LinesMerger.from_pretrained(base, fts, method="ties", density=0.2, alpha=0.7, beta=0.0,
                                         zero_sign=zero_sign)
    got = merger.state_dict()
    expected = ref.apply(base_sd, ref.ties(taus, zero_sign=zero_sign), merger.layer_map.scales(0.7, 0.0, "paper"))
    assert_close_dict(got, expected)
    if zero_sign == "model":
        assert merger.describe()["method_statistics"]["sign_total"] == model_total
