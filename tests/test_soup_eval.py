"""Evaluating a rewarded-soup sweep with reward models, offline, on tiny models.

The policies are tiny LLaMAs with a word-level tokenizer built with ``tokenizers``; the reward
models are a tiny ``LlamaForSequenceClassification`` (one label) and a tiny
``BertForSequenceClassification`` (labels ``bad``/``good``), each with its own tokenizer. Every
mean in the table is checked against generation and scoring written out plainly here.
"""
from __future__ import annotations

import csv
import json

import pytest
import torch
import transformers as tf

import tiny_adapters
import tiny_models
from hf_lines import RewardedSoup
from hf_lines.cli import main
from hf_lines.eval import GenerationSettings, load_prompts
from hf_lines.eval.pareto import dominates, hypervolume_2d, pareto_front
from hf_lines.eval.rewards import EvaluationError
from hf_lines.soups.evaluate import SoupEvaluator

PROMPTS = ["t1 t2 t3", "t7 t8", "t20 t21 t22 t23"]
WORDS = [f"t{i}" for i in range(60)]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: torch's thread pool costs more than the work (x100 on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def word_tokenizer(words, folder):
    """A word-level tokenizer (whitespace split) saved with save_pretrained, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                      unk_token="<unk>")
    fast.save_pretrained(folder)
    return fast


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("soup-eval")
    torch.set_num_threads(1)
    base, fts = tiny_models.make_family(root, "llama", 2, torch.float32)
    for folder in (base, *fts):
        word_tokenizer(WORDS, folder)
    p1 = tiny_adapters.make_adapter("llama", base, root / "lora1", seed=1, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    p2 = tiny_adapters.make_adapter("llama", base, root / "lora2", seed=2, r=2, lora_alpha=2, target_modules=["o_proj"])
    torch.manual_seed(7)
    rm_llama = root / "rm-llama"
    tok = word_tokenizer(WORDS[::2] + ["x"], rm_llama)  # its own vocabulary: odd words are <unk> to it
    tf.LlamaForSequenceClassification(tf.LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, num_labels=1, pad_token_id=0)).save_pretrained(rm_llama)
    rm_bert = root / "rm-bert"
    tok = word_tokenizer(WORDS, rm_bert)
    tf.BertForSequenceClassification(tf.BertConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=64, num_labels=2, id2label={0: "bad", 1: "good"}, label2id={"bad": 0, "good": 1},
        pad_token_id=0, initializer_range=1.0)).save_pretrained(rm_bert)
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS)))
    with open(root / "prompts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "other"])
        w.writerows([[p, 0] for p in PROMPTS])
    return dict(root=root, base=base, fts=fts, p1=p1, p2=p2, rm_llama=rm_llama, rm_bert=rm_bert)


def reference_mean(model_folder, tok_folder, rm_folder, label, settings, adapter_base=None):
    """Generation and scoring written out plainly: one prompt at a time, no padding anywhere."""
    tok = tf.AutoTokenizer.from_pretrained(tok_folder)
    if adapter_base is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(tf.AutoModelForCausalLM.from_pretrained(adapter_base), model_folder)
    else:
        model = tf.AutoModelForCausalLM.from_pretrained(model_folder)
    model.eval()
    rm = tf.AutoModelForSequenceClassification.from_pretrained(rm_folder).eval()
    rm_tok = tf.AutoTokenizer.from_pretrained(rm_folder)
    rewards = []
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=settings.max_new_tokens, do_sample=False, pad_token_id=0,
                                 temperature=None, top_p=None, top_k=None)
        response = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        enc = rm_tok(prompt + response, return_tensors="pt")
        with torch.no_grad():
            logits = rm(**{k: v for k, v in enc.items() if k != "token_type_ids" or "bert" in str(rm_folder)}).logits
        rewards.append(float(logits[0, label]))
    return sum(rewards) / len(rewards)


def test_evaluation_matches_plain_generation_and_scoring(setup, tmp_path):
    soup = RewardedSoup.from_pretrained(setup["base"], setup["fts"], alpha=0.3, beta=0.6)
    out = tmp_path / "soup"
    prompts = load_prompts(setup["root"] / "prompts.jsonl")
    assert prompts == PROMPTS
    settings = GenerationSettings(max_new_tokens=4, batch_size=2)
    evaluator = SoupEvaluator(out, [str(setup["rm_llama"]), str(setup["rm_bert"])], prompts, settings=settings,
                              device="cpu", dtype="float32", reward_labels=["0", "good"])
    soup.save_pretrained(out, lambdas="0,1", include_plain=True, progress=False, on_output=evaluator.add_output)
    table = evaluator.score()
    assert table.columns == ["rm-llama", "rm-bert[good]"]
    assert [r["name"] for r in table.rows] == ["lam0.00", "lam1.00", "plain-lam0.00", "plain-lam1.00"]
    row = next(r for r in table.rows if r["name"] == "lam1.00")
    for column, rm, label in (("rm-llama", setup["rm_llama"], 0), ("rm-bert[good]", setup["rm_bert"], 1)):
        want = reference_mean(out / "lam1.00", out / "lam1.00", rm, label, settings)
        assert row["mean"][column] == pytest.approx(want, rel=1e-4, abs=1e-6)
    # the plain soup at lam = 1 is policy 1: same responses as policy 1 itself
    gens = [json.loads(line) for line in (out / "eval" / "generations" / "plain-lam1.00.jsonl").read_text().splitlines()]
    assert [g["prompt"] for g in gens] == PROMPTS
    want = reference_mean(setup["fts"][0], setup["fts"][0], setup["rm_llama"], 0, settings)
    assert next(r for r in table.rows if r["name"] == "plain-lam1.00")["mean"]["rm-llama"] == pytest.approx(want, rel=1e-4)
    # files: CSV, JSON, Pareto plot
    rows = list(csv.DictReader(open(out / "eval" / "rewards.csv")))
    assert [r["output"] for r in rows] == [r["name"] for r in table.rows] and "rm-llama_mean" in rows[0]
    saved = json.loads((out / "eval" / "rewards.json").read_text())
    assert set(saved["settings"]["pareto"]["variants"]) == {"lines", "plain"}
    png = (out / "eval" / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_lora_outputs_are_evaluated_on_their_base(setup, tmp_path):
    soup = RewardedSoup.from_pretrained(setup["base"], [setup["p1"], setup["p2"]], alpha=0.5, beta=0.5)
    out = tmp_path / "soup"
    index = soup.save_pretrained(out, lambdas="0.5", progress=False)
    assert index.outputs[0]["format"] == "adapter"
    settings = GenerationSettings(max_new_tokens=3)
    table = SoupEvaluator(out, [str(setup["rm_llama"])], PROMPTS, settings=settings, device="cpu").run()
    want = reference_mean(out / "lam0.50", setup["base"], setup["rm_llama"], 0, settings, adapter_base=setup["base"])
    assert table.rows[0]["mean"]["rm-llama"] == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_cli_soup_eval_discards_models_and_evaluate_command(setup, tmp_path, capsys):
    out = tmp_path / "soup"
    args = ["soup", str(setup["base"]), *map(str, setup["fts"]), "--lambdas", "0:1:3", "--alpha", "0.2", "--beta", "0.8",
            "-o", str(out), "-q", "--eval", "--discard-models", "--reward-model", str(setup["rm_llama"]),
            "--reward-model", str(setup["rm_bert"]), "--reward-label", "0", "--reward-label", "good",
            "--prompts", str(setup["root"] / "prompts.csv"), "--prompt-column", "question", "--max-new-tokens", "3",
            "--sample", "--seed", "3", "--device", "cpu", "--prompt-template", "{prompt} t0"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Pareto front" in printed and "plain-lam0.50" in printed  # the plain baseline comes with --eval
    assert not (out / "lam0.50").exists() and (out / "eval" / "generations" / "lam0.50.jsonl").exists()  # discarded
    first = [json.loads(x) for x in (out / "eval" / "generations" / "lam0.50.jsonl").read_text().splitlines()]
    assert first[0]["input"] == "t1 t2 t3 t0"
    saved = json.loads((out / "eval" / "rewards.json").read_text())
    assert len(saved["rows"]) == 6 and saved["settings"]["generation"]["do_sample"] is True

    kept = tmp_path / "kept"
    assert main(["soup", str(setup["base"]), *map(str, setup["fts"]), "--lambdas", "0.5", "-o", str(kept), "-q"]) == 0
    assert main(["evaluate", str(kept), "--reward-model", str(setup["rm_bert"]), "--reward-label", "bad",
                 "--prompts", str(setup["root"] / "prompts.jsonl"), "--limit", "2", "--max-new-tokens", "2",
                 "--device", "cpu"]) == 0
    saved = json.loads((kept / "eval" / "rewards.json").read_text())
    assert saved["columns"] == ["rm-bert[bad]"] and saved["rows"][0]["n"] == 2 and saved["rows"][0]["variant"] == "plain"
    assert (kept / "eval" / "pareto.png").stat().st_size > 0


def test_prompt_and_label_errors(setup, tmp_path):
    with pytest.raises(EvaluationError, match="columns are"):
        load_prompts(setup["root"] / "prompts.csv", column="prompt")
    from hf_lines.eval.rewards import RewardModel, RewardModelSpec

    with pytest.raises(EvaluationError, match="no label 'great'"):
        RewardModel(RewardModelSpec(str(setup["rm_bert"]), "great"), torch.device("cpu"))
    with pytest.raises(EvaluationError, match="out of range"):
        RewardModel(RewardModelSpec(str(setup["rm_llama"]), 3), torch.device("cpu"))


def test_pareto_front_and_hypervolume():
    points = [[0, 3], [1, 2], [2, 2], [3, 0], [1, 1], [2, 2]]
    assert dominates([2, 2], [1, 2]) and not dominates([2, 2], [2, 2]) and not dominates([3, 0], [0, 3])
    assert pareto_front(points) == [0, 2, 3, 5]
    assert hypervolume_2d([[0, 3], [2, 2], [3, 0]], [0, 0]) == pytest.approx(2 * 2 + 0 * 1 + 0)
    assert hypervolume_2d([[1, 3], [2, 2], [3, 1]], [0, 0]) == pytest.approx(3 * 1 + 2 * 1 + 1 * 1)
