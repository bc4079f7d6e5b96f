"""Merge recipes: schema validation, round trips, the saved recipe, and ``hf-lines merge``."""
import json

import pytest
import torch
import yaml

import merge_reference as ref
from hf_lines import LinesMerger
from hf_lines.cli import main
from hf_lines.errors import LinesError, RecipeError
from hf_lines.pipeline.recipe import RECIPE_FILE, ModelSpec, Recipe
from reference import assert_close_dict, load_folder


def _recipe(base, fts, **extra):
    data = {"base_model": str(base), "models": [{"model": str(f)} for f in fts],
            "method": "ties", "method_options": {"density": 0.2}, "lines": {"alpha": "auto", "beta": 0.5}}
    data.update(extra)
    return data


@pytest.fixture
def llama3(family_models):
    return family_models("llama", 3)


BAD = [
    (lambda d: d.update(methd="ties"), r"recipe\.methd: unknown key; expected one of base_model, models"),
    (lambda d: d["models"][1].update(wieght=2), r"recipe\.models\[1\]\.wieght: unknown key; expected one of model, weight"),
    (lambda d: d["models"][0].update(weight="heavy"), r"recipe\.models\[0\]\.weight: expected a number, got str 'heavy'"),
    (lambda d: d["models"][0].update(weight=True), r"recipe\.models\[0\]\.weight: expected a number, got bool"),
    (lambda d: d["models"][2].pop("model"), r"recipe\.models\[2\]\.model: required"),
    (lambda d: d.update(models=[]), r"recipe\.models: expected a non-empty list"),
    (lambda d: d.pop("models"), r"recipe\.models: required"),
    (lambda d: d.pop("base_model"), r"recipe\.base_model: required"),
    (lambda d: d.update(base_model=3), r"recipe\.base_model: expected a non-empty string, got int 3"),
    (lambda d: d.update(method="tie"), r"recipe\.method: unknown merge method 'tie'; choose one of .*ties"),
    (lambda d: d.update(method=["ties"]), r"recipe\.method: expected a non-empty string, got list"),
    (lambda d: d["method_options"].update(densty=0.3), r"recipe\.method_options: merge method 'ties' has no option\(s\) \['densty'\]"),
    (lambda d: d["method_options"].update(density=2), r"recipe\.method_options: ties option density must be a number in \(0, 1\]"),
    (lambda d: d.update(method_options=[1]), r"recipe\.method_options: expected a mapping"),
    (lambda d: d.update(parameters={"density": 0.3}), r"give method_options or parameters"),
    (lambda d: d["lines"].update(beta="high"), r"recipe\.lines\.beta: expected a number, got str 'high'"),
    (lambda d: d["lines"].update(alpha="sometimes"), r"recipe\.lines\.alpha: expected a number or 'auto'"),
    (lambda d: d["lines"].update(gamma=1), r"recipe\.lines\.gamma: unknown key; expected one of alpha, beta, policy, stacks"),
    (lambda d: d["lines"].update(policy="deep"), r"recipe\.lines\.policy: expected one of paper, depth"),
    (lambda d: d.update(lines=True), r"recipe\.lines: give the schedule"),
    (lambda d: d.update(dtype="int8"), r"recipe\.dtype: expected one of bfloat16, float16, float32"),
    (lambda d: d.update(output={"max_shard_size": 1.5}), r"recipe\.output\.max_shard_size: expected a size"),
    (lambda d: d.update(output={"shard": "1GB"}), r"recipe\.output\.shard: unknown key"),
    (lambda d: d["models"][0].update(model="org/x@v1", revision="v2"), r"recipe\.models\[0\]: the revision is given twice"),
]


@pytest.mark.parametrize("mutate, message", BAD)
def test_validation_names_the_key_path(mutate, message, tmp_path):
    data = _recipe(tmp_path / "base", [tmp_path / f"ft{i}" for i in range(3)])
    mutate(data)
    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict(data)


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_model: [unclosed\n")
    with pytest.raises(RecipeError, match="bad.yaml: not valid YAML"):
        Recipe.load(bad)
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(RecipeError, match="empty"):
        Recipe.load(tmp_path / "empty.yaml")
    with pytest.raises(RecipeError, match="cannot read the recipe"):
        Recipe.load(tmp_path / "missing.yaml")
    assert issubclass(RecipeError, LinesError)


def test_round_trip_and_shorthands(tmp_path):
    data = {"base_model": "org/base@v1", "models": ["./a", {"model": "org/b", "revision": "abc123", "weight": 2}],
            "method": "consensus", "parameters": {"k": 2, "lam": [0.3, 0.5]},
            "lines": {"alpha": 0.2, "beta": 0.8, "policy": "depth"}, "dtype": "bf16", "output": {"max_shard_size": "2GB"}}
    recipe = Recipe.from_dict(data)
    assert recipe.models[0] == ModelSpec("./a", 1.0, None)
    assert recipe.models[1].spec == "org/b@abc123"
    assert recipe.method_options == {"k": 2, "lam": [0.3, 0.5]} and recipe.dtype == "bfloat16"
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert Recipe.from_yaml(recipe.to_yaml(header="a comment")) == recipe
    assert Recipe.load(recipe.save(tmp_path / "r.yaml")) == recipe
    no_lines = Recipe.from_dict({"base_model": "b", "models": ["m"], "lines": False})
    assert no_lines.lines is None and no_lines.to_dict()["lines"] is False
    assert no_lines.merger_kwargs()["alpha"] == 1.0 and no_lines.merger_kwargs()["beta"] == 0.0


def test_benchmark_recipe_shape(llama3, tmp_path):
    """The shape benchmarks/run.py writes: per-tensor TIES with auto alpha."""
    base, fts = llama3
    data = {"base_model": str(base), "models": [{"model": str(m)} for m in fts],
            "lines": {"alpha": "auto", "beta": 0.5}, "method": "ties",
            "method_options": {"density": 0.2, "trim": "per_tensor"}}
    merger = LinesMerger.from_recipe(data)
    direct = LinesMerger.from_pretrained(base, fts, method="ties", trim="tensor", alpha="auto", beta=0.5)
    assert_close_dict(merger.state_dict(), direct.state_dict())
    taus = ref.task_vectors(load_folder(base), [load_folder(f) for f in fts], [1.0] * 3)
    merged = ref.ties(taus, 0.2, "tensor")
    assert merger.lines.alpha == pytest.approx(ref.auto_alpha(taus, merged), rel=1e-6)


def test_saved_recipe_reruns_to_an_identical_output(llama3, tmp_path, monkeypatch):
    base, fts = llama3
    monkeypatch.chdir(tmp_path)
    data = _recipe(base, fts, method="dare_ties", method_options={"dare": {"drop_rate": 0.6, "seed": 5}},
                   output={"max_shard_size": "40KB"})
    first = LinesMerger.from_recipe(data, token="hf_secret_token").save_pretrained(tmp_path / "first", progress=False)
    saved = first / RECIPE_FILE
    text = saved.read_text()
    assert "hf_secret_token" not in text and "token" not in text
    recipe = Recipe.load(saved)
    assert recipe.lines.alpha == "auto" and recipe.method == "dare_ties"
    assert recipe.method_options["dare"] == {"drop_rate": 0.6, "seed": 5}
    assert "alpha: auto resolved to" in text
    record = json.loads((first / "hf_lines.json").read_text())
    assert record["lines"]["alpha_setting"] == "auto" and isinstance(record["lines"]["alpha"], float)
    assert record["lines"]["auto_alpha"]["num_models"] == 3
    assert len(list(first.glob("*.safetensors"))) > 1  # the recipe's max_shard_size was used

    rc = main(["merge", str(saved), "-o", str(tmp_path / "second"), "-q"])
    assert rc == 0
    second = tmp_path / "second"
    shards = sorted(p.name for p in first.glob("*.safetensors"))
    assert shards == sorted(p.name for p in second.glob("*.safetensors"))
    for name in shards:
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (second / RECIPE_FILE).read_text() == text


def test_merger_recipe_reproduces_the_merge(llama3):
    base, fts = llama3
    merger = LinesMerger.from_pretrained(base, fts, method="consensus", base_method="ties", weights=[1, 0.5, 2],
                                         alpha=0.3, beta=0.4, policy="depth")
    again = LinesMerger.from_recipe(yaml.safe_load(merger.recipe()))
    assert again.method.options == merger.method.options and again.weights == merger.weights
    assert again.lines == merger.lines
    assert_close_dict(again.state_dict(), merger.state_dict())


def test_no_lines_soup_and_output_dtype(llama3, tmp_path):
    base, fts = llama3
    data = {"base_model": str(base), "models": [str(f) for f in fts], "method": "soup", "lines": False,
            "dtype": "bfloat16"}
    out = LinesMerger.from_recipe(data).save_pretrained(tmp_path / "soup", progress=False)
    got = load_folder(out)
    fts_sd = [load_folder(f) for f in fts]
    average = {n: torch.stack([f[n].double() for f in fts_sd]).mean(0).to(torch.bfloat16) for n in got}
    assert_close_dict(got, average)  # rounded once to bf16 from the float32 result
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert Recipe.load(out / RECIPE_FILE).dtype == "bfloat16"


def test_cli_merge(llama3, tmp_path, capsys):
    base, fts = llama3
    recipe = tmp_path / "merge.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(base, fts, method="task_arithmetic", method_options={})))
    out = tmp_path / "cli-out"
    assert main(["merge", str(recipe), "-o", str(out), "-q", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "task_arithmetic" in printed and "alpha = 0.333333 (auto)" in printed and str(out) in printed
    expected = LinesMerger.from_pretrained(base, fts, alpha="auto", beta=0.5).state_dict()
    assert_close_dict(load_folder(out), expected)
    assert main(["merge", str(recipe), "-o", str(out), "-q"]) == 2  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base_model": str(base), "models": [str(fts[0])], "method": "nope"}))
    assert main(["merge", str(bad), "-o", str(tmp_path / "x")]) == 2
    assert "recipe.method: unknown merge method 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
