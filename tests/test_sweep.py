"""hf_lines.eval.sweep on the tiny test models, with tiny datasets written to tmp_path and read by the built-in evaluators."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from hf_lines import LinesMerger
from hf_lines.cli import main
from hf_lines.eval import (ClassificationAccuracy, ExactMatch, LanguageModelLoss, MergeRule, SingleTaskRule, make_grid,
                           sweep)
from hf_lines.eval.candidates import CandidateModels


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and much faster when other processes share the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _token_rows(n, seed, vocab=64, labels=3, min_len=3, max_len=8):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        rows.append({"input_ids": torch.randint(1, vocab, (length,), generator=g).tolist(), "label": i % labels})
    return rows


def _accuracy_by_hand(model, rows):
    correct = 0
    with torch.no_grad():
        for r in rows:  # one example at a time: no padding at all
            logits = model(input_ids=torch.tensor([r["input_ids"]])).logits
            correct += int(logits.argmax(-1).item() == r["label"])
    return correct / len(rows)


@pytest.fixture
def bert_tasks(tmp_path):
    """Two classification tasks, validation and test, as jsonl files; returns (tasks, rows)."""
    rows, tasks = {}, {}
    for k, name in enumerate(("a", "b")):
        for split, seed in (("validation", 10 + k), ("test", 20 + k)):
            rows[name, split] = _token_rows(24, seed)
            _write_jsonl(tmp_path / f"{name}_{split}.jsonl", rows[name, split])
        tasks[name] = (ClassificationAccuracy(str(tmp_path / f"{name}_validation.jsonl"), batch_size=5),
                       ClassificationAccuracy(str(tmp_path / f"{name}_test.jsonl")))
    return tasks, rows


def test_merge_sweep_metrics_selection_and_files(family_models, bert_tasks, tmp_path):
    base, fts = family_models("bert", 2)
    tasks, rows = bert_tasks
    result = sweep(base, fts, tasks, method="ties", density=0.5, alphas=["auto", 0.7], betas=[0.0, 0.5], rule="merge")
    auto = result.config["auto_alpha"]
    assert auto == pytest.approx(LinesMerger.from_pretrained(base, fts, method="ties", density=0.5, alpha="auto").scales()
                                 ["bert.embeddings.word_embeddings.weight"])
    assert [(p.alpha, p.beta, p.label) for p in result.points] == [(auto, 0.0, "uniform"), (auto, 0.5, "LiNeS"),
                                                                    (0.7, 0.0, "uniform"), (0.7, 0.5, "LiNeS")]
    # every point's metric equals the accuracy of the model LinesMerger builds, computed by hand
    for p in result.points:
        model = LinesMerger.from_pretrained(base, fts, method="ties", density=0.5, alpha=p.alpha, beta=p.beta).to_model()
        for name in ("a", "b"):
            assert p.metrics["validation"][name]["accuracy"] == pytest.approx(_accuracy_by_hand(model, rows[name, "validation"]))
    # references: zero-shot is the base, fine-tuned is task i's own model i
    from transformers import BertForSequenceClassification

    for i, name in enumerate(("a", "b")):
        ft = BertForSequenceClassification.from_pretrained(fts[i])
        assert result.references["validation"].finetuned[name] == pytest.approx(_accuracy_by_hand(ft, rows[name, "validation"]))
    zs = BertForSequenceClassification.from_pretrained(base)
    assert result.references["validation"].zeroshot["a"] == pytest.approx(_accuracy_by_hand(zs, rows["a", "validation"]))
    # the selection is the merge rule's, by hand: mean of acc / fine-tuned acc, the first maximum in grid order
    ft_acc = result.references["validation"].finetuned
    scores = [sum(p.metrics["validation"][t]["accuracy"] / ft_acc[t] for t in "ab") / 2 for p in result.points]
    assert result.best_index == scores.index(max(scores))
    assert "test" in result.best.metrics and all("test" not in p.metrics for p in result.points if p is not result.best)
    files = result.save(tmp_path / "out")
    assert files["png"].read_bytes()[:4] == b"\x89PNG"
    table = list(csv.DictReader(files["csv"].open()))
    assert len(table) == 5 and {r["split"] for r in table} == {"validation", "test"}
    data = json.loads(files["json"].read_text())
    assert data["best"]["index"] == result.best_index and data["config"]["method"]["method"] == "ties"
    assert "*" in result.table()


def test_sweep_writes_no_candidate_to_disk(family_models, bert_tasks, monkeypatch):
    import hf_lines.pipeline.plan as plan

    def refuse(*a, **k):
        raise AssertionError("a sweep point was written to disk")

    monkeypatch.setattr(plan, "ShardedWriter", refuse)
    base, fts = family_models("bert", 2)
    tasks, _ = bert_tasks
    for mode in ("memory", "stream"):
        result = sweep(base, fts, tasks, alphas=[0.5], betas=[0.0, 1.0], mode=mode, evaluate_test="none")
        assert result.config["mode"] == mode and len(result.points) == 2


@pytest.mark.parametrize("method,options", [("task_arithmetic", {}), ("ties", {"density": 0.3}), ("consensus", {"k": 1})])
@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_candidate_weights_equal_linesmerger(family_models, method, options, mode):
    base, fts = family_models("llama", 3)
    merger = LinesMerger.from_pretrained(base, fts, method=method, alpha="auto", **options)
    cands = CandidateModels(merger, mode=mode)
    for alpha, beta in [(0.3, 0.0), (0.2, 0.6)]:
        model = cands.set_edit(alpha, beta)
        expected = LinesMerger.from_pretrained(base, fts, method=method, alpha=alpha, beta=beta, **options).state_dict()
        got = model.state_dict()
        for name, tensor in expected.items():
            torch.testing.assert_close(got[name], tensor, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cands.set_finetuned(1).state_dict()["model.norm.weight"],
                               LinesMerger.from_pretrained(base, [fts[1]], alpha=1.0).state_dict()["model.norm.weight"])


def test_single_task_sweep_rule_and_grid(family_models, bert_tasks):
    base, fts = family_models("bert", 1)
    tasks, _ = bert_tasks
    result = sweep(base, fts[0], tasks, gammas=[0.0, 0.5, 1.0], alphas=[0.5], evaluate_test="all")
    assert isinstance(result.rule, SingleTaskRule) and result.rule.targets == ["a"]
    assert [(p.alpha, p.beta, p.label) for p in result.points] == [(0.5, 0.0, "uniform"), (0.0, 1.0, "LiNeS"),
                                                                    (0.5, 0.5, "LiNeS"), (1.0, 0.0, "LiNeS")]
    refs = result.references["validation"]
    for p in result.points:
        m = {t: p.metrics["validation"][t]["accuracy"] for t in "ab"}
        assert p.scores["validation"] == pytest.approx(2 * m["a"] / refs.finetuned["a"] + m["b"] / refs.zeroshot["b"])
        assert "test" in p.metrics
    # gamma = 1 is the fine-tuned model itself; alpha = beta = 0 would be the base
    assert result.points[3].metrics["validation"] == result.reference_metrics["validation"]["fine-tuned"]
    uniform = result.select(where=lambda p: p.label == "uniform")
    assert uniform.label == "uniform"


def test_make_grid_forms():
    assert make_grid(alphas=["auto"], betas=[0, 0.5]) == [("auto", 0.0, "uniform"), ("auto", 0.5, "LiNeS")]
    assert make_grid(gammas=[0.25]) == [(0.25, 0.75, "LiNeS")]
    assert make_grid(points=[(0.1, 0.2, "x"), {"alpha": 0.3}]) == [(0.1, 0.2, "x"), (0.3, 0.0, "point")]
    with pytest.raises(ValueError, match="empty grid"):
        make_grid()


def test_lm_loss_and_exact_match_by_hand(family_models, tmp_path):
    from transformers import GPT2LMHeadModel

    base, fts = family_models("gpt2", 1)
    model = GPT2LMHeadModel.from_pretrained(base).eval()
    seqs = [r["input_ids"] for r in _token_rows(6, 3, min_len=6, max_len=6)]
    _write_jsonl(tmp_path / "lm.jsonl", [{"input_ids": s} for s in seqs])
    lm = LanguageModelLoss(str(tmp_path / "lm.jsonl"), batch_size=4)
    with torch.no_grad():  # equal lengths: the mean of per-sequence mean losses is the per-token mean
        expected = sum(float(model(input_ids=torch.tensor([s]), labels=torch.tensor([s])).loss) for s in seqs) / len(seqs)
    got = lm(model)
    assert got["loss"] == pytest.approx(expected, rel=1e-5)
    assert got["perplexity"] == pytest.approx(torch.tensor(expected).exp().item(), rel=1e-5)
    # exact match: targets are the model's own greedy continuations for half the rows, off by one token for the rest
    rows = []
    with torch.no_grad():
        for i, s in enumerate(seqs):
            out = model.generate(torch.tensor([s[:4]]), max_new_tokens=2, do_sample=False, pad_token_id=0)[0, 4:].tolist()
            rows.append({"input_ids": s[:4], "target_ids": out if i % 2 == 0 else [out[0], (out[1] + 1) % 64]})
    _write_jsonl(tmp_path / "em.jsonl", rows)
    assert ExactMatch(str(tmp_path / "em.jsonl"), batch_size=3)(model)["exact_match"] == pytest.approx(0.5)


def test_image_classification_and_callable(family_models, tmp_path):
    from transformers import ViTForImageClassification

    base, fts = family_models("vit", 1)
    g = torch.Generator().manual_seed(0)
    rows = [{"pixel_values": torch.randn(3, 16, 16, generator=g).tolist(), "label": i % 5} for i in range(10)]
    _write_jsonl(tmp_path / "img.jsonl", rows)
    ev = ClassificationAccuracy(str(tmp_path / "img.jsonl"), batch_size=4)
    model = ViTForImageClassification.from_pretrained(base).eval()
    with torch.no_grad():
        pred = model(pixel_values=torch.tensor([r["pixel_values"] for r in rows])).logits.argmax(-1)
    expected = float((pred == torch.tensor([r["label"] for r in rows])).float().mean())
    assert ev(model)["accuracy"] == pytest.approx(expected)
    # restricted to labels {0, 1}: the argmax over those two logits
    sub = ClassificationAccuracy(str(tmp_path / "img.jsonl"), candidate_labels=[0, 1])
    with torch.no_grad():
        logits = model(pixel_values=torch.tensor([r["pixel_values"] for r in rows])).logits[:, :2]
    assert sub(model)["accuracy"] == pytest.approx(float((logits.argmax(-1) == torch.tensor([r["label"] for r in rows])).float().mean()))
    calls = []
    result = sweep(base, fts, {"img": ev, "norm": lambda m: calls.append(1) or 1.0}, alphas=[0.0, 1.0],
                   rule=lambda metrics, refs: metrics["img"], evaluate_test="none")
    assert result.points[0].metrics["validation"]["norm"] == {"score": 1.0} and calls


def test_csv_text_with_tokenizer_in_base_folder(family_models, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    base, fts = family_models("bert", 1)
    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i + 2 for i in range(40)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    folder = tmp_path / "base-with-tokenizer"
    import shutil

    shutil.copytree(base, folder)
    fast.save_pretrained(folder)
    (tmp_path / "t.csv").write_text("text,label\n" + "".join(f"w{i} w{i + 1} w{2 * i},{i % 3}\n" for i in range(9)))
    result = sweep(folder, fts, {"t": ClassificationAccuracy(str(tmp_path / "t.csv"))}, alphas=[1.0],
                   rule="metric", evaluate_test="none")
    from transformers import BertForSequenceClassification

    model = LinesMerger.from_pretrained(folder, fts, alpha=1.0).to_model(BertForSequenceClassification)
    enc = fast([f"w{i} w{i + 1} w{2 * i}" for i in range(9)], return_tensors="pt", padding=True)
    with torch.no_grad():
        pred = model(**enc).logits.argmax(-1)
    expected = float((pred == torch.tensor([i % 3 for i in range(9)])).float().mean())
    assert result.points[0].metrics["validation"]["t"]["accuracy"] == pytest.approx(expected)


def test_cli_sweep_with_yaml_config(family_models, bert_tasks, tmp_path, capsys):
    import yaml

    base, fts = family_models("bert", 2)
    config = {
        "base_model": str(base), "models": [str(f) for f in fts], "method": "task_arithmetic",
        "grid": {"alphas": [0.3, 0.6], "betas": [0.0]},
        "tasks": {n: {"type": "classification", "validation": str(tmp_path / f"{n}_validation.jsonl"),
                      "test": str(tmp_path / f"{n}_test.jsonl")} for n in "ab"},
        "rule": "merge",
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "cli-out"
    assert main(["sweep", str(path), "--gammas", "0.5", "-o", str(out), "--save-best", str(tmp_path / "best"), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "selected: alpha" in printed and "validation:" in printed and "test:" in printed
    assert {p.name for p in out.iterdir()} == {"sweep.csv", "sweep.json", "sweep.png"}
    data = json.loads((out / "sweep.json").read_text())
    assert len(data["points"]) == 3
    assert (tmp_path / "best" / "README.md").exists() and (tmp_path / "best" / "hf_lines.json").exists()
    best = data["points"][data["best"]["index"]]
    assert json.loads((tmp_path / "best" / "hf_lines.json").read_text())["lines"]["alpha"] == pytest.approx(best["alpha"])


def test_cli_sweep_flags_and_config_errors(family_models, bert_tasks, tmp_path, capsys):
    base, fts = family_models("bert", 1)
    out = tmp_path / "flags-out"
    assert main(["sweep", "--base", str(base), "--model", str(fts[0]), "--gammas", "0,1",
                 "--task", "a", "classification", str(tmp_path / "a_validation.jsonl"),
                 "--task", "b", "classification", str(tmp_path / "b_validation.jsonl"), "-o", str(out), "-q"]) == 0
    assert "single_task" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_model: x\nmodels: [y]\ntasks: {a: {type: nope, validation: v.jsonl}}\n")
    assert main(["sweep", str(bad)]) == 2
    assert "sweep.tasks.a.type" in capsys.readouterr().err


def test_one_evaluator_scores_several_tasks_in_one_pass(family_models, tmp_path):
    from transformers import BertForSequenceClassification

    base, fts = family_models("bert", 2)
    g = torch.Generator().manual_seed(4)
    rows = [{"input_ids": torch.randint(1, 64, (5,), generator=g).tolist(), "a": i % 2, "b": 2 - i % 3} for i in range(15)]
    _write_jsonl(tmp_path / "multi.jsonl", rows)
    multi = ClassificationAccuracy(str(tmp_path / "multi.jsonl"), label_column=["a", "b"],
                                   candidate_labels={"a": [0, 1], "b": [0, 1, 2]}, batch_size=4)
    model = BertForSequenceClassification.from_pretrained(base).eval()
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    out = multi(model)
    assert len(calls) == 4  # 15 rows in batches of 4, once for both tasks
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([r["input_ids"] for r in rows])).logits
    assert out["a"]["accuracy"] == pytest.approx(float((logits[:, :2].argmax(-1) == torch.tensor([r["a"] for r in rows])).float().mean()))
    assert out["b"]["accuracy"] == pytest.approx(float((logits.argmax(-1) == torch.tensor([r["b"] for r in rows])).float().mean()))
    result = sweep(base, fts, {"group": multi}, alphas=[0.5], evaluate_test="none")
    assert result.tasks == ["a", "b"] and result.config["task_models"] == {"a": str(fts[0]), "b": str(fts[1])}
