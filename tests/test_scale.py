"""The LiNeS edit: output = base + lambda * tau, tensor by tensor, to dtype tolerance."""
import json

import pytest
import torch
import transformers

import tiny_models
from conftest import folder_digest
from hf_lines import LinesMerger
from hf_lines.cli import main
from reference import assert_close_dict, lines_reference, load_folder

ALPHA, BETA = 0.25, 0.6


@pytest.mark.parametrize("family", sorted(tiny_models.FAMILIES))
def test_edit_matches_reference_and_loads(family, family_models, tmp_path):
    base, (ft,) = family_models(family)
    before = folder_digest(base), folder_digest(ft)
    merger = LinesMerger.from_pretrained(base, [ft], alpha=ALPHA, beta=BETA)
    out = merger.save_pretrained(tmp_path / "out", progress=False)

    scales = merger.scales()
    expected = lines_reference(load_folder(base), [load_folder(ft)], [1.0], scales)
    assert_close_dict(load_folder(out), expected)
    assert (folder_digest(base), folder_digest(ft)) == before  # inputs untouched

    cls = tiny_models.FAMILIES[family][1]
    model = cls.from_pretrained(out)
    assert isinstance(model, transformers.PreTrainedModel)
    assert (out / "config.json").exists()
    record = json.loads((out / "hf_lines.json").read_text())
    assert record["lines"]["alpha"] == ALPHA and record["method"]["method"] == "task_arithmetic"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_float32_accurate(dtype, family_models, tmp_path):
    base, (ft,) = family_models("llama", dtype=dtype)
    merger = LinesMerger.from_pretrained(base, [ft], alpha=0.1, beta=0.8)
    out = merger.save_pretrained(tmp_path / "out", progress=False)
    got = load_folder(out)
    expected = lines_reference(load_folder(base), [load_folder(ft)], [1.0], merger.scales())
    for n, e in expected.items():
        assert got[n].dtype == dtype
        # at most one rounding step in the output dtype away from the float64 result
        ulp = torch.finfo(dtype).eps * e.double().abs().clamp_min(torch.finfo(dtype).tiny)
        assert ((got[n].double() - e.double()).abs() <= ulp + 1e-12).all(), n


def test_sharded_in_and_out(family_models, tmp_path):
    base, (ft,) = family_models("qwen2", max_shard_size="20KB")
    assert (base / "model.safetensors.index.json").exists()
    merger = LinesMerger.from_pretrained(base, [ft], alpha=ALPHA, beta=BETA)
    out = merger.save_pretrained(tmp_path / "out", max_shard_size="30KB", progress=False)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert set(index["weight_map"]) == set(load_folder(base))
    expected = lines_reference(load_folder(base), [load_folder(ft)], [1.0], merger.scales())
    assert_close_dict(load_folder(out), expected)
    transformers.Qwen2ForCausalLM.from_pretrained(out)


def test_bin_input(family_models, tmp_path):
    base, (ft,) = family_models("gpt2")
    for src, name in ((base, "base-bin"), (ft, "ft-bin")):
        dst = tmp_path / name
        dst.mkdir()
        torch.save(load_folder(src), dst / "pytorch_model.bin")
        (dst / "config.json").write_text((src / "config.json").read_text())
    merger = LinesMerger.from_pretrained(tmp_path / "base-bin", [tmp_path / "ft-bin"], alpha=ALPHA, beta=BETA)
    out = merger.save_pretrained(tmp_path / "out", progress=False)
    expected = lines_reference(load_folder(base), [load_folder(ft)], [1.0], merger.scales())
    assert_close_dict(load_folder(out), expected)


def test_support_files_are_copied(family_models, tmp_path):
    base, (ft,) = family_models("llama")
    (base / "tokenizer_config.json").write_text("{}")
    try:
        out = LinesMerger.from_pretrained(base, [ft], alpha=0.5, beta=0.5).save_pretrained(tmp_path / "o", progress=False)
        names = {p.name for p in out.iterdir()}
        assert {"config.json", "generation_config.json", "tokenizer_config.json", "model.safetensors"} <= names
    finally:
        (base / "tokenizer_config.json").unlink()


def test_in_memory_paths_agree(family_models, tmp_path):
    base, (ft,) = family_models("mistral")
    merger = LinesMerger.from_pretrained(base, [ft], alpha=ALPHA, beta=BETA)
    sd = merger.state_dict()
    model = merger.to_model()
    own = model.state_dict()
    for n, t in sd.items():
        torch.testing.assert_close(own[n], t, rtol=0, atol=0)
    out = merger.save_pretrained(tmp_path / "out", progress=False)
    assert_close_dict(load_folder(out), sd)


def test_scales_cover_every_tensor(family_models):
    base, (ft,) = family_models("gpt2")
    merger = LinesMerger.from_pretrained(base, [ft], alpha=0.1, beta=0.9)
    scales = merger.scales()
    assert set(scales) == set(load_folder(base))
    assert scales["transformer.h.0.mlp.c_fc.weight"] == pytest.approx(0.1)
    assert scales["transformer.h.5.mlp.c_fc.weight"] == pytest.approx(1.0)
    assert scales["transformer.wte.weight"] == pytest.approx(0.1)


def test_cli_scale(family_models, tmp_path, capsys):
    base, (ft,) = family_models("llama")
    out = tmp_path / "cli-out"
    rc = main(["scale", str(base), str(ft), "-o", str(out), "--alpha", "0.3", "--beta", "0.4", "-q"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "lambda" in printed and str(out) in printed
    merger = LinesMerger.from_pretrained(base, [ft], alpha=0.3, beta=0.4)
    assert_close_dict(load_folder(out), merger.state_dict())


@pytest.mark.parametrize("options", [
    dict(workers=1),
    dict(workers=3, memory_budget=1),  # a budget below every tensor: one tensor in flight at a time
    dict(device="auto"),  # accelerate's choice: the CPU here, a GPU where there is one
    dict(device="cpu", memory_budget=10**12),
])
def test_run_options_do_not_change_bytes(options, family_models, tmp_path):
    base, (ft,) = family_models("llama", dtype=torch.bfloat16)
    merger = LinesMerger.from_pretrained(base, [ft], alpha=0.2, beta=0.7)
    reference = merger.save_pretrained(tmp_path / "default", progress=False)
    other = merger.save_pretrained(tmp_path / "other", progress=False, **options)
    assert (other / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()


def test_cli_run_options(family_models, tmp_path):
    base, (ft,) = family_models("llama")
    args = ["scale", str(base), str(ft), "-o", str(tmp_path / "o"), "--alpha", "0.3", "--beta", "0.4", "-q",
            "--workers", "1", "--memory-budget", "64KB", "--device", "cpu", "--max-shard-size", "40KB"]
    assert main(args) == 0
    assert (tmp_path / "o" / "model.safetensors.index.json").exists()
    merger = LinesMerger.from_pretrained(base, [ft], alpha=0.3, beta=0.4)
    assert_close_dict(load_folder(tmp_path / "o"), merger.state_dict())
