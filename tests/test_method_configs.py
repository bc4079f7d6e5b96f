"""A merge method is a frozen config dataclass: validated, serialisable, hashable, and safe to reuse."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hf_lines import LinesMerger
from hf_lines.core.methods import METHODS, get_method
from hf_lines.core.methods.dare import DareOptions
from hf_lines.errors import OptionError, RecipeError
from hf_lines.pipeline.recipe import Recipe

CANONICAL = sorted({cls.name for cls in METHODS.values()})
# One set of options per method that differs from its defaults in every field it can.
SAMPLES = {
    "task_arithmetic": {"dare": {"drop_rate": 0.5, "seed": 3}},
    "mean": {"dare": True},
    "dare_linear": {"dare": None},
    "soup": {"dare": {"drop_rate": 0.2}},
    "wise_ft": {"gamma": 0.3, "dare": True},
    "ties": {"density": 0.5, "trim": "per_tensor", "aggregate": "sum", "zero_sign": "tensor", "dare": True},
    "dare_ties": {"density": 0.4, "dare": {"drop_rate": 0.7, "seed": 1}},
    "consensus": {"k": 1, "lam": [0.3, 0.5], "base_method": "ties", "density": 0.3, "aggregate": "mean"},
}
TIES_LIKE = [("ties", {}), ("dare_ties", {}), ("consensus", {"base_method": "ties"})]
INVALID = [
    *[(name, {**base, "density": value}, "density") for name, base in TIES_LIKE for value in (0, 1.5, "x", True)],
    *[(name, {**base, option: "bogus"}, option) for name, base in TIES_LIKE
      for option in ("trim", "aggregate", "zero_sign")],
    *[(name, {"dare": {"drop_rate": rate}}, "drop_rate") for name in CANONICAL for rate in (1.0, -0.1)],
    *[(name, {"dare": {"seed": 1, "p": 0.5}}, r"\['drop_rate', 'seed'\]") for name in ("ties", "task_arithmetic")],
    ("wise_ft", {"gamma": "x"}, "gamma"), ("wise_ft", {"gamma": True}, "gamma"),
    ("consensus", {"k": -1}, "k"), ("consensus", {"k": 1.5}, "k"), ("consensus", {"lam": -0.1}, "lam"),
    ("consensus", {"lam": []}, "lam"), ("consensus", {"base_method": "soup"}, "base_method"),
    ("consensus", {"density": 0.3}, "only with base_method: ties"),
]


def test_every_method_is_a_frozen_dataclass_whose_fields_are_its_options():
    for name, cls in METHODS.items():
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, name
        method = get_method(name)
        assert list(method.options) == [f for f in cls.option_names() if f in method.options], name
        assert method.describe() == {"method": cls.name, **method.to_dict()} and method.options == method.to_dict()


@pytest.mark.parametrize("name", CANONICAL)
@pytest.mark.parametrize("sample", [False, True], ids=["defaults", "sample"])
def test_config_round_trips_through_plain_data(name, sample):
    config = get_method(name, **(SAMPLES[name] if sample else {}))
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data and yaml.safe_load(yaml.safe_dump(data)) == data  # plain data
    again = type(config).from_dict(data)
    assert again == config and hash(again) == hash(config) and again.to_dict() == data


@pytest.mark.parametrize("name", sorted(METHODS))
def test_unknown_option_is_refused_listing_the_fields(name):
    cls = METHODS[name]
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    with pytest.raises(OptionError, match=re.escape(f"no option(s) ['densty']; its options are {valid}")):
        get_method(name, densty=0.3)
    with pytest.raises(RecipeError, match=re.escape(f"recipe.method_options: merge method {cls.name!r} has no option(s)")):
        Recipe.from_dict({"base_model": "b", "models": ["m"], "method": name, "method_options": {"densty": 0.3}})


@pytest.mark.parametrize("name, options, message", INVALID, ids=[f"{n}-{o}" for n, o, _ in INVALID])
def test_invalid_values_are_refused_naming_the_option(name, options, message):
    with pytest.raises(OptionError, match=message):
        get_method(name, **options)
    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict({"base_model": "b", "models": ["m"], "method": name, "method_options": options})


def test_values_are_normalised():
    assert get_method("ties", trim="per_tensor") == get_method("ties", trim="tensor")
    assert get_method("ties", density=1).density == 1.0 and isinstance(get_method("ties", density=1).density, float)
    assert get_method("ties", dare=True).dare == DareOptions() and get_method("dare_ties", dare=False).dare is None
    assert get_method("dare_linear").dare == DareOptions() and get_method("task_arithmetic").dare is None
    assert get_method("dare_ties").density == 1.0 and get_method("wise_ft").gamma == 0.5
    consensus = get_method("consensus", base_method="ties", lam=[1, 2])
    assert consensus.lam == (1.0, 2.0) and consensus.to_dict()["lam"] == [1.0, 2.0]
    assert (consensus.aggregate, consensus.density) == ("sum", 0.2)  # the authors' aggregate, ties' density
    assert get_method("consensus", base_method="sum") == get_method("consensus")


@pytest.mark.parametrize("name", CANONICAL)
def test_configs_are_frozen_and_replace_validates(name):
    config = get_method(name)
    option = type(config).option_names()[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, option, getattr(config, option))
    if name in ("ties", "dare_ties"):
        assert dataclasses.replace(config, density=0.5) == get_method(name, density=0.5)
        with pytest.raises(OptionError, match="density"):
            dataclasses.replace(config, density=0)
    assert dataclasses.replace(config) == config


def test_configs_are_hashable_and_compare_by_value():
    configs = [get_method(name, **options) for name in CANONICAL for options in ({}, SAMPLES[name])]
    again = [get_method(name, **options) for name in CANONICAL for options in ({}, SAMPLES[name])]
    assert configs == again and len(set(configs) | set(again)) == len(configs)
    assert get_method("ties_merging") == get_method("ties") != get_method("dare_ties", density=0.2, dare=None)
    assert get_method("sum") == get_method("task_arithmetic") != get_method("mean")


def _save(merger: LinesMerger, folder) -> dict[str, torch.Tensor]:
    merger.save_pretrained(folder, progress=False)
    return load_file(folder / "model.safetensors")


@pytest.mark.parametrize("name", CANONICAL)
def test_one_config_for_two_merges_equals_two_fresh_ones(name, family_models, tmp_path):
    """Every method, with its sample options, reused for merges of two model families: byte-identical outputs."""
    options = SAMPLES[name]
    shared = get_method(name, **options)
    for i, family in enumerate(("llama", "mistral")):
        base, fts = family_models(family, 2)
        template = LinesMerger.from_pretrained(base, fts, alpha=0.5, beta=0.5)
        reused = _save(LinesMerger(template.base, template.models, template.lines, shared, template.layer_map),
                       tmp_path / f"shared{i}")
        fresh = _save(LinesMerger.from_pretrained(base, fts, method=name, alpha=0.5, beta=0.5, **options),
                      tmp_path / f"fresh{i}")
        assert reused.keys() == fresh.keys()
        assert all(torch.equal(reused[k].view(torch.uint8), fresh[k].view(torch.uint8)) for k in fresh), family
    assert shared == get_method(name, **options)
