"""Every bad option or schedule is refused before the first byte of a tensor is read, with a clear error.

Each case checks the same three things: the error is a LinesError subclass (CLI: exit 2 and
``hf-lines: error:`` naming the option, no traceback), no tensor was read (the checkpoint
reader is made to fail the test), and nothing was created where the output would go.
"""
from __future__ import annotations

import builtins
import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import tiny_adapters
from hf_lines import LinesMerger, RewardedSoup, scale_adapter
from hf_lines.cli import main
from hf_lines.errors import (CardError, LinesError, NonFiniteError, OptionError, OutputExistsError, OutputWriteError,
                             RecipeError)
from hf_lines.pipeline.recipe import Recipe
from hf_lines.soups import SoupRecipe, parse_lambdas

INF, NAN = float("inf"), float("nan")


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture
def no_reads(monkeypatch):
    """Fail the test if any tensor is read (full checkpoints and LoRA adapters alike)."""
    from hf_lines.adapters.reader import LoraAdapter
    from hf_lines.io.checkpoint import Checkpoint

    def refuse(self, name):
        raise AssertionError(f"tensor {name} was read before the bad option was refused")

    monkeypatch.setattr(Checkpoint, "get", refuse)
    monkeypatch.setattr(LoraAdapter, "tensor", refuse)


@pytest.fixture
def llama(family_models):
    base, (ft,) = family_models("llama")
    return base, ft


@pytest.fixture
def out_dir(tmp_path):
    """An empty folder to write into: after a refused run it must still be empty (no output, staging or lock)."""
    where = tmp_path / "where"
    where.mkdir()
    return where


def assert_untouched(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == []


def cli_error(capsys, argv: list[str], *names: str) -> str:
    """Run the CLI in-process; assert exit 2, one ``hf-lines: error:`` line naming ``names``, no traceback."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("hf-lines: error: ") and "Traceback" not in err, err
    for name in names:
        assert name in err, (name, err)
    return err


# ------------------------------------------------------------------------------------------ schedule
@pytest.mark.parametrize("alpha, beta, named", [
    (INF, 0.0, "alpha"), (NAN, 0.5, "alpha"), (0.5, -INF, "beta"), (0.5, NAN, "beta"),
    (1.7e308, 1.7e308, "alpha + beta"),  # each finite, their sum is not
])
def test_non_finite_schedule_refused(llama, no_reads, alpha, beta, named):
    base, ft = llama
    with pytest.raises(OptionError, match=named.replace("+", r"\+")):
        LinesMerger.from_pretrained(base, [ft], alpha=alpha, beta=beta)
    with pytest.raises(OptionError, match=named.replace("+", r"\+")):
        scale_adapter(base, ft, "never-written", alpha=alpha, beta=beta)


def test_large_lambda_needs_allow(llama, no_reads, out_dir):
    base, ft = llama
    for alpha, beta in [(1e300, 0.0), (150.0, 0.0), (0.5, -101.0)]:
        with pytest.raises(OptionError, match="allow-large-lambda|allow_large_lambda"):
            LinesMerger.from_pretrained(base, [ft], alpha=alpha, beta=beta)
    merger = LinesMerger.from_pretrained(base, [ft], alpha=0.0, beta=100.0)  # the bound itself is allowed
    merger.lines.alpha = INF  # a schedule changed after construction is checked again by save_pretrained
    with pytest.raises(OptionError, match="alpha"):
        merger.save_pretrained(out_dir / "out", progress=False)
    assert_untouched(out_dir)
    with pytest.raises(OptionError, match=r"weights\[1\]"):
        LinesMerger.from_pretrained(base, [ft, ft], alpha=0.5, beta=0.5, weights=[1.0, NAN])


def test_allowed_large_lambda_round_trips_and_overflow_is_refused(family_models, tmp_path):
    base, (ft,) = family_models("llama")
    merger = LinesMerger.from_pretrained(base, [ft], alpha=150.0, beta=0.0, allow_large_lambda=True)
    out = merger.save_pretrained(tmp_path / "big", progress=False)
    recipe = yaml.safe_load((out / "hf_lines_recipe.yaml").read_text())
    assert recipe["lines"]["allow_large_lambda"] is True
    assert LinesMerger.from_recipe(out / "hf_lines_recipe.yaml").lines.allow_large_lambda
    assert "--allow-large-lambda" in (out / "README.md").read_text()

    # A large but allowed lambda that overflows float16 is refused, naming the tensor and lambda.
    wide = LinesMerger.from_pretrained(base, [ft], alpha=1e9, beta=0.0, dtype="float16", allow_large_lambda=True)
    with pytest.raises(NonFiniteError, match=r"tensor '.+' .*lambda = 1e\+09.*float16"):
        wide.save_pretrained(tmp_path / "overflow", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big"]
    # values near the float16 limit are finite, though their float16 norm is not: written, not refused
    near = LinesMerger.from_pretrained(base, [ft], alpha=1e7, beta=0.0, dtype="float16", allow_large_lambda=True)
    near.save_pretrained(tmp_path / "near", progress=False)


def test_overflow_refused_on_the_fused_path(family_models, tmp_path):
    base, (ft,) = family_models("llama", dtype=torch.float16)
    merger = LinesMerger.from_pretrained(base, [ft], alpha=1e9, beta=0.0, allow_large_lambda=True)
    with pytest.raises(NonFiniteError, match="lambda = 1e\\+09.*float16"):
        merger.save_pretrained(tmp_path / "overflow", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_recipe_schedule_and_weights_must_be_finite(llama, no_reads):
    base, ft = llama
    good = {"base_model": str(base), "models": [str(ft)], "lines": {"alpha": 0.5, "beta": 0.5}}
    bad = [
        ("alpha: .nan", {"lines": {"alpha": NAN, "beta": 0.5}}, r"recipe\.lines\.alpha.*finite"),
        ("beta: -.inf", {"lines": {"alpha": 0.5, "beta": -INF}}, r"recipe\.lines\.beta.*finite"),
        ("huge alpha", {"lines": {"alpha": 1e300, "beta": 0.0}}, r"recipe\.lines.*allow_large_lambda"),
        ("weight .inf", {"models": [{"model": str(ft), "weight": INF}]}, r"recipe\.models\[0\]\.weight.*finite"),
        ("shard 0", {"output": {"max_shard_size": 0}}, r"max_shard_size.*at least 10KB"),
        ("shard 5XB", {"output": {"max_shard_size": "5XB"}}, r"max_shard_size.*not a size"),
    ]
    for label, change, message in bad:
        with pytest.raises(RecipeError, match=message):
            LinesMerger.from_recipe({**good, **change})
    # the YAML spelling of the same thing
    text = yaml.safe_dump(good).replace("alpha: 0.5", "alpha: .nan")
    with pytest.raises(RecipeError, match="alpha"):
        Recipe.from_yaml(text)
    large = {**good, "lines": {"alpha": 150.0, "beta": 0.0, "allow_large_lambda": True}}
    spec = Recipe.from_dict(large)
    assert spec.lines.allow_large_lambda and Recipe.from_dict(spec.to_dict()) == spec
    assert Recipe.from_dict({**large, "lines": {"alpha": 150.0, "beta": 0.0}}, allow_large_lambda=True).lines.allow_large_lambda
    assert "allow_large_lambda" not in Recipe.from_dict(good).to_dict()["lines"]  # unset: recipes stay as they were


# ------------------------------------------------------------------------------------------ run options
@pytest.mark.parametrize("options, error, message", [
    ({"max_shard_size": 0}, OptionError, r"max_shard_size \(--max-shard-size\).*at least 10KB"),
    ({"max_shard_size": "1"}, OptionError, r"max_shard_size.*is 1 byte; it must be at least 10KB"),
    ({"max_shard_size": "-5"}, OptionError, r"max_shard_size.*at least 10KB"),
    ({"max_shard_size": "5XB"}, OptionError, r"max_shard_size.*'5XB' is not a size"),
    ({"max_shard_size": "0GB"}, OptionError, r"max_shard_size.*at least"),
    ({"workers": -3}, OptionError, r"workers \(--workers\) = -3"),
    ({"workers": 0}, OptionError, r"workers"),
    ({"memory_budget": 0}, OptionError, r"memory_budget.*at least 1 byte"),
    ({"device": "banana"}, OptionError, r"device \(--device\) = 'banana' is not a device.*available here: cpu"),
    ({"device": "meta"}, OptionError, r"device.*not meta"),
    ({"write_mode": "sideways"}, OptionError, r"write_mode"),
    ({"output": "gguf"}, OptionError, r"output format 'gguf'"),
    ({"card_template": "no-such-template.md.jinja"}, CardError, r"no-such-template.*--card-template.*not found"),
])
def test_bad_run_option_fails_before_any_read(llama, no_reads, out_dir, options, error, message):
    base, ft = llama
    merger = LinesMerger.from_pretrained(base, [ft], alpha=0.5, beta=0.5)
    with pytest.raises(error, match=message):
        merger.save_pretrained(out_dir / "out", progress=False, **options)
    assert_untouched(out_dir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a torch without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_missing_accelerator_refused(llama, no_reads, out_dir, device):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this torch has MPS")
    base, ft = llama
    merger = LinesMerger.from_pretrained(base, [ft], alpha=0.5, beta=0.5)
    with pytest.raises(OptionError, match=rf"device.*'{device}'.*no {device.split(':')[0]} device.*available here: cpu"):
        merger.save_pretrained(out_dir / "out", progress=False, device=device)
    assert_untouched(out_dir)


@pytest.mark.parametrize("kind", ["directory", "syntax", "render", "undecodable"])
def test_bad_card_template_fails_before_any_read(llama, no_reads, out_dir, tmp_path, kind):
    base, ft = llama
    template = tmp_path / f"{kind}.md.jinja"
    if kind == "directory":
        template.mkdir()
    elif kind == "syntax":
        template.write_text("---\n{{ card_data }}\n---\n{% for x in %}\n")
    elif kind == "render":  # parses, but fails on the real card context
        template.write_text("---\n{{ card_data }}\n---\n{{ lines.alpha + 'x' }} {{ no_such.thing.here }}\n")
    else:
        template.write_bytes(b"\xff\xfe{{ model_name }}\x80")
    merger = LinesMerger.from_pretrained(base, [ft], alpha=0.5, beta=0.5)
    with pytest.raises(CardError, match=f"{kind}.md.jinja"):
        merger.save_pretrained(out_dir / "out", progress=False, card_template=template)
    assert_untouched(out_dir)


def test_auto_alpha_card_template_checked_first(family_models, no_reads, out_dir, tmp_path):
    base, fts = family_models("llama", n_models=2)
    template = tmp_path / "t.md.jinja"
    template.write_text("{{ lines.alpha | no_such_filter }}")
    merger = LinesMerger.from_pretrained(base, fts, alpha="auto", beta=0.5)
    with pytest.raises(CardError, match="t.md.jinja"):  # before the statistics pass that resolves alpha
        merger.save_pretrained(out_dir / "out", progress=False, card_template=template)
    assert_untouched(out_dir)


@pytest.fixture(scope="module")
def lora(family_models, tmp_path_factory):
    base, _ = family_models("llama")
    ad = tiny_adapters.make_adapter("llama", base, tmp_path_factory.mktemp("lora") / "ad", seed=7, r=2, lora_alpha=2,
                                    target_modules=["q_proj"])
    return base, ad


def test_adapter_output_checked_before_any_read(lora, no_reads, out_dir, tmp_path):
    base, ad = lora
    missing = tmp_path / "missing.md.jinja"
    with pytest.raises(CardError, match="missing.md.jinja"):
        scale_adapter(base, ad, out_dir / "out", alpha=0.5, beta=0.5, card_template=missing)
    with pytest.raises(OptionError, match="allow-large-lambda"):
        scale_adapter(base, ad, out_dir / "out", alpha=500.0, beta=0.0)
    merger = LinesMerger.from_pretrained(base, [ad], alpha=0.5, beta=0.5)
    with pytest.raises(CardError, match="missing.md.jinja"):
        merger.save_pretrained(out_dir / "out", output="adapter", progress=False, card_template=missing)
    (out_dir / "out").mkdir()
    with pytest.raises(OutputExistsError):
        scale_adapter(base, ad, out_dir / "out", alpha=0.5, beta=0.5)
    with pytest.raises(OutputExistsError):
        merger.save_pretrained(out_dir / "out", output="adapter", progress=False)
    assert sorted(p.name for p in out_dir.iterdir()) == ["out"] and not any((out_dir / "out").iterdir())


# ------------------------------------------------------------------------------------------ soups
@pytest.fixture
def soup_inputs(family_models):
    base, fts = family_models("llama", n_models=2)
    return base, fts


def test_soup_schedule_and_sweep_refused(soup_inputs, no_reads, out_dir):
    sft, policies = soup_inputs
    with pytest.raises(OptionError, match="alpha"):
        RewardedSoup.from_pretrained(sft, policies, alpha=INF, beta=0.0)
    with pytest.raises(OptionError, match="allow-large-lambda"):
        RewardedSoup.from_pretrained(sft, policies, alpha=0.5, beta=1e300)
    soup = RewardedSoup.from_pretrained(sft, policies, alpha=0.5, beta=0.5)
    for bad, message in [
        (dict(lambdas="0:1"), r"lambdas \(--lambdas\): '0:1' is not start:stop:count"),
        (dict(lambdas="0:1:0"), r"lambdas \(--lambdas\): '0:1:0' asks for 0 values"),
        (dict(lambdas=[0.0, NAN]), r"lambdas.*not a finite number"),
        (dict(weights=[[0.5, INF]]), r"weights.*not a finite number"),
        (dict(weights="0.5,abc"), r"weights.*'abc' is not a number"),
        (dict(lambdas="0:1:3", max_shard_size="5XB"), r"max_shard_size"),
        (dict(lambdas="0:1:3", workers=-3), r"workers"),
        (dict(lambdas="0:1:3", passes="twice"), r"passes \(--passes\)"),
        (dict(lambdas="0:1:3", card_template="nope.md.jinja"), r"nope.md.jinja"),
    ]:
        with pytest.raises(LinesError, match=message):
            soup.save_pretrained(out_dir / "soup", progress=False, **bad)
    assert_untouched(out_dir)


def test_soup_recipe_schedule(soup_inputs, no_reads):
    sft, policies = soup_inputs
    good = {"sft": str(sft), "policies": [str(p) for p in policies], "lambdas": [0.0, 1.0],
            "lines": {"alpha": 0.5, "beta": 0.5}}
    for change, message in [({"lines": {"alpha": 0.5, "beta": -INF}}, r"soup\.lines\.beta.*finite"),
                            ({"lines": {"alpha": NAN, "beta": 0.5}}, r"soup\.lines\.alpha.*finite"),
                            ({"lines": {"alpha": 200.0, "beta": 0.5}}, r"soup\.lines.*allow_large_lambda"),
                            ({"lambdas": "0:1"}, r"soup\.lambdas"),
                            ({"max_shard_size": "1"}, r"soup\.max_shard_size.*at least 10KB")]:
        with pytest.raises(RecipeError, match=message):
            RewardedSoup.from_recipe({**good, **change})
    large = {**good, "lines": {"alpha": 200.0, "beta": 0.5, "allow_large_lambda": True}}
    spec = SoupRecipe.from_dict(large)
    assert SoupRecipe.from_dict(spec.to_dict()) == spec and spec.lines["allow_large_lambda"] is True
    soup = RewardedSoup.from_recipe({**good, "lines": {"alpha": 200.0, "beta": 0.5}}, allow_large_lambda=True)
    assert soup.lines.allow_large_lambda


def test_parse_lambdas_errors_are_option_errors():
    for bad in ("0:1", "0:1:0", "1:2:3:4", "0,inf"):
        with pytest.raises(OptionError, match="lambdas"):
            parse_lambdas(bad)


def test_sweep_grid_must_be_finite():
    from hf_lines.eval.sweep import make_grid

    for kwargs in (dict(alphas=[NAN]), dict(betas=[INF]), dict(gammas=[NAN]), dict(points=[(0.5, -INF)])):
        with pytest.raises(OptionError):
            make_grid(**kwargs)


# ------------------------------------------------------------------------------------------ full disk
def _full_disk(monkeypatch, victim: str) -> None:
    """Writing a file named ``victim`` fails with ENOSPC, as on a full disk."""
    real_open = builtins.open

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file).name == victim and set(mode) & set("wax+"):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)


@pytest.mark.parametrize("victim", ["README.md", "lines_schedule.png", "hf_lines_recipe.yaml", "hf_lines.json",
                                    "config.json"])
def test_full_disk_after_the_weights(llama, out_dir, monkeypatch, victim):
    base, ft = llama
    merger = LinesMerger.from_pretrained(base, [ft], alpha=0.5, beta=0.5)
    _full_disk(monkeypatch, victim)
    with pytest.raises(OutputWriteError, match=rf"{victim} failed: No space left on device; free space"):
        merger.save_pretrained(out_dir / "out", progress=False)
    assert not (out_dir / "out").exists()
    assert not [p for p in out_dir.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("victim", ["hf_lines_soup.yaml", "soup.json", "README.md"])
def test_full_disk_in_a_soup(soup_inputs, out_dir, monkeypatch, victim):
    import tempfile

    sft, policies = soup_inputs
    soup = RewardedSoup.from_pretrained(sft, policies, alpha=0.5, beta=0.5)
    _full_disk(monkeypatch, victim)
    if victim == "soup.json":  # written through a temporary file beside it, then renamed
        def mkstemp(*args, prefix=None, **kwargs):
            if prefix == ".soup-":
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_mkstemp(*args, prefix=prefix, **kwargs)

        real_mkstemp = tempfile.mkstemp
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(OutputWriteError, match=rf"{victim} failed.*free space"):
        soup.save_pretrained(out_dir / "soup", lambdas=[0.5], progress=False)


@pytest.mark.parametrize("victim", ["hf_lines.json", "README.md"])
def test_full_disk_in_an_adapter(lora, out_dir, monkeypatch, victim):
    base, ad = lora
    _full_disk(monkeypatch, victim)
    with pytest.raises(OutputWriteError, match=rf"{victim} failed.*free space"):
        scale_adapter(base, ad, out_dir / "out", alpha=0.5, beta=0.5)
    assert not (out_dir / "out").exists()


# ------------------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("flags, names", [
    (["--alpha", "inf", "--beta", "0"], ["alpha"]),
    (["--alpha", "1e300", "--beta", "0"], ["alpha", "--allow-large-lambda"]),
    (["--alpha", "nan", "--beta", "0.5"], ["alpha"]),
    (["--alpha", "0.5", "--beta=-inf"], ["beta"]),
    (["--alpha", "0.5", "--beta", "0.5", "--max-shard-size", "0"], ["--max-shard-size", "10KB"]),
    (["--alpha", "0.5", "--beta", "0.5", "--max-shard-size", "1"], ["--max-shard-size", "10KB"]),
    (["--alpha", "0.5", "--beta", "0.5", "--max-shard-size", "-5"], ["--max-shard-size", "10KB"]),
    (["--alpha", "0.5", "--beta", "0.5", "--max-shard-size", "5XB"], ["--max-shard-size", "5XB"]),
    (["--alpha", "0.5", "--beta", "0.5", "--workers", "-3"], ["--workers", "-3"]),
    (["--alpha", "0.5", "--beta", "0.5", "--memory-budget", "0GB"], ["--memory-budget"]),
    (["--alpha", "0.5", "--beta", "0.5", "--device", "banana"], ["--device", "banana", "cpu"]),
    (["--alpha", "0.5", "--beta", "0.5", "--card-template", "missing.md.jinja"], ["--card-template", "missing"]),
])
def test_cli_scale_bad_option(llama, no_reads, out_dir, capsys, flags, names):
    base, ft = llama
    cli_error(capsys, ["scale", str(base), str(ft), "-o", str(out_dir / "out"), "-q", *flags], *names)
    assert_untouched(out_dir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a torch without CUDA")
def test_cli_cuda_without_cuda(llama, no_reads, out_dir, capsys):
    base, ft = llama
    cli_error(capsys, ["scale", str(base), str(ft), "-o", str(out_dir / "out"), "-q", "--alpha", "0.5", "--beta", "0.5",
                       "--device", "cuda"], "--device", "no cuda device", "available here: cpu")
    assert_untouched(out_dir)


def test_cli_merge_and_soup_bad_options(llama, soup_inputs, no_reads, out_dir, tmp_path, capsys):
    base, ft = llama
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"base_model: {base}\nmodels: [{ft}]\nlines: {{alpha: .nan, beta: 0.5}}\n")
    cli_error(capsys, ["merge", str(recipe), "-o", str(out_dir / "m")], "recipe.lines.alpha")
    recipe.write_text(f"base_model: {base}\nmodels: [{ft}]\nlines: {{alpha: 0.5, beta: -.inf}}\n")
    cli_error(capsys, ["merge", str(recipe), "-o", str(out_dir / "m")], "recipe.lines.beta")
    recipe.write_text(f"base_model: {base}\nmodels: [{ft}]\nlines: {{alpha: 150, beta: 0}}\n")
    cli_error(capsys, ["merge", str(recipe), "-o", str(out_dir / "m")], "--allow-large-lambda")

    sft, (p1, p2) = soup_inputs
    soup = ["soup", str(sft), str(p1), str(p2), "-o", str(out_dir / "s"), "-q"]
    cli_error(capsys, [*soup, "--lambdas", "0:1"], "--lambdas", "'0:1'")
    cli_error(capsys, [*soup, "--lambdas", "0:1:0"], "--lambdas", "'0:1:0'")
    cli_error(capsys, [*soup, "--lambdas", "0,1", "--alpha", "inf", "--beta", "0"], "alpha")
    cli_error(capsys, [*soup, "--lambdas", "0,1", "--alpha", "0.5", "--beta", "0.5", "--workers", "-3"], "--workers")
    cli_error(capsys, [*soup, "--lambdas", "0,1", "--max-shard-size", "5XB"], "--max-shard-size")
    cli_error(capsys, [*soup, "--lambdas", "0,1", "--alpha", "0.5"], "--alpha and --beta")  # a usage error
    cli_error(capsys, [*soup], "--lambdas")
    cli_error(capsys, ["soup", str(sft), "-o", str(out_dir / "s")], "POLICY")
    assert_untouched(out_dir)


def test_cli_merge_allow_large_lambda(llama, tmp_path, capsys):
    base, ft = llama
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"base_model: {base}\nmodels: [{ft}]\nlines: {{alpha: 150, beta: 0}}\n")
    assert main(["merge", str(recipe), "-o", str(tmp_path / "m"), "-q", "--allow-large-lambda"]) == 0
    written = yaml.safe_load((tmp_path / "m" / "hf_lines_recipe.yaml").read_text())
    assert written["lines"]["allow_large_lambda"] is True  # the output's recipe makes it again without the flag


def test_cli_demo_refuses_existing_output_before_training(tmp_path, monkeypatch, capsys):
    import hf_lines.eval.synthetic

    def no_training(*args, **kwargs):
        raise AssertionError("the demo started training")

    monkeypatch.setattr(hf_lines.eval.synthetic, "build_benchmark", no_training)
    (tmp_path / "demo").mkdir()
    cli_error(capsys, ["demo", str(tmp_path / "demo"), "--quick"], "already exists", "--overwrite")
    cli_error(capsys, ["demo", str(tmp_path / "new"), "--quick", "--alpha", "nan"], "alpha")
    cli_error(capsys, ["demo", str(tmp_path / "new"), "--quick", "--target", "no_such_task"], "--target")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_cli_debug_shows_the_traceback(llama, no_reads, out_dir):
    base, ft = llama
    args = ["scale", str(base), str(ft), "-o", str(out_dir / "out"), "-q", "--alpha", "inf", "--beta", "0"]
    with pytest.raises(OptionError):
        main(["--debug", *args])
    with pytest.raises(OptionError):
        main([*args, "--debug"])


def test_cli_error_messages_are_scrubbed(llama, no_reads, out_dir, capsys):
    base, ft = llama
    token_shaped = "hf_" + "A1b2C3d4E5f6G7h8I9j0K1l2"
    err = cli_error(capsys, ["scale", str(base), str(ft), "-o", str(out_dir / "out"), "-q", "--alpha", "0.5", "--beta",
                             "0.5", "--card-template", f"/nowhere/{token_shaped}.md.jinja"], "--card-template")
    assert token_shaped not in err and "***" in err


def test_console_entry_prints_no_traceback(llama, out_dir):
    base, ft = llama
    done = subprocess.run([sys.executable, "-m", "hf_lines", "scale", str(base), str(ft), "-o", str(out_dir / "out"),
                           "--alpha", "0.5", "--beta", "0.5", "--max-shard-size", "5XB"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("hf-lines: error: max_shard_size (--max-shard-size) = '5XB'"), done.stderr
    assert "Traceback" not in done.stderr
    assert_untouched(out_dir)
