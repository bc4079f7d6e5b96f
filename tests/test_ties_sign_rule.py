"""TIES' model-wide sign rule (zero_sign: model) for either sign of the model's total.

Where the kept values of an entry cancel exactly, the authors' code elects the sign of the
whole model's total of elected signs. A positive and a negative total take different values
at about 5% of the entries of a bf16 merge: both must give the authors' numbers, on the
kernels and on the torch path, in a written output and in memory alike.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import merge_reference as ref
from hf_lines import LinesMerger
from hf_lines.core import kernels
from reference import assert_close_dict, load_folder


def _negated(base, folder, out):
    """A fine-tune whose task vector is the negative of ``folder``'s (bf16 values stored exactly as float32)."""
    base_sd, ft = load_folder(base), load_folder(folder)
    out.mkdir()
    for f in folder.iterdir():
        if f.suffix != ".safetensors" and f.is_file():
            (out / f.name).write_bytes(f.read_bytes())
    save_file({n: (2 * base_sd[n].double() - ft[n].double()).to(base_sd[n].dtype) if ft[n].is_floating_point() else ft[n]
               for n in ft}, str(out / "model.safetensors"))
    return out


@pytest.fixture(scope="module")
def setups(family_models, tmp_path_factory):
    """(base, fine-tunes, the authors' model-wide sign total) with a positive and a non-positive total."""
    base, fts = family_models("llama", 3, torch.bfloat16)
    root = tmp_path_factory.mktemp("negated")
    negated = [_negated(base, f, root / f.name) for f in fts]
    out = {}
    for label, models in (("as trained", fts), ("negated", negated)):
        taus = ref.task_vectors(load_folder(base), [load_folder(m) for m in models], [1.0] * 3)
        thr = ref.ties_thresholds(taus, 0.2, "global")
        trimmed = {n: v * (v.abs() >= thr[n]) for n, v in taus.items()}
        total = sum(int(torch.sign(t.sum(0)).sum()) for t in trimmed.values())
        cancelling = sum(int(((t.sum(0) == 0) & (t != 0).any(0)).sum()) for t in trimmed.values())
        out[label] = (base, models, taus, total, cancelling)
    assert {out["as trained"][3] > 0, out["negated"][3] > 0} == {True, False}, "one total of each sign"
    return out


@pytest.fixture(params=["kernels", "torch"])
def path(request, monkeypatch):
    if request.param == "kernels" and not kernels.available():
        pytest.skip("compiled kernels not built (or HF_LINES_NATIVE=0)")
    if request.param == "torch":
        monkeypatch.setattr(kernels, "_LIB", None)
    return request.param


@pytest.mark.parametrize("label", ["as trained", "negated"])
def test_either_sign_of_the_total_follows_the_authors_rule(label, setups, path, tmp_path):
    base, models, taus, total, cancelling = setups[label]
    assert cancelling > 100  # bf16 task vectors: many entries where the kept values cancel exactly
    merger = LinesMerger.from_pretrained(base, models, method="ties", density=0.2, alpha=0.7, beta=0.5)
    out = merger.save_pretrained(tmp_path / "out", progress=False)
    written = load_folder(out)
    expected = ref.apply(load_folder(base), ref.ties(taus, zero_sign="model"), merger.scales())
    assert_close_dict(written, expected)  # the authors' rule, to bf16 tolerance
    assert json.loads((out / "hf_lines.json").read_text())["method_statistics"]["sign_total"] == total
    fresh = LinesMerger.from_pretrained(base, models, method="ties", density=0.2, alpha=0.7, beta=0.5)
    assert all(torch.equal(written[n], t) for n, t in fresh.state_dict().items())  # in memory: the same bytes
    if path == "kernels":  # the kernels measure ||out - base|| of the bytes written, in float32
        base_sd = load_folder(base)
        for n, (_, out_norm) in merger.tensor_norms.items():
            assert out_norm == pytest.approx(float((written[n].double() - base_sd[n].double()).norm()), rel=1e-5), n


def test_torch_path_norms_are_not_rounded_to_the_stored_dtype(setups, monkeypatch, tmp_path):
    """||out - base|| of a bf16 tensor was once returned in bf16 (up to 0.4% off on the card)."""
    base, models, _, _, _ = setups["as trained"]
    monkeypatch.setattr(kernels, "_LIB", None)
    merger = LinesMerger.from_pretrained(base, models, method="ties", density=0.2, alpha=0.7, beta=0.5)
    written = load_folder(merger.save_pretrained(tmp_path / "out", progress=False))
    base_sd = load_folder(base)
    for n, (_, out_norm) in merger.tensor_norms.items():
        # the difference is taken in bf16, the sum of squares in float32: within 1e-4 here, 1.8e-3 before
        assert out_norm == pytest.approx(float((written[n].double() - base_sd[n].double()).norm()), rel=2e-4), n


def test_auto_alpha_takes_the_sign_rule_into_its_norm(setups, tmp_path):
    """||tau_MTL||_1 depends on the sign total: auto alpha must see the settled entries."""
    base, models, taus, _, _ = setups["negated"]
    merger = LinesMerger.from_pretrained(base, models, method="ties", density=0.2, alpha="auto", beta=0.5)
    out = merger.save_pretrained(tmp_path / "out", progress=False)
    merged = ref.ties(taus, zero_sign="model")
    alpha = ref.auto_alpha(taus, merged)
    assert merger.lines.alpha == pytest.approx(alpha, rel=1e-6)
    expected = ref.apply(load_folder(base), merged, merger.layer_map.scales(merger.lines.alpha, 0.5, "paper"))
    assert_close_dict(load_folder(out), expected)
