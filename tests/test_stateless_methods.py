"""A merge method is a configuration: sharing one object between merges never shares what a merge learned."""
from __future__ import annotations

import threading

import pytest
import torch
from safetensors.torch import load_file

from hf_lines import LinesMerger
from hf_lines.errors import RecipeError
from hf_lines.core.methods import get_method

CONFIGS = [("ties", {"density": 0.3}), ("consensus", {"base_method": "ties", "density": 0.3}),
           ("dare_ties", {"density": 0.5}), ("task_arithmetic", {})]


def _save(merger: LinesMerger, folder) -> dict[str, torch.Tensor]:
    merger.save_pretrained(folder, progress=False)
    return load_file(folder / "model.safetensors")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)) for k in a)


@pytest.mark.parametrize("method, options", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_one_method_object_for_two_merges_equals_two_fresh_ones(method, options, family_models, tmp_path):
    first, second = family_models("llama", 3), family_models("mistral", 3)
    shared = get_method(method, **options)
    got = [_save(LinesMerger(*_parts(models, shared)), tmp_path / f"shared{i}") for i, models in enumerate((first, second))]
    fresh = [_save(LinesMerger.from_pretrained(models[0], models[1], method=method, alpha=0.5, beta=0.5, **options),
                   tmp_path / f"fresh{i}") for i, models in enumerate((first, second))]
    assert _same(got[0], fresh[0]) and _same(got[1], fresh[1])
    assert shared.describe() == get_method(method, **options).describe()


def test_merges_in_threads_sharing_one_method(family_models, tmp_path):
    shared = get_method("ties", density=0.3)
    pairs = [family_models("llama", 3), family_models("mistral", 3), family_models("llama", 3, torch.bfloat16)]
    results: dict[int, dict[str, torch.Tensor]] = {}

    def run(i: int) -> None:
        results[i] = _save(LinesMerger(*_parts(pairs[i], shared)), tmp_path / f"t{i}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(pairs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, models in enumerate(pairs):
        fresh = _save(LinesMerger.from_pretrained(models[0], models[1], method="ties", density=0.3, alpha=0.5, beta=0.5),
                      tmp_path / f"f{i}")
        assert _same(results[i], fresh), i


def _parts(models, method):
    """LinesMerger's constructor arguments for ``models`` with a given method object."""
    template = LinesMerger.from_pretrained(models[0], models[1], alpha=0.5, beta=0.5)
    return template.base, template.models, template.lines, method, template.layer_map


@pytest.mark.parametrize("method, n", [("task_arithmetic", 1), ("ties", 1), ("soup", 1), ("wise_ft", 1),
                                       ("wise_ft", 3)])
def test_auto_alpha_is_refused_where_it_cancels_the_schedule(method, n, family_models):
    base, fts = family_models("llama", n)
    with pytest.raises(RecipeError, match="alpha = 'auto'"):
        LinesMerger.from_pretrained(base, fts, method=method, alpha="auto", beta=0.5)


def test_auto_alpha_is_refused_in_a_recipe(family_models, tmp_path):
    base, (ft,) = family_models("llama")
    with pytest.raises(RecipeError, match="two or more fine-tuned models"):
        LinesMerger.from_recipe({"base_model": str(base), "models": [str(ft)], "lines": {"alpha": "auto", "beta": 0.5}})
