"""An offline benchmark built and trained on CPU in minutes: the LiNeS paper's setting in miniature.

The paper fine-tunes CLIP ViTs, pre-trained on broad data, on one image task at a time
with the classification heads frozen (zero-shot heads from class-name prompts), and
measures the target task and the other, "control", tasks. Here, every piece has a small
analogue built from nothing:

* **Inputs**: sequences of ``length`` tokens drawn uniformly from ``vocab`` symbols; every
  task reads the same kind of input and has its own labelled splits.
* **Pre-training**: a GPT-2-style encoder (``GPT2ForSequenceClassification``, the last token
  classifies) trained jointly on a broad mixture of primitive tasks (``PRETRAINING_TASKS``:
  token values at fixed positions, counts, positions of extrema, ...), one head each.
* **Zero-shot heads**: the downstream tasks (``DOWNSTREAM_TASKS``) are new. Each gets a
  prototype head, the analogue of CLIP's text-prompt heads: per class, the centred mean of
  the pre-trained features of ``shots`` labelled examples, normalised and scaled by a
  temperature. All heads live in one classifier (``score``), each task in its own block of
  labels; a task's accuracy is the argmax inside its block.
* **Fine-tuning**: one task at a time, every weight but the heads (frozen, as in the paper),
  AdamW with warm-up and cosine decay. The learning rate and steps are chosen so that the
  control tasks lose accuracy: forgetting.

``build_benchmark`` writes the pre-trained model, one fine-tune per task and jsonl splits
(``input_ids``, ``label``: the label id in the shared classifier) to a folder, with fixed seeds.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from hf_lines.errors import OptionError

Labeler = Callable[[torch.Tensor], torch.Tensor]


def _clamped(v: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    return v.clamp(lo, hi) - lo


def pretraining_tasks(vocab: int, length: int) -> dict[str, Labeler]:
    """The broad pre-training mixture: primitive features of a sequence, one classification head each."""
    half = vocab // 2
    return {
        "first": lambda x: x[:, 0],
        "last": lambda x: x[:, -1],
        "middle": lambda x: x[:, length // 2],
        "first_minus_last": lambda x: x[:, 0] - x[:, -1] + vocab - 1,
        "count_low": lambda x: _clamped((x < vocab // 4).sum(1), 0, 6),
        "count_high": lambda x: _clamped((x >= vocab - vocab // 4).sum(1), 0, 6),
        "count_big": lambda x: _clamped((x >= half).sum(1), 2, 10),
        "count_even": lambda x: _clamped((x % 2 == 0).sum(1), 2, 10),
        "argmax": lambda x: x.argmax(1),
        "argmin": lambda x: x.argmin(1),
        "max": lambda x: _clamped(x.max(1).values, vocab - 7, vocab - 1),
        "min": lambda x: _clamped(x.min(1).values, 0, 6),
        "ascents": lambda x: _clamped((x[:, 1:] > x[:, :-1]).sum(1), 2, 9),
    }


def downstream_tasks(vocab: int, length: int) -> dict[str, Labeler]:
    """The eight downstream tasks: new questions about the same inputs (binary, one ternary), none a pre-training head."""
    half, quarter = vocab // 2, vocab // 4
    return {
        "first_gt_last": lambda x: (x[:, 0] > x[:, -1]).long(),
        "ends_close": lambda x: ((x[:, 0] - x[:, -1]).abs() <= 3).long(),
        "low_vs_high": lambda x: torch.sign((x < quarter).sum(1) - (x >= vocab - quarter).sum(1)).long() + 1,
        "max_first_half": lambda x: (x.argmax(1) < length // 2).long(),
        "even_majority": lambda x: ((x % 2 == 0).sum(1) > length // 2).long(),
        "big_majority": lambda x: ((x >= half).sum(1) > length // 2).long(),
        "min_small": lambda x: (x.min(1).values <= 1).long(),
        "min_first_half": lambda x: (x.argmin(1) < length // 2).long(),
    }


@dataclass
class BenchmarkConfig:
    """Sizes, steps and seeds of the benchmark (the defaults are the full run of docs/evidence.md)."""

    vocab: int = 16
    length: int = 12
    d_model: int = 48
    layers: int = 6
    heads: int = 4
    pretrain_steps: int = 800
    pretrain_lr: float = 2e-3
    finetune_steps: int = 300
    finetune_lr: float = 5e-4
    batch_size: int = 64
    shots: int = 16
    temperature: float = 10.0
    n_validation: int = 2000
    n_test: int = 2000
    tasks: list[str] = field(default_factory=lambda: list(downstream_tasks(16, 12)))
    seed: int = 0


@dataclass
class Benchmark:
    """What ``build_benchmark`` wrote: folders, data files and the label block of every task."""

    root: Path
    config: BenchmarkConfig
    base: Path
    finetuned: dict[str, Path]
    data: dict[str, Path]  # split -> jsonl with input_ids and one label column per task
    labels: dict[str, list[int]]  # task -> its label ids in the shared classifier
    seconds: dict[str, float]

    def evaluator(self, split: str, batch_size: int = 1000) -> object:
        """One ClassificationAccuracy scoring every task on ``split`` (one forward pass), each inside its own labels."""
        from hf_lines.eval.evaluators import ClassificationAccuracy

        return ClassificationAccuracy(str(self.data[split]), label_column=list(self.config.tasks),
                                      candidate_labels=self.labels, batch_size=batch_size)

    def tasks(self, batch_size: int = 1000) -> dict[str, tuple[object, object]]:
        """The ``tasks`` argument of ``hf_lines.eval.sweep``: every task, validation and test."""
        return {"synthetic": (self.evaluator("validation", batch_size), self.evaluator("test", batch_size))}


def sample(n: int, seed: int, vocab: int, length: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, length), generator=g)


def _gpt2(cfg: BenchmarkConfig, num_labels: int, id2label: dict[int, str] | None = None):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    pad = cfg.vocab  # a token id that no input uses: the classifier reads the last non-pad token
    config = GPT2Config(vocab_size=cfg.vocab + 1, n_embd=cfg.d_model, n_layer=cfg.layers, n_head=cfg.heads,
                        n_positions=cfg.length, num_labels=num_labels, pad_token_id=pad, bos_token_id=pad,
                        eos_token_id=pad, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    if id2label:
        config.id2label = id2label
        config.label2id = {v: k for k, v in id2label.items()}
    return GPT2ForSequenceClassification(config)


def _train(model, loss_fn: Callable, steps: int, lr: float, batch: int, pool: torch.Tensor, seed: int,
           frozen: tuple[str, ...] = ()) -> None:
    """AdamW, linear warm-up over 5% of the steps then cosine decay (the paper's schedule shape)."""
    g = torch.Generator().manual_seed(seed)
    params = [p for n, p in model.named_parameters() if not n.startswith(frozen)]
    for n, p in model.named_parameters():
        p.requires_grad_(not n.startswith(frozen))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(pool), (batch,), generator=g)
        loss = loss_fn(model(input_ids=pool[idx]).logits, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)


def build_benchmark(root: str | Path, config: BenchmarkConfig | None = None, *, log: Callable[[str], None] = print,
                    tasks_to_finetune: list[str] | None = None) -> Benchmark:
    """Pre-train, build zero-shot heads, fine-tune each task, and write models and data under ``root``."""
    cfg = config or BenchmarkConfig()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    pre_tasks = pretraining_tasks(cfg.vocab, cfg.length)
    all_down = downstream_tasks(cfg.vocab, cfg.length)
    unknown = [t for t in cfg.tasks if t not in all_down]
    if unknown:
        raise OptionError(f"unknown downstream task(s) {unknown}; choose from {list(all_down)}")
    down = {t: all_down[t] for t in cfg.tasks}
    torch.manual_seed(cfg.seed)
    pool = sample(50_000, cfg.seed + 1, cfg.vocab, cfg.length)  # the training stream of every stage

    # 1. pre-training on the broad mixture
    start = time.perf_counter()
    pre_labels = {k: f(pool) for k, f in pre_tasks.items()}
    sizes = {k: int(f(sample(20_000, 99, cfg.vocab, cfg.length)).max()) + 1 for k, f in pre_tasks.items()}
    offsets = _offsets(sizes)
    pre = _gpt2(cfg, sum(sizes.values()))

    def pre_loss(logits, idx):
        return sum(F.cross_entropy(logits[:, offsets[k]:offsets[k] + sizes[k]], pre_labels[k][idx]) for k in pre_tasks)

    _train(pre, pre_loss, cfg.pretrain_steps, cfg.pretrain_lr, cfg.batch_size, pool, cfg.seed + 2)
    seconds["pretrain"] = time.perf_counter() - start
    log(f"pre-trained on {len(pre_tasks)} primitive tasks ({cfg.pretrain_steps} steps, {seconds['pretrain']:.0f} s)")

    # 2. the downstream model: the pre-trained body with prototype ("zero-shot") heads
    start = time.perf_counter()
    n_classes = {t: int(f(sample(20_000, 98, cfg.vocab, cfg.length)).max()) + 1 for t, f in down.items()}
    down_offsets = _offsets(n_classes)
    id2label = {down_offsets[t] + c: f"{t}={c}" for t in down for c in range(n_classes[t])}
    base = _gpt2(cfg, sum(n_classes.values()), id2label)
    base.load_state_dict({k: v for k, v in pre.state_dict().items() if not k.startswith("score.")}, strict=False)
    base.eval()
    shots_x = sample(200 * cfg.shots, cfg.seed + 3, cfg.vocab, cfg.length)
    g = torch.Generator().manual_seed(cfg.seed + 4)
    with torch.no_grad():
        feats = base.transformer(input_ids=shots_x).last_hidden_state[:, -1]
        centre = feats.mean(0)
        weight = torch.zeros_like(base.score.weight)
        for t, f in down.items():
            y = f(shots_x)
            for c in range(n_classes[t]):
                idx = (y == c).nonzero().flatten()
                idx = idx[torch.randperm(len(idx), generator=g)[: cfg.shots]]
                proto = feats[idx].mean(0) - centre
                weight[down_offsets[t] + c] = cfg.temperature * proto / proto.norm().clamp_min(1e-8)
        base.score.weight.copy_(weight)
    base_dir = root / "base"
    base.save_pretrained(base_dir)
    seconds["heads"] = time.perf_counter() - start

    # 3. data: held-out validation and test sequences, labelled for every task (label ids of the shared classifier)
    data: dict[str, Path] = {}
    labels = {t: list(range(down_offsets[t], down_offsets[t] + n_classes[t])) for t in down}
    (root / "data").mkdir(exist_ok=True)
    for split, n, seed in (("validation", cfg.n_validation, 1000), ("test", cfg.n_test, 2000)):
        x = sample(n, cfg.seed * 10_000 + seed, cfg.vocab, cfg.length)
        columns = {t: (f(x) + down_offsets[t]).tolist() for t, f in down.items()}
        rows = [{"input_ids": ids, **{t: columns[t][i] for t in down}} for i, ids in enumerate(x.tolist())]
        data[split] = root / "data" / f"{split}.jsonl"
        data[split].write_text("".join(json.dumps(r) + "\n" for r in rows))

    # 4. one fine-tune per task, heads frozen
    finetuned: dict[str, Path] = {}
    down_labels = {t: f(pool) for t, f in down.items()}
    start = time.perf_counter()
    for k, t in enumerate(tasks_to_finetune or list(down)):
        from transformers import GPT2ForSequenceClassification

        model = GPT2ForSequenceClassification.from_pretrained(base_dir)
        lo, hi = down_offsets[t], down_offsets[t] + n_classes[t]
        _train(model, lambda logits, idx: F.cross_entropy(logits[:, lo:hi], down_labels[t][idx]), cfg.finetune_steps,
               cfg.finetune_lr, cfg.batch_size, pool, cfg.seed + 100 + list(all_down).index(t), frozen=("score.",))
        finetuned[t] = root / f"finetuned-{t}"
        model.save_pretrained(finetuned[t])
    seconds["finetune"] = time.perf_counter() - start
    log(f"fine-tuned {len(finetuned)} task(s), {cfg.finetune_steps} steps each ({seconds['finetune']:.0f} s)")
    (root / "benchmark.json").write_text(json.dumps({"config": asdict(cfg), "labels": labels}, indent=2) + "\n")
    return Benchmark(root, cfg, base_dir, finetuned, data, labels, seconds)


def _offsets(sizes: dict[str, int]) -> dict[str, int]:
    out, total = {}, 0
    for k, n in sizes.items():
        out[k] = total
        total += n
    return out
