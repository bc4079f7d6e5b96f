"""Adapters at the edges: clear errors, Hub inputs read from headers only, and the CLI."""
from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

import tiny_adapters
from hf_lines import LinesMerger, scale_adapter
from hf_lines.cli import main
from hf_lines.errors import AdapterError
from reference import assert_close_dict, load_folder

adapter = tiny_adapters.adapter  # the session fixture
ALPHA, BETA = 0.3, 0.5


def _peft_adapter(family, base, out, config):
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_peft_model(tiny_adapters.load_base(family, base), config).save_pretrained(out)
    return out


def test_ia3_and_prefix_tuning_are_refused(family_models, tmp_path):
    from peft import IA3Config, PrefixTuningConfig

    base, _ = family_models("llama")
    ia3 = _peft_adapter("llama", base, tmp_path / "ia3", IA3Config(
        target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]))
    prefix = _peft_adapter("llama", base, tmp_path / "prefix", PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=4))
    for ad, kind in ((ia3, "IA3"), (prefix, "PREFIX_TUNING")):
        with pytest.raises(AdapterError, match=f"{kind} adapter.*LoRA.*merge_and_unload"):
            LinesMerger.from_pretrained(base, [ad], alpha=ALPHA, beta=BETA)
        with pytest.raises(AdapterError, match=kind):
            scale_adapter(base, ad, tmp_path / "out", alpha=ALPHA, beta=BETA)
    assert not (tmp_path / "out").exists()


def test_adapter_on_the_wrong_base(adapter, family_models):
    _, _, gpt2_adapter = adapter("gpt2-conv1d-fan_in_fan_out")
    llama, _ = family_models("llama")
    with pytest.raises(AdapterError, match="not a tensor of the base model"):
        LinesMerger.from_pretrained(llama, [gpt2_adapter], alpha=ALPHA, beta=BETA)


def test_adapter_given_as_base(adapter, family_models):
    _, _, ad = adapter("llama-embedding-modules_to_save-patterns")
    _, (ft,) = family_models("llama")
    with pytest.raises(AdapterError, match="not a full model"):
        LinesMerger.from_pretrained(ad, [ft], alpha=ALPHA, beta=BETA)


def test_resized_vocabulary_is_refused(adapter, tmp_path):
    _, base, ad = adapter("llama-embedding-modules_to_save-patterns")
    bad = shutil.copytree(ad, tmp_path / "resized")
    tensors = load_file(bad / "adapter_model.safetensors")
    key = "base_model.model.model.embed_tokens.base_layer.weight"
    tensors[key] = torch.cat([tensors[key], tensors[key][:1]])
    save_file(tensors, bad / "adapter_model.safetensors")
    with pytest.raises(AdapterError, match="resized vocabulary"):
        LinesMerger.from_pretrained(base, [bad], alpha=ALPHA, beta=BETA)


def test_rank_that_contradicts_the_config(adapter, tmp_path):
    _, base, ad = adapter("mistral-layers_to_transform")
    bad = shutil.copytree(ad, tmp_path / "bad")
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["r"] = 3
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterError, match="rank 2 but adapter_config.json gives it r=3"):
        LinesMerger.from_pretrained(base, [bad], alpha=ALPHA, beta=BETA)


# ----------------------------------------------------------------------- Hub
def _seed(hub, repo_id, folder):
    return hub.emulator.add_commit(repo_id, {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})


def test_hub_base_is_read_from_headers_only(hub, adapter, tmp_path):
    from huggingface_hub import try_to_load_from_cache

    _, base, ad = adapter("gpt2-conv1d-fan_in_fan_out")
    base_id, ad_id = hub.new_repo_id("gpt2-base"), hub.new_repo_id("gpt2-lora")
    _seed(hub, base_id, base)
    commit = _seed(hub, ad_id, ad)
    out = scale_adapter(base_id, f"{ad_id}@{commit.oid}", tmp_path / "out", alpha=ALPHA, beta=BETA)
    assert try_to_load_from_cache(base_id, "model.safetensors") is None  # the base weights never came down
    local = scale_adapter(base, ad, tmp_path / "local", alpha=ALPHA, beta=BETA)
    assert_close_dict(load_file(out / "adapter_model.safetensors"), load_file(local / "adapter_model.safetensors"))


def test_hub_inputs_through_the_merger(hub, adapter, tmp_path):
    family, base, ad = adapter("llama-embedding-modules_to_save-patterns")
    base_id, ad_id = hub.new_repo_id("llama-base"), hub.new_repo_id("llama-lora")
    _seed(hub, base_id, base)
    _seed(hub, ad_id, ad)
    # modules_to_save: the header-only Hub base fetches the shard holding lm_head when asked
    out = scale_adapter(base_id, ad_id, tmp_path / "adapter", alpha=ALPHA, beta=BETA)
    merger = LinesMerger.from_pretrained(base_id, [ad_id], alpha=ALPHA, beta=BETA)
    model = merger.save_pretrained(tmp_path / "model", output="model", progress=False)
    local = LinesMerger.from_pretrained(base, [ad], alpha=ALPHA, beta=BETA).state_dict()
    assert_close_dict(load_folder(model), local)
    theta0 = load_folder(base)
    merged = tiny_adapters.peft_merged(family, base, out)
    assert_close_dict({k: merged[k] for k in theta0}, local)


# ----------------------------------------------------------------------- CLI
def test_cli_scale_adapter_defaults_to_adapter(adapter, tmp_path, capsys):
    family, base, ad = adapter("mistral-layers_to_transform")
    out = tmp_path / "cli-adapter"
    assert main(["scale", str(base), str(ad), "-o", str(out), "--alpha", "0.2", "--beta", "0.7", "-q"]) == 0
    assert "wrote adapter" in capsys.readouterr().out
    assert (out / "adapter_config.json").exists() and not (out / "config.json").exists()
    expected = LinesMerger.from_pretrained(base, [ad], alpha=0.2, beta=0.7).state_dict()
    theta0 = load_folder(base)
    merged = tiny_adapters.peft_merged(family, base, out)
    assert_close_dict({k: merged[k] for k in theta0}, expected)

    model = tmp_path / "cli-model"
    assert main(["scale", str(base), str(ad), "-o", str(model), "--alpha", "0.2", "--beta", "0.7", "-q",
                 "--output-format", "model"]) == 0
    assert_close_dict(load_folder(model), expected)


def test_cli_adapter_output_needs_an_adapter(family_models, tmp_path, capsys):
    base, (ft,) = family_models("llama")
    rc = main(["scale", str(base), str(ft), "-o", str(tmp_path / "o"), "--alpha", "0.2", "--beta", "0.7", "-q",
               "--output-format", "adapter"])
    assert rc == 2
    assert "not a PEFT adapter" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_merge_recipe_of_adapters(adapter, tmp_path, capsys):
    import yaml

    a1 = adapter("llama-embedding-modules_to_save-patterns")
    a2 = adapter("llama-2", family="llama", seed=2, r=3, lora_alpha=5, use_rslora=True,
                 target_modules=["q_proj", "k_proj", "gate_proj"], layers_to_transform=[1, 2, 3])
    family, base = a1[0], a1[1]
    recipe = {"base_model": str(base), "models": [{"model": str(a1[2]), "weight": 0.6}, str(a2[2])],
              "method": "task_arithmetic", "lines": {"alpha": 0.4, "beta": 0.5}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "merged-adapter"
    assert main(["merge", str(path), "-o", str(out), "-q"]) == 0  # auto: LoRA in, linear method -> adapter out
    assert (out / "adapter_config.json").exists()
    want = LinesMerger.from_pretrained(base, [a1[2], a2[2]], weights=[0.6, 1.0], alpha=0.4, beta=0.5).state_dict()
    theta0 = load_folder(base)
    merged = tiny_adapters.peft_merged(family, base, out)
    assert_close_dict({k: merged[k] for k in theta0}, want)

    recipe["method"] = "ties"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "merged-ties"
    assert main(["merge", str(path), "-o", str(out), "-q"]) == 0  # auto: TIES is not linear -> full model
    assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()
