"""The lm_eval sweep evaluator against lm-eval itself, on local tasks (tests/data/lm_eval) and a tiny LLaMA.

Every expected number comes from ``lm_eval.simple_evaluate`` on the model ``LinesMerger``
builds for the same point; nothing reaches the network.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hf_lines import LinesMerger
from hf_lines.cli import main
from hf_lines.errors import OptionError
from hf_lines.eval import LmEvalHarness, sweep
from hf_lines.eval.config import SweepConfigError, load_config, sweep_arguments

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "tests" / "data" / "lm_eval" / "tasks"
LIMIT = 12
BATCH = 4


@pytest.fixture(autouse=True)
def offline_from_the_root(monkeypatch):
    """One thread (tiny models), offline, and the repository root as working directory (the tasks' data_files)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def lm_eval_module(monkeypatch):
    lm_eval = pytest.importorskip("lm_eval")
    import lm_eval.evaluator

    # simple_evaluate's environment report runs `pip list` (a second per call); it holds no score
    monkeypatch.setattr(lm_eval.evaluator, "add_env_info", lambda results: None)
    return lm_eval


@pytest.fixture(scope="module")
def llama(family_models, tmp_path_factory):
    """(base folder with a word-level tokenizer, [two fine-tunes], the tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    base, fts = family_models("llama", 2)
    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, **{f"w{i}": i + 4 for i in range(48)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")
    folder = tmp_path_factory.mktemp("lm-eval") / "llama-base"
    shutil.copytree(base, folder)
    fast.save_pretrained(folder)
    return folder, fts, fast


def direct(lm_eval, model, tokenizer, task: str, **kwargs) -> dict:
    """lm-eval's own numbers for ``task`` on ``model``: simple_evaluate on lm-eval's HF wrapper."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=BATCH), tasks=[task],
        task_manager=TaskManager(include_path=str(TASKS), include_defaults=False), limit=LIMIT,
        bootstrap_iters=0, log_samples=False, **kwargs)
    return results["results"][task]


def _model(base, fts, alpha, beta):
    return LinesMerger.from_pretrained(base, fts, alpha=alpha, beta=beta).to_model().eval()


# ------------------------------------------------------------------------------ (1) the same numbers as lm-eval
@pytest.mark.parametrize("task,options,seeds", [
    ("tiny_choice", {}, {}),
    ("tiny_choice", {"num_fewshot": 2, "seed": 3}, {"num_fewshot": 2, "random_seed": 3, "numpy_random_seed": 3,
                                                    "torch_random_seed": 3, "fewshot_random_seed": 3}),
    ("tiny_continuation", {}, {}),
    ("tiny_group", {}, {}),
    ("tiny_generation", {}, {}),
])
def test_score_equals_simple_evaluate(lm_eval_module, llama, task, options, seeds):
    base, fts, tokenizer = llama
    model = _model(base, fts, 0.7, 0.5)
    ev = LmEvalHarness(task, include_path=TASKS, limit=LIMIT, batch_size=BATCH, **options)
    ev.bind(base)
    expected = direct(lm_eval_module, model, tokenizer, task, **seeds)
    first_metric = {"tiny_choice": ("acc", True), "tiny_continuation": ("perplexity", False), "tiny_group": ("acc", True),
                    "tiny_generation": ("exact_match,first-word", True)}
    assert (ev.metric, ev.higher_is_better) == first_metric[task]
    got = ev(model)
    # lm-eval's "metric,filter" keys, named without the default filter: "acc,none" is acc
    expected = {k.removesuffix(",none"): v for k, v in expected.items() if "," in k and isinstance(v, (int, float))}
    n = LIMIT * (2 if task == "tiny_group" else 1)  # a group scores LIMIT examples of each task
    assert ev.metric in expected and got == pytest.approx({**expected, "n": n}, rel=1e-12)
    assert ev(model) == got  # the few-shot sampler and the seeds start again for every grid point


def test_several_tasks_one_pass_named_by_mapping(lm_eval_module, llama):
    base, fts, tokenizer = llama
    model = _model(base, fts, 1.0, 0.0)
    ev = LmEvalHarness({"mc": "tiny_choice", "cont": "tiny_continuation"}, metric="acc", include_path=TASKS,
                       limit=LIMIT, batch_size=BATCH)
    assert ev.tasks == ["mc", "cont"] and ev.metric == "acc" and ev.higher_is_better
    got = ev(model)
    assert got["mc"]["acc"] == pytest.approx(direct(lm_eval_module, model, tokenizer, "tiny_choice")["acc,none"])
    assert got["cont"]["perplexity"] == pytest.approx(
        direct(lm_eval_module, model, tokenizer, "tiny_continuation")["perplexity,none"])
    with pytest.raises(OptionError, match="different primary metrics"):  # acc (higher) and perplexity (lower)
        LmEvalHarness(["tiny_choice", "tiny_continuation"], include_path=TASKS).bind(base)
    with pytest.raises(OptionError, match="has no metric 'f1'"):
        LmEvalHarness("tiny_choice", metric="f1", include_path=TASKS).bind(base)


# ------------------------------------------------------------------------------ (2) a YAML sweep selects lm-eval's best
def test_yaml_sweep_selects_the_best_direct_score(lm_eval_module, llama, tmp_path):
    base, fts, tokenizer = llama
    # include_path relative to the YAML's folder, which is not the working directory
    options = {"include_path": os.path.relpath(TASKS, tmp_path), "limit": LIMIT, "batch_size": BATCH}
    config = {
        "base_model": str(base), "models": [str(f) for f in fts], "grid": {"alphas": [0.5, 1.5], "betas": [0.0, 1.0]},
        "rule": {"metric": {"tasks": ["ppl"]}}, "evaluate_test": "best",
        "tasks": {"ppl": {"type": "lm_eval", "validation": "tiny_continuation", "test": "tiny_continuation",
                          "options": options},
                  "mc": {"type": "lm_eval", "validation": "tiny_choice", "test": "tiny_choice_test", "metric": "acc_norm",
                         "options": options}},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    assert Path(loaded["tasks"]["ppl"]["options"]["include_path"]).resolve() == TASKS
    result = sweep(**sweep_arguments(loaded))
    ppl = []
    for p in result.points:
        model = _model(base, fts, p.alpha, p.beta)
        ppl.append(direct(lm_eval_module, model, tokenizer, "tiny_continuation")["perplexity,none"])
        assert p.metrics["validation"]["ppl"]["perplexity"] == pytest.approx(ppl[-1], rel=1e-5)
    assert result.primary == {"ppl": "perplexity", "mc": "acc_norm"}
    assert len(set(ppl)) == len(ppl) and result.best_index == ppl.index(min(ppl))  # perplexity: lower is better
    best = _model(base, fts, result.best.alpha, result.best.beta)
    assert result.best.metrics["test"]["mc"]["acc_norm"] == pytest.approx(
        direct(lm_eval_module, best, tokenizer, "tiny_choice_test")["acc_norm,none"])
    zero_shot = direct(lm_eval_module, _model(base, fts, 0.0, 0.0), tokenizer, "tiny_continuation")
    assert result.references["validation"].zeroshot["ppl"] == pytest.approx(zero_shot["perplexity,none"], rel=1e-5)
    assert result.config["tasks"]["mc"]["test"]["tasks"] == {"tiny_choice_test": "tiny_choice_test"}


# ------------------------------------------------------------------------------ (3) the direction is the task's
def test_direction_comes_from_the_task(lm_eval_module, llama):
    """brier_score, declared lower-is-better (tiny_choice) and higher-is-better (tiny_choice_brier_up)."""
    base, fts, tokenizer = llama
    grid = dict(alphas=[0.5, 1.0, 1.5], betas=[0.0, 1.0])
    chosen = {}
    for task, up in (("tiny_choice", False), ("tiny_choice_brier_up", True)):
        ev = LmEvalHarness(task, metric="brier_score", include_path=TASKS, limit=LIMIT, batch_size=BATCH)
        result = sweep(base, fts, {"b": ev}, rule="metric", evaluate_test="none", **grid)
        assert ev.higher_is_better is up and result.references["validation"].higher_is_better == {"b": up}
        chosen[task] = result.best_index
        points = [(p.alpha, p.beta) for p in result.points]
    brier = [direct(lm_eval_module, _model(base, fts, a, b), tokenizer, "tiny_choice")["brier_score,none"]
             for a, b in points]
    assert len(set(brier)) == len(brier)
    assert chosen == {"tiny_choice": brier.index(min(brier)), "tiny_choice_brier_up": brier.index(max(brier))}


# ------------------------------------------------------------------------------ (4) without the extra
def test_missing_extra_fails_first_with_the_extra_named(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(OptionError, match=r"pip install 'hf-lines\[lm-eval\]'"):
        LmEvalHarness("tiny_choice")
    path = tmp_path / "sweep.yaml"  # models that do not exist: the error must come before they are looked for
    path.write_text(yaml.safe_dump({"base_model": str(tmp_path / "no-base"), "models": [str(tmp_path / "no-ft")],
                                    "tasks": {"t": {"type": "lm_eval", "validation": "tiny_choice"}}}))
    assert main(["sweep", str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert "hf-lines[lm-eval]" in err and "Traceback" not in err and "no-base" not in err


def test_yaml_checks():
    base = {"base_model": "b", "models": ["m"]}
    with pytest.raises(SweepConfigError, match="higher_is_better"):
        load_config({**base, "tasks": {"t": {"type": "lm_eval", "validation": "x", "higher_is_better": False}}})
    with pytest.raises(SweepConfigError, match="validation lm-eval task"):
        load_config({**base, "tasks": {"t": {"type": "lm_eval"}}})
    with pytest.raises(SweepConfigError, match="disagree"):
        load_config({**base, "tasks": {"t": {"type": "lm_eval", "validation": "x", "metric": "acc",
                                             "options": {"metric": "f1"}}}})
    spec = {**base, "tasks": {"t": {"type": "lm_eval", "validation": "x", "options": {"include_path": "tasks"}}}}
    assert load_config(spec, folder="/cfg")["tasks"]["t"]["options"]["include_path"] == str(Path("/cfg/tasks"))
    assert spec["tasks"]["t"]["options"]["include_path"] == "tasks"  # the caller's mapping is left alone
    assert load_config(spec)["tasks"]["t"]["options"]["include_path"] == "tasks"  # no folder: as written
    pytest.importorskip("lm_eval")
    with pytest.raises(OptionError, match="limit"):
        LmEvalHarness("x", limit=0)
    with pytest.raises(OptionError, match="include_path"):
        LmEvalHarness("x", include_path="/no/such/folder")


def test_cli_reads_include_path_relative_to_the_yaml(tmp_path, monkeypatch):
    """``hf-lines sweep cfg.yaml`` resolves a relative include_path from the YAML's folder, not the working directory."""
    import argparse

    from hf_lines.cli.sweep import config_from_args, register

    folder = tmp_path / "cfg"
    folder.mkdir()
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base_model": "b", "models": ["m"], "grid": {"alphas": [0.5], "betas": [0.0]},
                                    "tasks": {"t": {"type": "lm_eval", "validation": "x",
                                                    "options": {"include_path": "tasks"}}}}))
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["sweep", str(path)])
    loaded = config_from_args(args)
    assert loaded["tasks"]["t"]["options"]["include_path"] == str(folder / "tasks")
