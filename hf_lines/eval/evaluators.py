"""Evaluators: a model in, metrics out. Built-ins for classification accuracy, exact match and LM loss.

An evaluator is called as ``evaluator(model) -> {metric: value}`` and names its primary
metric (``metric``) and its direction (``higher_is_better``). ``bind(source)`` is called
once before the first evaluation with the base model's folder, so built-ins can load its
tokenizer or image processor when the data needs one. Inputs are prepared once (tokenized,
padded, batched) and reused for every grid point of a sweep.

Any callable ``f(model) -> float | dict`` works too (``as_evaluator`` wraps it).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from hf_lines.errors import OptionError
from hf_lines.eval.data import load_split


class Evaluator:
    """Base class: subclasses set ``metric`` and implement ``evaluate``."""

    metric: str = "score"
    higher_is_better: bool = True
    tasks: list[str] | None = None  # set by evaluators that score several tasks in one pass: {task: {metric: v}}

    def bind(self, source: str | Path | None) -> None:
        """Called once with the base model's folder (for its tokenizer); default: nothing."""

    def evaluate(self, model: Any) -> dict[str, float]:
        raise NotImplementedError

    def __call__(self, model: Any) -> dict[str, Any]:
        out = self.evaluate(model)
        for part in ([out[t] for t in self.tasks] if self.tasks else [out]):
            if self.metric not in part:
                raise ValueError(f"{type(self).__name__} returned {sorted(part)} without its primary metric {self.metric!r}")
        return out

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "metric": self.metric, "higher_is_better": self.higher_is_better}


class CallableEvaluator(Evaluator):
    """Wraps ``fn(model) -> float`` (the primary metric) or ``-> dict`` (holding ``metric``)."""

    def __init__(self, fn: Callable[[Any], Any], metric: str = "score", higher_is_better: bool = True):
        self.fn, self.metric, self.higher_is_better = fn, metric, higher_is_better

    def evaluate(self, model):
        out = self.fn(model)
        if isinstance(out, Mapping):
            return {k: float(v) for k, v in out.items()}
        return {self.metric: float(out)}

    def describe(self):
        return {**super().describe(), "callable": getattr(self.fn, "__qualname__", repr(self.fn))}


def as_evaluator(obj: Any) -> Evaluator:
    """An ``Evaluator`` as is; a plain callable wrapped (primary metric ``score``, higher is better)."""
    if isinstance(obj, Evaluator):
        return obj
    if callable(obj):
        return CallableEvaluator(obj)
    raise TypeError(f"an evaluator is an hf_lines.eval Evaluator or a callable model -> float, got {type(obj).__name__}")


class _DatasetEvaluator(Evaluator):
    """Shared plumbing: the split, batching, the tokenizer of the base model."""

    def __init__(self, data: Any, *, batch_size: int = 64, tokenizer: Any = None, max_examples: int | None = None):
        self.data_spec = data
        self.batch_size = int(batch_size)
        self.tokenizer = tokenizer
        self.max_examples = max_examples
        self.source: str | None = None
        self._batches: list[dict[str, Any]] | None = None

    def bind(self, source):
        self.source = str(source) if source is not None else None

    def dataset(self) -> Any:
        ds = load_split(self.data_spec)
        if self.max_examples is not None:
            ds = ds.select(range(min(self.max_examples, len(ds))))
        if len(ds) == 0:
            raise OptionError(f"{type(self).__name__}: the dataset {self._spec_label()} is empty")
        return ds

    def _spec_label(self) -> str:
        spec = self.data_spec
        return str(spec) if isinstance(spec, (str, Path, Mapping)) else type(spec).__name__

    def _get_tokenizer(self) -> Any:
        if self.tokenizer is None:
            if self.source is None:
                raise OptionError(f"{type(self).__name__}: text data needs a tokenizer: pass tokenizer= or pre-tokenized input_ids")
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.source)
        return self.tokenizer

    def batches(self, model: Any) -> list[dict[str, Any]]:
        if self._batches is None:
            self._batches = self.prepare(self.dataset(), model)
        return self._batches

    def prepare(self, ds: Any, model: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def describe(self):
        return {**super().describe(), "data": _jsonable(self.data_spec)}


class ClassificationAccuracy(_DatasetEvaluator):
    """Top-1 accuracy of a sequence or image classifier (``...ForSequenceClassification``, ``...ForImageClassification``).

    Inputs, the first column found: ``input_ids`` (token id lists, padded here), ``pixel_values``
    (arrays), ``text`` (tokenized with the base model's tokenizer; ``text_pair`` too), ``image``
    (PIL images, through the base model's image processor). ``input_column`` overrides the choice.
    Labels: integer ids, or strings mapped through ``model.config.label2id``.
    ``candidate_labels`` restricts the argmax to those label ids (a task-specific head, as the
    LiNeS paper's per-task classification heads, inside one shared classifier).

    Several tasks on the same inputs: ``label_column=["task_a", "task_b"]`` (one column per
    task) and ``candidate_labels={"task_a": [...], ...}`` score every task from one forward
    pass; the sweep then sees one task per column.
    """

    metric = "accuracy"

    def __init__(self, data: Any, *, input_column: str | None = None, label_column: str | Sequence[str] = "label",
                 text_pair_column: str | None = None,
                 candidate_labels: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
                 batch_size: int = 64, tokenizer: Any = None, image_processor: Any = None,
                 max_length: int | None = None, max_examples: int | None = None):
        super().__init__(data, batch_size=batch_size, tokenizer=tokenizer, max_examples=max_examples)
        self.input_column, self.text_pair_column = input_column, text_pair_column
        self.label_columns = [label_column] if isinstance(label_column, str) else list(label_column)
        self.tasks = None if isinstance(label_column, str) else list(self.label_columns)
        if isinstance(candidate_labels, Mapping):
            unknown = sorted(set(candidate_labels) - set(self.label_columns))
            if unknown:
                raise OptionError(f"candidate_labels names {unknown}, which are not label columns {self.label_columns}")
            self.candidate_labels = {c: list(v) for c, v in candidate_labels.items()}
        else:
            same = list(candidate_labels) if candidate_labels is not None else None
            self.candidate_labels = {c: same for c in self.label_columns}
        self.image_processor, self.max_length = image_processor, max_length

    def prepare(self, ds, model):
        column = self.input_column or next((c for c in ("input_ids", "pixel_values", "text", "image") if c in ds.column_names), None)
        if column is None or column not in ds.column_names:
            raise OptionError(f"ClassificationAccuracy: no input column ({column or 'input_ids, pixel_values, text or image'}) "
                             f"in {ds.column_names}; pass input_column=")
        missing = [c for c in self.label_columns if c not in ds.column_names]
        if missing:
            raise OptionError(f"ClassificationAccuracy: no label column(s) {missing} in {ds.column_names}")
        labels = {c: torch.tensor(_label_ids(ds[c], model)) for c in self.label_columns}
        out = []
        for start in range(0, len(ds), self.batch_size):
            rows = ds[start:start + self.batch_size]
            y = {c: v[start:start + self.batch_size] for c, v in labels.items()}
            out.append({"inputs": self._inputs(column, rows, model), "labels": y})
        return out

    def _inputs(self, column: str, rows: dict[str, list], model: Any) -> dict[str, torch.Tensor]:
        values = rows[column]
        if column == "pixel_values":
            return {"pixel_values": torch.tensor(values, dtype=torch.float32)}
        if column == "image" or _looks_like_image(values[0]):
            processor = self.image_processor
            if processor is None:
                from transformers import AutoImageProcessor

                processor = self.image_processor = AutoImageProcessor.from_pretrained(self.source)
            return {"pixel_values": processor(images=values, return_tensors="pt")["pixel_values"]}
        if isinstance(values[0], str):
            tok = self._get_tokenizer()
            pair = rows[self.text_pair_column] if self.text_pair_column else None
            enc = tok(values, pair, padding=True, truncation=self.max_length is not None, max_length=self.max_length,
                      return_tensors="pt")
            return dict(enc)
        return pad_ids(values, _pad_id(model, self.tokenizer))

    def evaluate(self, model):
        correct = dict.fromkeys(self.label_columns, 0)
        total = 0
        with torch.inference_mode():
            for batch in self.batches(model):
                logits = model(**_to(batch["inputs"], model)).logits.float().cpu()
                for c, y in batch["labels"].items():
                    ids = self.candidate_labels[c]
                    if ids is not None:
                        index = torch.tensor(ids)
                        pred = index[logits[:, index].argmax(-1)]
                    else:
                        pred = logits.argmax(-1)
                    correct[c] += int((pred == y).sum())
                total += len(next(iter(batch["labels"].values())))
        scores = {c: {"accuracy": correct[c] / total, "n": float(total)} for c in self.label_columns}
        return scores if self.tasks else scores[self.label_columns[0]]

    def describe(self):
        return {**super().describe(), "label_columns": self.label_columns, "candidate_labels": self.candidate_labels}


class ExactMatch(_DatasetEvaluator):
    """Greedy generation compared with a target: the fraction that match exactly.

    Text columns ``prompt`` and ``target`` (names configurable): the decoded continuation,
    stripped, must equal the stripped target. Pre-tokenized columns ``input_ids`` and
    ``target_ids``: the first ``len(target_ids)`` generated tokens must equal them.
    Decoder-only models get left padding; encoder-decoder models generate from the prompt.
    """

    metric = "exact_match"

    def __init__(self, data: Any, *, prompt_column: str = "prompt", target_column: str = "target",
                 max_new_tokens: int | None = None, batch_size: int = 32, tokenizer: Any = None,
                 normalize: Callable[[str], str] | None = None, max_examples: int | None = None):
        super().__init__(data, batch_size=batch_size, tokenizer=tokenizer, max_examples=max_examples)
        self.prompt_column, self.target_column = prompt_column, target_column
        self.max_new_tokens, self.normalize = max_new_tokens, normalize or (lambda s: s.strip())

    def prepare(self, ds, model):
        tokenized = "input_ids" in ds.column_names and "target_ids" in ds.column_names
        if not tokenized and not {self.prompt_column, self.target_column} <= set(ds.column_names):
            raise OptionError(f"ExactMatch: need columns {self.prompt_column!r} and {self.target_column!r} "
                             f"(or input_ids and target_ids), found {ds.column_names}")
        pad = _pad_id(model, self.tokenizer if not tokenized else None)
        left = not getattr(model.config, "is_encoder_decoder", False)
        out = []
        for start in range(0, len(ds), self.batch_size):
            rows = ds[start:start + self.batch_size]
            if tokenized:
                prompts, targets = rows["input_ids"], [list(t) for t in rows["target_ids"]]
                new = self.max_new_tokens or max(len(t) for t in targets)
            else:
                tok = self._get_tokenizer()
                prompts = [tok(p, add_special_tokens=bool(getattr(model.config, "is_encoder_decoder", False)))["input_ids"]
                           for p in rows[self.prompt_column]]
                targets = [self.normalize(t) for t in rows[self.target_column]]
                new = self.max_new_tokens or max(len(tok(t, add_special_tokens=False)["input_ids"]) for t in targets) + 1
            out.append({"inputs": pad_ids(prompts, pad, left=left), "targets": targets, "new": new, "tokenized": tokenized})
        return out

    def evaluate(self, model):
        correct = total = 0
        pad = _pad_id(model, self.tokenizer)
        with torch.inference_mode():
            for batch in self.batches(model):
                inputs = _to(batch["inputs"], model)
                gen = model.generate(**inputs, max_new_tokens=batch["new"], do_sample=False, num_beams=1,
                                     pad_token_id=pad, **({} if batch["tokenized"] else {}))
                if not getattr(model.config, "is_encoder_decoder", False):
                    gen = gen[:, inputs["input_ids"].shape[1]:]
                for row, target in zip(gen.cpu().tolist(), batch["targets"]):
                    if batch["tokenized"]:
                        ok = row[:len(target)] == target
                    else:
                        ok = self.normalize(self._get_tokenizer().decode(row, skip_special_tokens=True)) == target
                    correct += int(ok)
                    total += 1
        return {"exact_match": correct / total, "n": float(total)}


class LanguageModelLoss(_DatasetEvaluator):
    """Mean per-token cross-entropy of a causal LM (every predicted token weighs the same) and its perplexity.

    Column ``text`` (tokenized with the base model's tokenizer) or ``input_ids`` (token lists).
    The primary metric is ``loss``, lower is better; ``perplexity`` = exp(loss).
    """

    metric = "loss"
    higher_is_better = False

    def __init__(self, data: Any, *, text_column: str = "text", batch_size: int = 16, tokenizer: Any = None,
                 max_length: int | None = None, max_examples: int | None = None):
        super().__init__(data, batch_size=batch_size, tokenizer=tokenizer, max_examples=max_examples)
        self.text_column, self.max_length = text_column, max_length

    def prepare(self, ds, model):
        column = "input_ids" if "input_ids" in ds.column_names else self.text_column
        if column not in ds.column_names:
            raise OptionError(f"LanguageModelLoss: need column {self.text_column!r} or input_ids, found {ds.column_names}")
        out = []
        for start in range(0, len(ds), self.batch_size):
            values = ds[start:start + self.batch_size][column]
            if column != "input_ids":
                tok = self._get_tokenizer()
                values = [tok(v, truncation=self.max_length is not None, max_length=self.max_length)["input_ids"] for v in values]
            elif self.max_length:
                values = [v[: self.max_length] for v in values]
            out.append(pad_ids(values, _pad_id(model, self.tokenizer)))
        return out

    def evaluate(self, model):
        total_loss, total_tokens = 0.0, 0
        with torch.inference_mode():
            for batch in self.batches(model):
                inputs = _to(batch, model)
                logits = model(**inputs).logits.float()
                target = inputs["input_ids"][:, 1:]
                mask = inputs["attention_mask"][:, 1:].bool()
                losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), target, reduction="none")
                total_loss += float(losses[mask].double().sum())
                total_tokens += int(mask.sum())
        loss = total_loss / max(total_tokens, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": float(total_tokens)}


# --------------------------------------------------------------------------- helpers
def pad_ids(seqs: Sequence[Sequence[int]], pad: int, left: bool = False) -> dict[str, torch.Tensor]:
    """Token id lists -> ``input_ids`` and ``attention_mask`` padded to the longest (on the left for generation)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s)
        if n:
            sl = slice(width - n, width) if left else slice(0, n)
            ids[i, sl] = torch.tensor(list(s), dtype=torch.long)
            mask[i, sl] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _pad_id(model: Any, tokenizer: Any) -> int:
    for source in (getattr(model, "config", None), tokenizer, getattr(model, "generation_config", None)):
        pad = getattr(source, "pad_token_id", None) if source is not None else None
        if isinstance(pad, int):
            return pad
    return 0


def _label_ids(values: Sequence[Any], model: Any) -> list[int]:
    if values and isinstance(values[0], str):
        label2id = getattr(getattr(model, "config", None), "label2id", None) or {}
        missing = sorted({v for v in values if v not in label2id})
        if missing:
            raise OptionError(f"labels {missing[:5]} are not in model.config.label2id {sorted(label2id)[:10]}")
        return [int(label2id[v]) for v in values]
    return [int(v) for v in values]


def _looks_like_image(value: Any) -> bool:
    return type(value).__module__.startswith("PIL")


def _to(batch: Mapping[str, torch.Tensor], model: Any) -> dict[str, torch.Tensor]:
    device = getattr(model, "device", torch.device("cpu"))
    dtype = getattr(model, "dtype", torch.float32)
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in batch.items()}


def _jsonable(spec: Any) -> Any:
    if isinstance(spec, (str, int, float, bool)) or spec is None:
        return spec
    if isinstance(spec, Path):
        return str(spec)
    if isinstance(spec, Mapping) and all(isinstance(k, str) for k in spec) and len(spec) <= 8:
        return {k: _jsonable(v) for k, v in spec.items()} if not any(isinstance(v, list) and len(v) > 20 for v in spec.values()) else "<in memory>"
    return f"<{type(spec).__name__}>"
