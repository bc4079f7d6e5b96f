"""Score the outputs of a rewarded-soup sweep with reward models.

For each output: generate a response to every prompt with the policy (greedy, or sampled
with one seed shared by all outputs), then score prompt + response with each reward
model (any ``AutoModelForSequenceClassification``, through its own tokenizer; the reward is
the logit of a chosen label, index 0 by default). Generation runs output by output (a
full output can be deleted once its responses exist); scoring runs reward model by
reward model, so at most one policy or one reward model is in memory at a time.

Files, under ``OUTDIR/eval/``: ``generations/<output>.jsonl``, ``rewards.csv``,
``rewards.json`` and ``pareto.png`` (``hf_lines.eval.pareto``).
"""
from __future__ import annotations

import contextlib
import csv
import gc
import inspect
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from hf_lines.errors import LinesError, OptionError
from hf_lines.redact import scrub

log = logging.getLogger(__name__)
EVAL_DIR = "eval"


class EvaluationError(LinesError):
    """A reward model, prompt set or policy that cannot be used as asked."""


# ---------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class RewardModelSpec:
    """A reward model: folder or Hub id[@revision], the label whose logit is the reward, and a column name."""

    model: str
    label: int | str = 0
    name: str | None = None

    @property
    def column(self) -> str:
        stem = self.name or Path(self.model.split("@")[0].rstrip("/")).name
        return stem if self.label in (0, "0") or self.name else f"{stem}[{self.label}]"


@dataclass(frozen=True)
class GenerationSettings:
    """How each policy answers: greedy (default) or sampled with ``seed``; ``prompt_template`` formats a prompt."""

    max_new_tokens: int = 64
    do_sample: bool = False
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 8
    prompt_template: str = "{prompt}"
    score_template: str = "{input}{response}"  # the reward models' text: {input} (templated prompt), {prompt}, {response}

    def __post_init__(self) -> None:
        if "{prompt}" not in self.prompt_template:
            raise OptionError(f"prompt_template must contain {{prompt}}, got {self.prompt_template!r}")
        if "{response}" not in self.score_template:
            raise OptionError(f"score_template must contain {{response}}, got {self.score_template!r}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise OptionError("max_new_tokens and batch_size must be at least 1")


def resolve_device(device: str | None = None) -> Any:
    """``device`` as given, else accelerate's choice for this process (a GPU when there is one)."""
    import torch

    if device:
        return torch.device(device)
    try:
        from accelerate import Accelerator

        return Accelerator().device
    except Exception as e:  # accelerate misconfigured: say so and use what torch sees
        log.warning("accelerate could not pick a device (%s); using %s", e, "cuda" if torch.cuda.is_available() else "cpu")
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _dtype_arg(dtype: str | None) -> Any:
    import torch

    if dtype in (None, "auto"):
        return "auto"
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise EvaluationError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return value


# ---------------------------------------------------------------------------------------- prompts
def load_prompts(source: str | Path, *, column: str = "prompt", split: str = "train", config: str | None = None,
                 limit: int | None = None) -> list[str]:
    """Prompts from a local .jsonl/.json/.csv/.parquet/.txt file, a local dataset folder or a Hub dataset (``datasets``)."""
    import datasets

    path = Path(str(source)).expanduser()
    kinds = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
    try:
        if path.is_file():
            kind = kinds.get(path.suffix.lower())
            if kind is None:
                raise EvaluationError(f"{path}: unknown prompt file type; use .jsonl, .json, .csv, .parquet or .txt")
            data = datasets.load_dataset(kind, data_files=str(path), split="train")
            if kind == "text" and column not in data.column_names:
                data = data.rename_column("text", column)
        else:
            data = datasets.load_dataset(str(source), config, split=split)
    except EvaluationError:
        raise
    except Exception as e:  # a Hub dataset's error may echo the token: scrubbed, and not chained
        raise EvaluationError(
            f"cannot load prompts from {source} (split {split!r}): {type(e).__name__}: {scrub(e)}"
        ) from None
    if column not in data.column_names:
        raise EvaluationError(f"{source} has no column {column!r}; its columns are {data.column_names} (use --prompt-column)")
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    prompts = [str(p) for p in data[column]]
    if not prompts:
        raise EvaluationError(f"{source} holds no prompts")
    return prompts


# ---------------------------------------------------------------------------------------- policies
def load_tokenizer(folders: Sequence[str | Path], padding_side: str) -> Any:
    from transformers import AutoTokenizer

    errors = []
    for folder in folders:
        try:
            tok = AutoTokenizer.from_pretrained(str(folder))
            break
        except Exception as e:  # no tokenizer files here: try the next folder
            errors.append(f"{folder}: {scrub(e)}")
    else:
        raise EvaluationError("no tokenizer found in " + "; ".join(errors))
    tok.padding_side = padding_side
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise EvaluationError(f"the tokenizer of {folders[0]} has neither a pad nor an eos token; add a pad token")
        tok.pad_token = tok.eos_token
    return tok


class PolicyLoader:
    """Loads each output as a model: a full folder, or an adapter on a base kept in memory between outputs."""

    def __init__(self, device: Any, dtype: str | None = "auto"):
        self.device = device
        self.dtype = _dtype_arg(dtype)
        self._base: Any = None
        self._base_path: str | None = None

    def _load_args(self) -> dict[str, Any]:
        # On an accelerator, load straight onto it: a 7B model never passes through host memory in full.
        placed = {"device_map": str(self.device)} if getattr(self.device, "type", "cpu") != "cpu" else {}
        return {"dtype": self.dtype, **placed}

    def _auto_class(self, folder: str | Path) -> Any:
        import transformers

        config = transformers.AutoConfig.from_pretrained(str(folder))
        if getattr(config, "is_encoder_decoder", False):
            return transformers.AutoModelForSeq2SeqLM
        return transformers.AutoModelForCausalLM

    @contextlib.contextmanager
    def open(self, path: str | Path, fmt: str, load_on: str | None) -> Iterator[Any]:
        if fmt == "adapter":
            from peft import PeftModel

            if load_on is None:
                raise EvaluationError(f"{path} is an adapter but soup.json names no model to load it on")
            if self._base_path != load_on:
                self.close()
                self._base = self._auto_class(load_on).from_pretrained(load_on, **self._load_args()).to(self.device)
                self._base_path = load_on
            model = PeftModel.from_pretrained(self._base, str(path)).eval()
            try:
                yield model
            finally:
                self._base = model.unload()  # the base without the LoRA layers, for the next adapter
        else:
            model = self._auto_class(path).from_pretrained(str(path), **self._load_args()).to(self.device).eval()
            big = is_big(model)
            try:
                yield model
            finally:
                del model
                if big:
                    free_memory()

    def close(self) -> None:
        big = self._base is not None and is_big(self._base)
        self._base = self._base_path = None
        if big:
            free_memory()


def is_big(model: Any) -> bool:
    """Worth a garbage collection after use (a full collection costs ~0.5 s with transformers imported)."""
    return sum(p.numel() for p in model.parameters()) > 50_000_000


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def generate(model: Any, tokenizer: Any, inputs: Sequence[str], settings: GenerationSettings) -> list[str]:
    """Responses (new tokens only, special tokens dropped) to ``inputs``, in batches."""
    import torch
    from transformers import set_seed

    set_seed(settings.seed)  # every output draws the same random numbers: the sweep differs by weights only
    device = next(model.parameters()).device
    kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "do_sample": settings.do_sample,
                              "pad_token_id": tokenizer.pad_token_id}
    if settings.do_sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)  # silence sampling defaults of generation_config
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    out: list[str] = []
    for start in range(0, len(inputs), settings.batch_size):
        batch = list(inputs[start:start + settings.batch_size])
        enc = tokenizer(batch, return_tensors="pt", padding=True).to(device)
        with torch.no_grad():
            ids = model.generate(**enc, **kwargs)
        new = ids if encoder_decoder else ids[:, enc["input_ids"].shape[1]:]
        out += tokenizer.batch_decode(new, skip_special_tokens=True)
    return out


# ---------------------------------------------------------------------------------------- reward models
class RewardModel:
    """A sequence-classification reward model with its own tokenizer; ``score(texts)`` gives one float per text."""

    def __init__(self, spec: RewardModelSpec, device: Any, dtype: str | None = "auto", max_length: int = 1024):
        from transformers import AutoModelForSequenceClassification

        self.spec = spec
        path = spec.model
        revision = None
        if "@" in path and not Path(path).exists():
            path, revision = path.split("@", 1)
        try:
            placed = {"device_map": str(device)} if getattr(device, "type", "cpu") != "cpu" else {}
            self.model = AutoModelForSequenceClassification.from_pretrained(
                path, revision=revision, dtype=_dtype_arg(dtype), **placed).to(device).eval()
        except Exception as e:  # a Hub download error may echo the token: scrubbed, and not chained
            raise EvaluationError(
                f"cannot load the reward model {spec.model} as a sequence classifier: {type(e).__name__}: {scrub(e)}"
            ) from None
        self.tokenizer = load_tokenizer([path], padding_side="right")
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id  # needed to find each text's last token
        self.index = self._label_index(spec.label)
        self.max_length = max_length
        # A tokenizer may return inputs the model does not take (token_type_ids for a LLaMA classifier).
        self._accepts = set(inspect.signature(self.model.forward).parameters)

    def _label_index(self, label: int | str) -> int:
        n = int(self.model.config.num_labels)
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            label2id = {str(k): int(v) for k, v in (self.model.config.label2id or {}).items()}
            if label not in label2id:
                raise EvaluationError(f"reward model {self.spec.model} has no label {label!r}; its labels are {sorted(label2id)}")
            return label2id[label]
        index = int(label)
        if not -n <= index < n:
            raise EvaluationError(f"reward model {self.spec.model} has {n} label(s); label index {index} is out of range")
        return index

    def score(self, texts: Sequence[str], batch_size: int = 8) -> list[float]:
        import torch

        device = next(self.model.parameters()).device
        out: list[float] = []
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[start:start + batch_size]), return_tensors="pt", padding=True,
                                 truncation=True, max_length=self.max_length).to(device)
            with torch.no_grad():
                logits = self.model(**{k: v for k, v in enc.items() if k in self._accepts}).logits
            out += logits[:, self.index].float().cpu().tolist()
        return out


# ---------------------------------------------------------------------------------------- results
@dataclass
class RewardTable:
    """Mean reward per reward model per output; ``rows``: name, variant, lambda, weights, mean, std, n."""

    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


    def variants(self) -> list[str]:
        return list(dict.fromkeys(r["variant"] for r in self.rows))

    def format(self) -> str:
        from hf_lines.publish.tables import format_table

        header = ["output", "variant", "lambda"] + [f"{c} (mean)" for c in self.columns]
        body = [[r["name"], r["variant"], r["lambda"], *(r["mean"][c] for c in self.columns)] for r in self.rows]
        return format_table(header, body)

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["output", "variant", "lambda", "weights", *(f"{c}_mean" for c in self.columns),
                        *(f"{c}_std" for c in self.columns), "n"])
            for r in self.rows:
                w.writerow([r["name"], r["variant"], "" if r["lambda"] is None else r["lambda"],
                            " ".join(repr(x) for x in r["weights"]), *(repr(r["mean"][c]) for c in self.columns),
                            *(repr(r["std"][c]) for c in self.columns), r["n"]])
        return path

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / len(values))
