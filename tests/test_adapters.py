"""LiNeS on PEFT LoRA adapters: scaled adapters out, full models out, several adapters in.

Every expectation is built from peft itself: ``PeftModel.from_pretrained(base, adapter)
.merge_and_unload()`` gives the fine-tuned weights theta_t, and the expected output is
theta_0 + lambda * sum_i w_i (theta_t,i - theta_0) in float64 (tests/reference.py).
Tolerance: the float32 one of tests/reference.py (rtol 1e-5, atol 1e-6): hf-lines and
peft both form B @ A in float32 and differ only in the order of float32 roundings.
"""
from __future__ import annotations

import json

import pytest
import torch

import tiny_adapters
from tiny_adapters import CASES
from hf_lines import LinesMerger, scale_adapter
from hf_lines.errors import AdapterError
from reference import assert_close_dict, lines_reference, load_folder

adapter = tiny_adapters.adapter  # the session fixture
ALPHA, BETA = 0.3, 0.5


def expected(family, base, adapters, weights, scales):
    """theta_0 + lambda * sum_i w_i (theta_t,i - theta_0), theta_t,i merged by peft."""
    theta0 = load_folder(base)
    merged = [tiny_adapters.peft_merged(family, base, a) for a in adapters]
    return lines_reference(theta0, [{k: m[k] for k in theta0} for m in merged], weights, scales)


def peft_result(family, base, adapter_out):
    theta0 = load_folder(base)
    merged = tiny_adapters.peft_merged(family, base, adapter_out)
    return {k: merged[k] for k in theta0}


@pytest.mark.parametrize("case", sorted(CASES))
def test_scaled_adapter_and_model_match_peft(case, adapter, tmp_path):
    family, base, ad = adapter(case)
    merger = LinesMerger.from_pretrained(base, [ad], alpha=ALPHA, beta=BETA)
    want = expected(family, base, [ad], [1.0], merger.scales())

    out = merger.save_pretrained(tmp_path / "adapter", output="adapter", progress=False)
    assert {p.name for p in out.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors", "hf_lines.json"}
    assert_close_dict(peft_result(family, base, out), want)  # (a) the scaled adapter, as PEFT loads and merges it
    assert (out / "adapter_config.json").read_bytes() == (ad / "adapter_config.json").read_bytes()  # same config

    model = merger.save_pretrained(tmp_path / "model", output="model", progress=False)
    assert (model / "config.json").exists()
    assert_close_dict(load_folder(model), want)  # (b) the full model


def test_scale_adapter_function_equals_merger(adapter, tmp_path):
    family, base, ad = adapter("llama-embedding-modules_to_save-patterns")
    out = scale_adapter(base, ad, tmp_path / "out", alpha=0.1, beta=0.9, policy="depth")
    merger = LinesMerger.from_pretrained(base, [ad], alpha=0.1, beta=0.9, policy="depth")
    assert_close_dict(peft_result(family, base, out), merger.state_dict())


def test_fan_in_fan_out_flag_is_not_trusted(adapter, tmp_path):
    """peft rewrites fan_in_fan_out per module (Linear vs Conv1D) and saves the last value it set:
    square GPT-2 weights must be oriented by the module's class, not by that flag."""
    import shutil

    family, base, ad = adapter("gpt2-conv1d-fan_in_fan_out")
    flipped = shutil.copytree(ad, tmp_path / "flipped")
    cfg = json.loads((flipped / "adapter_config.json").read_text())
    cfg["fan_in_fan_out"] = False
    (flipped / "adapter_config.json").write_text(json.dumps(cfg))
    merger = LinesMerger.from_pretrained(base, [flipped], alpha=ALPHA, beta=BETA)
    assert_close_dict(merger.state_dict(), expected(family, base, [ad], [1.0], merger.scales()))


@pytest.mark.parametrize("method", ["task_arithmetic", "mean"])
def test_several_adapters_concatenate_exactly(method, adapter, tmp_path):
    a1 = adapter("llama-embedding-modules_to_save-patterns")
    a2 = adapter("llama-2", family="llama", seed=2, r=3, lora_alpha=5, use_rslora=True,
                 target_modules=["q_proj", "k_proj", "gate_proj"], layers_to_transform=[1, 2, 3])
    a3 = adapter("llama-3", family="llama", seed=3, r=2, lora_alpha=2, target_modules=["q_proj", "down_proj"],
                 rank_pattern={"layers.0.mlp.down_proj": 6}, alpha_pattern={"down_proj": 1})
    family, base = a1[0], a1[1]
    ads, weights = [a1[2], a2[2], a3[2]], [0.7, 1.3, 0.5]
    merger = LinesMerger.from_pretrained(base, ads, alpha=ALPHA, beta=BETA, method=method, weights=weights)
    coefs = [w / 3 for w in weights] if method == "mean" else weights
    want = expected(family, base, ads, coefs, merger.scales())

    out = merger.save_pretrained(tmp_path / "adapter", output="auto", progress=False)  # auto: all LoRA, linear
    assert (out / "adapter_config.json").exists()
    assert_close_dict(peft_result(family, base, out), want)  # (c) concatenated rank == dense sum
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["use_rslora"] is False and cfg["lora_alpha"] == cfg["r"] and cfg["rank_pattern"] == cfg["alpha_pattern"]
    assert cfg["rank_pattern"]["^model\\.layers\\.0\\.self_attn\\.q_proj"] == 4 + 2  # q_proj: a1 and a3 only

    model = merger.save_pretrained(tmp_path / "model", output="model", progress=False)
    assert_close_dict(load_folder(model), want)


def test_full_finetune_and_adapter_mix(adapter, family_models, tmp_path):
    family, base, ad = adapter("llama-embedding-modules_to_save-patterns")
    _, (ft,) = family_models("llama")
    merger = LinesMerger.from_pretrained(base, [ft, ad], alpha=ALPHA, beta=BETA, weights=[0.5, 1.0])
    theta0, theta_ad = load_folder(base), peft_result(family, base, ad)
    want = lines_reference(theta0, [load_folder(ft), theta_ad], [0.5, 1.0], merger.scales())
    out = merger.save_pretrained(tmp_path / "auto", output="auto", progress=False)  # auto: a full model is in
    assert (out / "config.json").exists()
    assert_close_dict(load_folder(out), want)
    with pytest.raises(AdapterError, match="full model.*output='model'"):
        merger.save_pretrained(tmp_path / "adapter", output="adapter", progress=False)


def test_nonlinear_methods_see_dense_deltas(adapter, tmp_path):
    """A non-linear method gives the same result on adapters as on the full models they stand for."""
    from hf_lines.core.methods import METHODS

    nonlinear = [m for m in ("ties", "dare_linear", "consensus") if m in METHODS]
    if not nonlinear:
        pytest.skip("no non-linear merge method registered yet")
    a1 = adapter("llama-embedding-modules_to_save-patterns")
    a2 = adapter("llama-2", family="llama", seed=2, r=3, lora_alpha=5, use_rslora=True,
                 target_modules=["q_proj", "k_proj", "gate_proj"], layers_to_transform=[1, 2, 3])
    family, base = a1[0], a1[1]
    fulls = []
    for i, (_, _, ad) in enumerate((a1, a2)):  # the same fine-tunes as full model folders
        model = tiny_adapters.load_base(family, base)
        model.load_state_dict(tiny_adapters.peft_merged(family, base, ad))
        model.save_pretrained(tmp_path / f"full{i}")
        fulls.append(tmp_path / f"full{i}")
    for method in nonlinear:
        via_adapters = LinesMerger.from_pretrained(base, [a1[2], a2[2]], alpha=ALPHA, beta=BETA, method=method)
        assert via_adapters.save_pretrained(tmp_path / f"{method}-auto", output="auto", progress=False).joinpath(
            "config.json").exists()
        with pytest.raises(AdapterError, match="not linear"):
            via_adapters.save_pretrained(tmp_path / f"{method}-adapter", output="adapter", progress=False)
        via_models = LinesMerger.from_pretrained(base, fulls, alpha=ALPHA, beta=BETA, method=method)
        assert_close_dict(load_folder(tmp_path / f"{method}-auto"), via_models.state_dict())


@pytest.mark.parametrize("family,kwargs", [
    ("llama", dict(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj", "embed_tokens"])),
    ("gpt2", dict(r=4, lora_alpha=8, use_dora=True, fan_in_fan_out=True, target_modules=["c_attn", "c_proj"])),
    ("vit", dict(r=2, lora_alpha=4, use_dora=True, target_modules=["projection", "v_proj"])),
])
def test_dora_full_model_matches_peft(family, kwargs, adapter, tmp_path):
    fam, base, ad = adapter(f"dora-{family}", family=family, seed=5, **kwargs)
    merger = LinesMerger.from_pretrained(base, [ad], alpha=ALPHA, beta=BETA)
    out = merger.save_pretrained(tmp_path / "out", output="auto", progress=False)  # auto: DoRA -> model
    assert (out / "config.json").exists()
    assert_close_dict(load_folder(out), expected(fam, base, [ad], [1.0], merger.scales()))
    with pytest.raises(AdapterError, match="DoRA.*output='model'"):
        merger.save_pretrained(tmp_path / "adapter", output="adapter", progress=False)


def test_adapter_out_reads_no_base_weights(adapter, tmp_path, monkeypatch):
    """Without whole saved modules, the base is read for its config and tensor names only."""
    from hf_lines.io.checkpoint import Checkpoint

    family, base, ad = adapter("gpt2-conv1d-fan_in_fan_out")

    def refuse(self, name):
        raise AssertionError(f"base tensor {name} was read")

    monkeypatch.setattr(Checkpoint, "get", refuse)
    out = scale_adapter(base, ad, tmp_path / "out", alpha=ALPHA, beta=BETA)
    monkeypatch.undo()
    merger = LinesMerger.from_pretrained(base, [ad], alpha=ALPHA, beta=BETA)
    assert_close_dict(peft_result(family, base, out), merger.state_dict())


def test_bf16_base_float32_accurate(family_models, tmp_path):
    """A bf16 base with float32 adapter factors: one bf16 rounding of the float32-exact result."""
    base, _ = family_models("llama", dtype=torch.bfloat16)
    ad = tiny_adapters.make_adapter("llama", base, tmp_path / "ad", seed=4, r=4, lora_alpha=8,
                                    target_modules=["q_proj", "up_proj"])
    merger = LinesMerger.from_pretrained(base, [ad], alpha=ALPHA, beta=BETA)
    got = load_folder(merger.save_pretrained(tmp_path / "out", output="model", progress=False))
    theta0 = load_folder(base)
    from safetensors.torch import load_file

    factors = load_file(ad / "adapter_model.safetensors")
    for name, t0 in theta0.items():
        module = name.rsplit(".", 1)[0]
        key = f"base_model.model.{module}.lora_A.weight"
        want = t0.double()
        if key in factors:
            delta = factors[key.replace("lora_A", "lora_B")].double() @ factors[key].double() * 2.0
            want = want + merger.scales()[name] * (t0.double() + delta - t0.double())
        ulp = torch.finfo(torch.bfloat16).eps * want.abs().clamp_min(torch.finfo(torch.bfloat16).tiny)
        assert got[name].dtype == torch.bfloat16
        assert ((got[name].double() - want).abs() <= ulp + 1e-12).all(), name


def test_reads_are_private_copies(adapter):
    """A merge method may work in place on its inputs: that must not change the next read."""
    _, base, ad = adapter("llama-embedding-modules_to_save-patterns")
    merger = LinesMerger.from_pretrained(base, [ad], alpha=ALPHA, beta=BETA)
    ckpt = merger.models[0].checkpoint
    for name in ("lm_head.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"):
        first = ckpt.get(name)
        want = first.clone()
        first.add_(1.0)
        torch.testing.assert_close(ckpt.get(name), want, rtol=0, atol=0)
