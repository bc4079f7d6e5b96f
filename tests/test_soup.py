"""Rewarded soups: theta_SFT + lambda(l) * sum_k w_k (theta_k - theta_SFT), full and LoRA, against plain references.

Full outputs are compared with tests/reference.py's float64 formula (one rounding step in the
output dtype). LoRA outputs are loaded by PEFT (``PeftModel.from_pretrained(...).merge_and_unload()``)
and compared with the same formula over the policies as PEFT merges them.
"""
from __future__ import annotations

import json
import warnings

import pytest
import torch

import tiny_adapters
from hf_lines import RewardedSoup
from hf_lines.cli import main
from hf_lines.errors import OutputExistsError
from hf_lines.pipeline.multi_stream import stream_many
from hf_lines.soups import InsufficientDiskError, SoupIndex, parse_lambdas, parse_weights, plan_groups
from hf_lines.soups.weights import output_name, weights_for_lambdas
from reference import assert_close_dict, lines_reference, load_folder

ALPHA, BETA = 0.3, 0.6
LORA_1 = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
LORA_2 = dict(r=2, lora_alpha=3, target_modules=["q_proj", "o_proj"], rank_pattern={"o_proj": 3})


def expected(soup, base, policies, entry):
    """The float64 reference of one soup.json entry."""
    return lines_reference(base, policies, entry["weights"], soup.layer_map.scales(entry["alpha"], entry["beta"]))


def load_folder_adapter(folder):
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def merged(family, base, adapter, keys):
    return {k: v for k, v in tiny_adapters.peft_merged(family, base, adapter).items() if k in keys}


@pytest.fixture(scope="module")
def llama_bf16(family_models):
    base, fts = family_models("llama", n_models=3, dtype=torch.bfloat16)
    return base, fts, load_folder(base), [load_folder(f) for f in fts]


@pytest.fixture(scope="module")
def lora_set(family_models, tmp_path_factory):
    """A float32 tiny LLaMA, two LoRA policies on it, and an SFT adapter with two policies over the merged SFT."""
    from peft import PeftModel

    base, _ = family_models("llama")
    root = tmp_path_factory.mktemp("soup-lora")
    p1 = tiny_adapters.make_adapter("llama", base, root / "p1", seed=1, **LORA_1)
    p2 = tiny_adapters.make_adapter("llama", base, root / "p2", seed=2, **LORA_2)
    sft = tiny_adapters.make_adapter("llama", base, root / "sft", seed=3, r=4, lora_alpha=4,
                                     target_modules=["q_proj", "k_proj", "up_proj"])
    sft_merged = root / "sft-merged"  # what the policies were trained on
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        PeftModel.from_pretrained(tiny_adapters.load_base("llama", base), sft).merge_and_unload().save_pretrained(sft_merged)
    q1 = tiny_adapters.make_adapter("llama", sft_merged, root / "q1", seed=11, **LORA_1)
    q2 = tiny_adapters.make_adapter("llama", sft_merged, root / "q2", seed=12, **LORA_2)
    return dict(base=base, p1=p1, p2=p2, sft=sft, sft_merged=sft_merged, q1=q1, q2=q2)


# ------------------------------------------------------------------------------------------ sweep specs
def test_lambdas_weights_and_names():
    assert parse_lambdas("0:1:11") == parse_lambdas("0,0.1,...,1") == [i / 10 for i in range(11)]
    assert parse_lambdas("0, 0.25 ,1") == [0.0, 0.25, 1.0] and parse_lambdas([0.5]) == [0.5]
    assert weights_for_lambdas([0.3], 2) == [(0.3, 0.7)] and weights_for_lambdas([0.3], 1) == [(0.3,)]
    assert parse_weights("0.2,0.3,0.5; 0.5,0.5,0", 3) == [(0.2, 0.3, 0.5), (0.5, 0.5, 0.0)]
    assert [output_name(w) for w in [(0.3, 0.7), (1 / 3, 2 / 3), (0.2, 0.3, 0.5)]] == ["lam0.30", "lam0.333333", "w0.20-0.30-0.50"]
    for bad, message in [("0:1:0", "at least 1"), ("0,x", "not a number"), ("0,0.3,...,1", "whole number"),
                         ("0,0,1", "repeats"), ("0,...,1", "first,second")]:
        with pytest.raises(ValueError, match=message):
            parse_lambdas(bad)
    with pytest.raises(ValueError, match="3 policies"):
        parse_weights("0.5,0.5", 3)
    with pytest.raises(ValueError, match="give weight vectors"):
        weights_for_lambdas([0.5], 3)


def test_disk_plan():
    gb = 10**9
    assert plan_groups(4, gb, 10 * gb, reserve=gb) == [[0, 1, 2, 3]]  # everything fits: one read pass
    with pytest.raises(InsufficientDiskError, match="--discard-models"):
        plan_groups(4, gb, 4 * gb, reserve=gb)  # kept outputs must all fit
    assert plan_groups(5, gb, 3 * gb + 1, keep=False, reserve=gb) == [[0, 1], [2, 3], [4]]  # consumed: groups that fit
    assert plan_groups(3, gb, 10 * gb, passes="per_output", reserve=gb) == [[0], [1], [2]]
    with pytest.raises(InsufficientDiskError, match="one output"):
        plan_groups(2, gb, gb, keep=False, reserve=gb // 2)


def test_stream_many_reads_each_tensor_once_with_bounded_inputs(monkeypatch):
    from hf_lines.pipeline import multi_stream
    reads, live, outs, made = [], [], [[] for _ in range(5)], []
    real_init = multi_stream.SharedReads.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(multi_stream.SharedReads, "__init__", spy)
    order = [f"t{i}" for i in range(12)]

    def read(name):
        reads.append(name)
        live.append(made[0].live)
        return torch.full((3,), float(len(reads)))

    stream_many(order, read, lambda k, n, x: x + k, [lambda n, t, k=k: outs[k].append((n, t)) for k in range(5)],
                workers=2, progress=False)
    assert sorted(reads) == sorted(order)  # one read per tensor for all five outputs
    assert max(live) <= 2  # the inputs of at most two tensors are held at once
    for k in range(5):
        assert [n for n, _ in outs[k]] == order
        assert all(float(t[0]) == reads.index(n) + 1 + k for n, t in outs[k])


# ------------------------------------------------------------------------------------------ full policies
def test_full_sweep_matches_reference(llama_bf16, tmp_path):
    base, fts, theta0, thetas = llama_bf16
    soup = RewardedSoup.from_pretrained(base, fts[:2], alpha=ALPHA, beta=BETA)
    index = soup.save_pretrained(tmp_path / "soup", lambdas="0:1:3", include_plain=True, progress=False)
    names = [o["name"] for o in index.outputs]
    assert names == ["lam0.00", "lam0.50", "lam1.00", "plain-lam0.00", "plain-lam0.50", "plain-lam1.00"]
    assert {o["variant"] for o in index.outputs} == {"lines", "plain"} and {o["format"] for o in index.outputs} == {"model"}
    for entry in index.outputs:
        got = load_folder(tmp_path / "soup" / entry["name"])
        assert all(t.dtype == torch.bfloat16 for t in got.values())
        assert_close_dict(got, expected(soup, theta0, thetas[:2], entry))
        folder = tmp_path / "soup" / entry["name"]
        assert {"README.md", "config.json", "hf_lines.json", "hf_lines_recipe.yaml", "hf_lines_soup.yaml",
                "lines_schedule.png"} <= {p.name for p in folder.iterdir()}
        record = json.loads((folder / "hf_lines.json").read_text())
        assert record["soup"]["weights"] == entry["weights"] and record["lines"]["alpha"] == entry["alpha"]
    in_memory = soup.state_dict(0.5)  # the same kernel in memory: the same values
    assert all(torch.equal(t, in_memory[n]) for n, t in load_folder(tmp_path / "soup" / "lam0.50").items())
    # the plain soup at lam = 1 is policy 1 itself, and at lam = 0 policy 2 (one rounding step at most: none here)
    assert_close_dict(load_folder(tmp_path / "soup" / "plain-lam1.00"), thetas[0])
    card = (tmp_path / "soup" / "lam0.50" / "README.md").read_text()
    assert "rewarded-soup" in card and "hf-lines soup" in card and "‖tau‖ before" in card
    saved = SoupIndex.load(tmp_path / "soup")
    assert saved.info["lines"]["beta"] == BETA and len(saved.outputs) == 6


def test_one_read_pass_per_group_and_byte_identical_to_merge(llama_bf16, tmp_path, monkeypatch):
    from hf_lines.io import Checkpoint

    base, fts, *_ = llama_bf16
    reads: list[str] = []
    real_get = Checkpoint.get
    monkeypatch.setattr(Checkpoint, "get", lambda self, name: reads.append(name) or real_get(self, name))
    soup = RewardedSoup.from_pretrained(base, fts[:2], alpha=ALPHA, beta=BETA)
    n_tensors = len(soup.inputs.infos())
    soup.save_pretrained(tmp_path / "one", lambdas="0.2,0.5,0.9", progress=False, norms=False)
    assert len(reads) == 3 * n_tensors  # SFT and both policies read once for the three outputs
    reads.clear()
    soup.save_pretrained(tmp_path / "per", lambdas="0.2,0.5,0.9", progress=False, passes="per_output")
    assert len(reads) == 9 * n_tensors
    monkeypatch.setattr(Checkpoint, "get", real_get)
    for name in ("lam0.20", "lam0.50", "lam0.90"):
        a, b = (tmp_path / d / name / "model.safetensors" for d in ("one", "per"))
        assert a.read_bytes() == b.read_bytes()
    # the merge recipe beside an output makes the same bytes with `hf-lines merge`
    assert main(["merge", str(tmp_path / "one" / "lam0.50" / "hf_lines_recipe.yaml"), "-o", str(tmp_path / "m"), "-q"]) == 0
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == (tmp_path / "one" / "lam0.50" / "model.safetensors").read_bytes()
    # and so does the soup recipe with `hf-lines soup --recipe`
    assert main(["soup", "--recipe", str(tmp_path / "one" / "lam0.90" / "hf_lines_soup.yaml"), "-o", str(tmp_path / "r"), "-q"]) == 0
    assert (tmp_path / "r" / "lam0.90" / "model.safetensors").read_bytes() == \
        (tmp_path / "one" / "lam0.90" / "model.safetensors").read_bytes()


def bit_differences(actual: dict, expected: dict) -> dict[str, int]:
    """Tensor name -> how many of its values differ in their bits, for the tensors that differ."""
    assert set(actual) == set(expected)
    out = {}
    for n, a in actual.items():
        b = expected[n]
        assert a.dtype == b.dtype and a.shape == b.shape, n
        count = int((a.reshape(-1).view(torch.uint8).reshape(a.numel(), -1)
                     != b.reshape(-1).view(torch.uint8).reshape(b.numel(), -1)).any(1).sum())
        if count:
            out[n] = count
    return out


@pytest.mark.parametrize("inputs", ["full", "adapter_policies", "adapter_sft"])
def test_soup_equals_merge_of_its_recipe(inputs, llama_bf16, lora_set, tmp_path):
    """Every soup output is the merge its recipe describes, byte for byte, on the kernel or the torch path."""
    from safetensors.torch import save_file

    from hf_lines import LinesMerger

    lambdas = "0,0.3,0.7,1"
    if inputs == "full":  # bfloat16 SFT and policies
        base, fts, *_ = llama_bf16
        soup = RewardedSoup.from_pretrained(base, fts[:2], alpha=ALPHA, beta=BETA)
    elif inputs == "adapter_policies":  # float32 SFT, LoRA policies over it, full-model outputs
        soup = RewardedSoup.from_pretrained(lora_set["base"], [lora_set["p1"], lora_set["p2"]], alpha=ALPHA, beta=BETA)
    else:  # an SFT adapter on a base, LoRA policies over the merged SFT
        soup = RewardedSoup.from_pretrained(lora_set["sft"], [lora_set["q1"], lora_set["q2"]], alpha=ALPHA, beta=BETA,
                                            sft_base=lora_set["base"])
    index = soup.save_pretrained(tmp_path / "s", lambdas=lambdas, output="model", progress=False, norms=False)
    if inputs == "adapter_sft":
        # a merge recipe cannot name base + SFT adapter as its base: the merge runs on theta_SFT as the soup reads it
        sft_full = tmp_path / "sft-full"
        sft_full.mkdir()
        (sft_full / "config.json").write_bytes((lora_set["base"] / "config.json").read_bytes())
        reader = soup.inputs.sft_checkpoint
        save_file({n: reader.get(n).contiguous() for n in reader.names()}, sft_full / "model.safetensors")
    for entry in index.outputs:
        folder = tmp_path / "s" / entry["name"]
        if inputs == "adapter_sft":
            assert not (folder / "hf_lines_recipe.yaml").exists()
            merger = LinesMerger.from_pretrained(sft_full, [lora_set["q1"], lora_set["q2"]], weights=entry["weights"],
                                                 alpha=entry["alpha"], beta=entry["beta"])
        else:
            merger = LinesMerger.from_recipe(folder / "hf_lines_recipe.yaml")
        assert bit_differences(load_folder(folder), merger.state_dict()) == {}, entry["name"]
    assert [o["name"] for o in index.outputs] == ["lam0.00", "lam0.30", "lam0.70", "lam1.00"]


def test_three_policies_weight_vectors(llama_bf16, tmp_path):
    base, fts, theta0, thetas = llama_bf16
    soup = RewardedSoup.from_pretrained(base, fts, alpha=0.2, beta=0.8, policy="depth")
    index = soup.save_pretrained(tmp_path / "s", weights="0.2,0.3,0.5;1,0,0", progress=False)
    assert [o["name"] for o in index.outputs] == ["w0.20-0.30-0.50", "w1.00-0.00-0.00"]
    for entry in index.outputs:
        scales = soup.layer_map.scales(0.2, 0.8, "depth")
        assert_close_dict(load_folder(tmp_path / "s" / entry["name"]), lines_reference(theta0, thetas, entry["weights"], scales))
    with pytest.raises(ValueError, match="weight vectors"):
        soup.outputs(lambdas="0:1:3")


def test_disk_too_small_is_refused_before_writing_and_discard_mode_runs_in_groups(llama_bf16, tmp_path, monkeypatch):
    import hf_lines.soups.soup as soup_module

    base, fts, theta0, thetas = llama_bf16
    soup = RewardedSoup.from_pretrained(base, fts[:2])  # no alpha/beta: the plain rewarded soup
    size = sum(i.nbytes for i in soup.inputs.infos().values())
    monkeypatch.setattr(soup_module, "free_bytes", lambda folder: 2 * size + 100)
    with pytest.raises(InsufficientDiskError, match="3 outputs"):
        soup.save_pretrained(tmp_path / "s", lambdas="0:1:3", progress=False, disk_reserve=0)
    assert not (tmp_path / "s" / "lam0.00").exists()
    seen = []

    def consume(entry):  # e.g. evaluate, then the output is deleted
        got = load_folder(entry["path"])
        assert_close_dict(got, expected(soup, theta0, thetas[:2], entry))
        seen.append(entry["name"])

    index = soup.save_pretrained(tmp_path / "s", lambdas="0:1:3", progress=False, keep=False, on_output=consume, disk_reserve=0)
    assert seen == ["lam0.00", "lam0.50", "lam1.00"]
    assert not any((tmp_path / "s" / n).exists() for n in seen)
    assert [o["kept"] for o in index.outputs] == [False] * 3
    (tmp_path / "x" / "lam0.50").mkdir(parents=True)
    with pytest.raises(OutputExistsError, match="lam0.50"):
        soup.save_pretrained(tmp_path / "x", lambdas="0.5", progress=False)


# ------------------------------------------------------------------------------------------ LoRA policies
def test_lora_policies_give_exact_lora_outputs(lora_set, tmp_path, monkeypatch):
    from hf_lines.io import Checkpoint

    base, p1, p2 = lora_set["base"], lora_set["p1"], lora_set["p2"]
    theta0 = load_folder(base)
    monkeypatch.setattr(Checkpoint, "get", lambda self, name: pytest.fail(f"read base tensor {name}"))
    soup = RewardedSoup.from_pretrained(base, [p1, p2], alpha=ALPHA, beta=BETA)
    index = soup.save_pretrained(tmp_path / "s", lambdas="0:1:3", include_plain=True, progress=False)
    monkeypatch.undo()
    assert {o["format"] for o in index.outputs} == {"adapter"} and index.info["load_on"] == str(base.resolve())
    policies = [merged("llama", base, p, theta0) for p in (p1, p2)]
    for entry in index.outputs:
        out = tmp_path / "s" / entry["name"]
        config = json.loads((out / "adapter_config.json").read_text())
        assert config["lora_alpha"] == config["r"] and config["alpha_pattern"] == config["rank_pattern"]  # scale 1
        shapes = {k: tuple(v.shape) for k, v in load_folder_adapter(out).items()}
        assert shapes["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"][0] == 6  # rank 4 + 2
        assert_close_dict(merged("llama", base, out, theta0), expected(soup, theta0, policies, entry))
    # the same soup as full models equals the adapters merged by PEFT
    full = soup.save_pretrained(tmp_path / "f", lambdas="0.5", output="model", progress=False)
    assert_close_dict(load_folder(tmp_path / "f" / "lam0.50"), expected(soup, theta0, policies, full.outputs[0]))


def test_adapter_sft_with_policies_over_the_merged_sft(lora_set, tmp_path):
    base, sft, sft_merged = lora_set["base"], lora_set["sft"], lora_set["sft_merged"]
    theta0 = load_folder(base)
    theta_sft = {k: v for k, v in load_folder(sft_merged).items() if k in theta0}
    policies = [merged("llama", sft_merged, lora_set[q], theta0) for q in ("q1", "q2")]
    soup = RewardedSoup.from_pretrained(sft, [lora_set["q1"], lora_set["q2"]], alpha=ALPHA, beta=BETA, sft_base=base)
    index = soup.save_pretrained(tmp_path / "s", lambdas="0,0.3,1", progress=False)
    assert index.info["load_on"] == str(base.resolve())  # the stacked adapter loads on the base
    for entry in index.outputs:
        # PEFT loads the output on the *base*: SFT update (unscaled) + LiNeS-scaled interpolation of the policies
        got = merged("llama", base, tmp_path / "s" / entry["name"], theta0)
        assert_close_dict(got, expected(soup, theta_sft, policies, entry))
    assert not (tmp_path / "s" / "lam0.30" / "hf_lines_recipe.yaml").exists()  # a merge recipe cannot say it
    assert main(["soup", "--recipe", str(tmp_path / "s" / "lam0.30" / "hf_lines_soup.yaml"), "-o", str(tmp_path / "r"), "-q"]) == 0
    assert (tmp_path / "r" / "lam0.30" / "adapter_model.safetensors").read_bytes() == \
        (tmp_path / "s" / "lam0.30" / "adapter_model.safetensors").read_bytes()
    full = soup.save_pretrained(tmp_path / "m", lambdas="0.3", output="model", progress=False)
    out = tmp_path / "m" / "lam0.30"
    assert_close_dict(load_folder(out), expected(soup, theta_sft, policies, full.outputs[0]))
    assert not (out / "adapter_config.json").exists() and (out / "config.json").exists()


def test_mixed_full_and_lora_policies_stream_full_models(lora_set, family_models, tmp_path):
    base, (ft,) = family_models("llama")
    theta0 = load_folder(base)
    soup = RewardedSoup.from_pretrained(base, [ft, lora_set["p1"]], alpha=ALPHA, beta=BETA)
    assert soup.output_format() == "model"
    index = soup.save_pretrained(tmp_path / "s", lambdas="0.25", progress=False)
    policies = [load_folder(ft), merged("llama", base, lora_set["p1"], theta0)]
    assert_close_dict(load_folder(tmp_path / "s" / "lam0.25"), expected(soup, theta0, policies, index.outputs[0]))


def test_cli_soup(llama_bf16, tmp_path, capsys):
    base, fts, *_ = llama_bf16
    out = tmp_path / "cli"
    assert main(["soup", str(base), str(fts[0]), str(fts[1]), "--lambdas", "0,0.5,...,1", "--alpha", "0.5", "--beta", "0.5",
                 "-o", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "lam0.50" in printed and "soup.json" in printed
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["lam0.00", "lam0.50", "lam1.00"]
    assert main(["soup", str(base), str(fts[0]), str(fts[1]), "--lambdas", "0.5", "--alpha", "0.5", "-o", str(out)]) == 2
    assert "both --alpha and --beta" in capsys.readouterr().err
    assert main(["soup", str(base), str(fts[0]), str(fts[1]), "--lambdas", "0.5", "-o", str(out), "-q"]) == 2  # exists
    assert main(["soup", str(base), str(fts[0]), "-o", str(out)]) == 2  # no sweep given
    assert "--lambdas" in capsys.readouterr().err
