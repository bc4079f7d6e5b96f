"""Layer maps of tiny saved models: stacks, L, and the lambda of every tensor."""
import json

import pytest
import torch

import tiny_models
from hf_lines import LayerMap, block_scale
from hf_lines.cli import main

ALPHA, BETA = 0.2, 0.7


@pytest.mark.parametrize("family", sorted(tiny_models.FAMILIES))
def test_stacks_and_scales_from_pretrained(family, family_models):
    base, _ = family_models(family)
    expected_stacks = tiny_models.FAMILIES[family][2]
    lm = LayerMap.from_pretrained(base)
    assert {s.prefix: s.num_blocks for s in lm.stacks} == expected_stacks

    model = tiny_models.build(family)
    from_model = LayerMap.from_model(model).params
    shared = set(from_model) & set(lm.params)  # modules also list tied weights the checkpoint omits
    assert {n: from_model[n] for n in shared} == {n: lm.params[n] for n in shared}

    parallel = family == "clip"
    for name, index in lm.params.items():
        stack = next((s for s in expected_stacks if name.startswith(s + ".")), None)
        if stack is None:
            assert index is None, name
            assert lm.scale(name, ALPHA, BETA) == pytest.approx(ALPHA)  # the paper's policy
            continue
        local = int(name[len(stack) + 1 :].split(".")[0])
        # chained stacks: later stacks continue the numbering of earlier ones
        earlier = [p for p in expected_stacks if p != stack][:1] if not parallel else []
        offset = 0
        if earlier and list(expected_stacks).index(stack) > 0:
            offset = sum(expected_stacks[p] for p in earlier)
        L = expected_stacks[stack] if parallel else sum(expected_stacks.values())
        assert index == offset + local, name
        assert lm.scale(name, ALPHA, BETA) == pytest.approx(ALPHA + BETA * (offset + local) / (L - 1)), name


def test_meta_device_model_maps_without_weights():
    from accelerate import init_empty_weights

    config = tiny_models.FAMILIES["llama"][0]()
    with init_empty_weights():
        model = tiny_models.FAMILIES["llama"][1](config)
    lm = LayerMap.from_model(model)
    assert lm.num_blocks == 4
    assert lm.params["model.layers.3.mlp.down_proj.weight"] == 3
    assert lm.params["lm_head.weight"] is None


def test_t5_chain_and_separate(family_models):
    base, _ = family_models("t5")
    chain = LayerMap.from_pretrained(base)
    assert chain.num_blocks == 5
    assert chain.params["encoder.block.2.layer.1.DenseReluDense.wi.weight"] == 2
    assert chain.params["decoder.block.0.layer.0.SelfAttention.q.weight"] == 3
    sep = LayerMap.from_pretrained(base, stacks="separate")
    assert sorted(t.num_blocks for t in sep.towers) == [2, 3]
    assert sep.params["decoder.block.1.layer.0.SelfAttention.q.weight"] == 1
    name = "decoder.block.1.layer.0.SelfAttention.q.weight"
    assert sep.scale(name, ALPHA, BETA) == pytest.approx(ALPHA + BETA)  # last of its own 2 blocks


def test_clip_towers_are_parallel(family_models):
    base, _ = family_models("clip")
    lm = LayerMap.from_pretrained(base)
    assert sorted(t.num_blocks for t in lm.towers) == [2, 4]
    assert lm.num_blocks == 4
    assert lm.scale("text_model.encoder.layers.1.mlp.fc1.weight", ALPHA, BETA) == pytest.approx(ALPHA + BETA)
    assert lm.scale("vision_model.encoder.layers.1.mlp.fc1.weight", ALPHA, BETA) == pytest.approx(ALPHA + BETA / 3)


def test_depth_policy(family_models):
    base, _ = family_models("llama")
    lm = LayerMap.from_pretrained(base)
    first, last = block_scale(0, 4, ALPHA, BETA), block_scale(3, 4, ALPHA, BETA)
    assert lm.scale("model.embed_tokens.weight", ALPHA, BETA, "depth") == pytest.approx(first)
    assert lm.scale("model.norm.weight", ALPHA, BETA, "depth") == pytest.approx(last)
    assert lm.scale("lm_head.weight", ALPHA, BETA, "depth") == pytest.approx(last)
    t5, _ = family_models("t5")
    lm = LayerMap.from_pretrained(t5)
    # the encoder's final norm sits after encoder block 2 (of 5 chained)
    assert lm.scale("encoder.final_layer_norm.weight", ALPHA, BETA, "depth") == pytest.approx(block_scale(2, 5, ALPHA, BETA))
    assert lm.scale("shared.weight", ALPHA, BETA, "depth") == pytest.approx(ALPHA)
    with pytest.raises(ValueError):
        lm.scale("shared.weight", ALPHA, BETA, "nope")


def test_cli_layers_json(family_models, capsys):
    base, _ = family_models("gpt2")
    assert main(["layers", str(base), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["num_blocks"] == 6
    assert data["params"]["transformer.h.5.attn.c_attn.weight"] == 5
    assert data["params"]["transformer.wte.weight"] is None
    assert main(["layers", str(base), "--alpha", "0.1", "--beta", "0.9"]) == 0
    table = capsys.readouterr().out
    assert "transformer.h" in table and "lambda" in table
