"""Evaluate a sweep's outputs (``soup.json``) with reward models: generations, reward table, Pareto front."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from hf_lines.eval.pareto import front_summary, plot_pareto
from hf_lines.eval.rewards import (
    EVAL_DIR,
    EvaluationError,
    GenerationSettings,
    PolicyLoader,
    RewardModel,
    RewardModelSpec,
    RewardTable,
    free_memory,
    is_big,
    load_tokenizer,
    mean_std,
    generate,
    resolve_device,
)
from hf_lines.soups.index import SoupIndex

_FIELD = re.compile(r"\{(input|prompt|response)\}")


def fill(template: str, **values: str) -> str:
    """``template`` with {input}, {prompt}, {response} replaced in one pass (braces in the values stay as they are)."""
    return _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def coerce_reward_models(specs: Sequence[RewardModelSpec | str], labels: Sequence[int | str] | None = None) -> list[RewardModelSpec]:
    """Specs from paths/ids and labels (one label for all, or one per model); column names made unique."""
    labels = list(labels or [])
    if len(labels) not in (0, 1, len(specs)):
        raise EvaluationError(f"{len(labels)} reward labels given for {len(specs)} reward models; give one, or one per model")
    out = []
    for i, s in enumerate(specs):
        if not isinstance(s, RewardModelSpec):
            label = labels[i] if len(labels) == len(specs) else labels[0] if labels else 0
            s = RewardModelSpec(str(s), label)
        out.append(s)
    seen: dict[str, int] = {}
    unique = []
    for s in out:
        col = s.column
        seen[col] = seen.get(col, 0) + 1
        unique.append(s if seen[col] == 1 else RewardModelSpec(s.model, s.label, f"{col}#{seen[col]}"))
    return unique


class SoupEvaluator:
    """Generate with each output as it becomes available (``add_output``), then score everything (``score``).

    ``add_output`` fits ``RewardedSoup.save_pretrained(on_output=...)``: with ``keep=False`` a full
    output is deleted right after its responses are written, so a sweep larger than the disk can
    still be evaluated.
    """

    def __init__(
        self,
        outdir: str | Path,
        reward_models: Sequence[RewardModelSpec | str],
        prompts: Sequence[str],
        *,
        settings: GenerationSettings | None = None,
        device: str | None = None,
        dtype: str | None = "auto",
        max_length: int = 1024,
        reward_labels: Sequence[int | str] | None = None,
    ):
        if not reward_models:
            raise EvaluationError("give at least one reward model")
        self.outdir = Path(outdir).expanduser().resolve()
        self.reward_models = coerce_reward_models(reward_models, reward_labels)
        self.prompts = list(prompts)
        self.settings = settings or GenerationSettings()
        self.device = resolve_device(device)
        self.dtype = dtype
        self.max_length = max_length
        self.loader = PolicyLoader(self.device, dtype)
        self.eval_dir = self.outdir / EVAL_DIR
        self.entries: dict[str, dict[str, Any]] = {}
        self.responses: dict[str, list[str]] = {}

    @property
    def inputs(self) -> list[str]:
        return [fill(self.settings.prompt_template, prompt=p) for p in self.prompts]

    def add_output(self, entry: dict[str, Any]) -> None:
        """Generate one output's responses (entry: a ``soup.json`` output record, with ``path`` optional)."""
        info = SoupIndex.load(self.outdir).info
        path = Path(entry.get("path") or self.outdir / entry["name"])
        if not path.is_dir():
            raise EvaluationError(f"output {entry['name']} is not on disk at {path} (deleted after an earlier run?)")
        tokenizer = load_tokenizer([path, info.get("tokenizer") or path], padding_side="left")
        with self.loader.open(path, entry.get("format", "model"), info.get("load_on")) as model:
            responses = generate(model, tokenizer, self.inputs, self.settings)
        self.entries[entry["name"]] = entry
        self.responses[entry["name"]] = responses
        folder = self.eval_dir / "generations"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{entry['name']}.jsonl", "w") as f:
            for p, i, r in zip(self.prompts, self.inputs, responses):
                f.write(json.dumps({"prompt": p, "input": i, "response": r}) + "\n")

    def score(self, *, save: bool = True, axes: tuple[int, int] = (0, 1)) -> RewardTable:
        """Score every generated output with every reward model (one loaded at a time); save CSV, JSON and plot."""
        self.loader.close()
        if not self.responses:
            raise EvaluationError("no output was generated: nothing to score")
        scores: dict[str, dict[str, list[float]]] = {name: {} for name in self.responses}
        for spec in self.reward_models:
            rm = RewardModel(spec, self.device, self.dtype, self.max_length)
            for name, responses in self.responses.items():
                texts = [fill(self.settings.score_template, input=i, prompt=p, response=r)
                         for p, i, r in zip(self.prompts, self.inputs, responses)]
                scores[name][spec.column] = rm.score(texts, self.settings.batch_size)
            big = is_big(rm.model)
            del rm
            if big:
                free_memory()
        columns = [s.column for s in self.reward_models]
        table = RewardTable(columns, settings=self._settings_record())
        for name, per_rm in scores.items():
            e = self.entries[name]
            stats = {c: mean_std(per_rm[c]) for c in columns}
            table.rows.append({"name": name, "variant": e.get("variant", "plain"), "lambda": e.get("lambda"),
                               "weights": e.get("weights", []), "mean": {c: stats[c][0] for c in columns},
                               "std": {c: stats[c][1] for c in columns}, "n": len(self.prompts)})
        table.rows.sort(key=lambda r: (r["variant"], r["lambda"] if r["lambda"] is not None else 0.0, r["name"]))
        table.settings["pareto"] = front_summary(table, axes)
        if save:
            self.eval_dir.mkdir(parents=True, exist_ok=True)
            table.to_csv(self.eval_dir / "rewards.csv")
            table.to_json(self.eval_dir / "rewards.json")
            plot_pareto(table, self.eval_dir / "pareto.png", axes=axes)
        return table

    def run(self, names: Sequence[str] | None = None, **score_options: Any) -> RewardTable:
        """Generate with every output still on disk (or those named), then score."""
        index = SoupIndex.load(self.outdir)
        for entry in index.outputs:
            if (names is None or entry["name"] in names) and (self.outdir / entry["name"]).is_dir():
                self.add_output(entry)
        return self.score(**score_options)

    def _settings_record(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"generation": asdict(self.settings), "device": str(self.device), "dtype": self.dtype,
                "reward_models": [{"model": s.model, "label": s.label, "column": s.column} for s in self.reward_models],
                "num_prompts": len(self.prompts)}


def evaluate_soup(outdir: str | Path, reward_models: Sequence[RewardModelSpec | str], prompts: Sequence[str],
                  **options: Any) -> RewardTable:
    """Score every output of the sweep in ``outdir`` (see ``SoupEvaluator``); writes ``outdir/eval/``."""
    return SoupEvaluator(outdir, reward_models, prompts, **options).run()
