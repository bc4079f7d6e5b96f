"""The YAML schema of ``hf-lines sweep``, validated into ``sweep()`` arguments.

```yaml
base_model: ./base                      # folder or Hub id[@revision]
models: [./ft-a, ./ft-b]                # or [{model: ./ft-a, weight: 1.0}, ...]
method: ties                            # default task_arithmetic
method_options: {density: 0.2}
grid:                                   # any of these; they add up
  alphas: [auto]                        # numbers or auto
  betas: [0.1, 0.2, 0.5, 1.0]
  gammas: [0.0, 0.5, 1.0]               # single-task form: alpha = gamma, beta = 1 - gamma
  points: [[0.3, 0.0, uniform]]
rule: merge                             # or {single_task: {target: a, target_weight: 2}} or {metric: {tasks: [a]}}
tasks:
  a:
    type: classification                # classification | image_classification | exact_match | lm_loss | lm_eval | callable
    validation: data/a_val.jsonl        # a file, or {dataset: org/name, name: cfg, split: validation}
    test: data/a_test.jsonl
    model: ./ft-a                       # its fine-tuned model (default: the i-th task is the i-th model)
    options: {candidate_labels: [0, 1]} # the evaluator's keyword arguments
  b:
    type: callable
    callable: my_pkg.evals:score_b      # f(model) -> float, or with split=True: f(model, split)
  arc:
    type: lm_eval                       # lm-evaluation-harness (pip install 'hf-lines[lm-eval]')
    validation: arc_easy_val            # lm-eval task(s): a name, a list, or {sweep name: lm-eval name}
    test: arc_easy
    metric: acc_norm                    # default: the task's first metric; its direction is the task's
    options: {limit: 500, num_fewshot: 0, batch_size: 16, include_path: lm_tasks, seed: 1234}
evaluate_test: best                     # best | all | none
mode: auto                              # auto | memory | stream
output: sweep-out                       # sweep.csv, sweep.json, sweep.png
save_best: best-model                   # optional: write the selected model with its card
```

Paths are used as written (relative to the working directory), except an lm_eval task's
``include_path``, which is relative to the YAML file's folder.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from hf_lines.errors import LinesError
from hf_lines.eval.evaluators import CallableEvaluator, ClassificationAccuracy, ExactMatch, LanguageModelLoss
from hf_lines.eval.lm_eval import LmEvalHarness

EVALUATORS: dict[str, type] = {
    "classification": ClassificationAccuracy,
    "sequence_classification": ClassificationAccuracy,
    "image_classification": ClassificationAccuracy,
    "exact_match": ExactMatch,
    "generation": ExactMatch,
    "lm_loss": LanguageModelLoss,
    "perplexity": LanguageModelLoss,
    "lm_eval": LmEvalHarness,
}
TOP_KEYS = {"base_model", "models", "method", "method_options", "weights", "policy", "stacks", "grid", "rule", "tasks",
            "evaluate_test", "mode", "model_class", "device", "output", "save_best"}
GRID_KEYS = {"alphas", "betas", "gammas", "points"}
TASK_KEYS = {"type", "validation", "test", "model", "options", "callable", "metric", "higher_is_better", "split"}


class SweepConfigError(LinesError):
    """A sweep config that does not fit the schema; the message names the key path."""


def load_config(source: str | Path | Mapping[str, Any], folder: str | Path | None = None) -> dict[str, Any]:
    """A validated config dict from a YAML path or a mapping (paths stay as written).

    ``folder`` is the YAML file's folder (default: the path's own folder; none for a mapping):
    an lm_eval task's relative ``include_path`` is resolved against it.
    """
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        path = Path(source)
        if not path.exists():
            raise SweepConfigError(f"sweep config {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, Mapping):
            raise SweepConfigError(f"{path}: the config must be a mapping, got {type(data).__name__}")
        folder = path.parent if folder is None else folder
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise SweepConfigError(f"sweep: unknown key(s) {unknown}; known keys: {sorted(TOP_KEYS)}")
    grid = data.get("grid") or {}
    if not isinstance(grid, Mapping) or set(grid) - GRID_KEYS:
        raise SweepConfigError(f"sweep.grid: expected a mapping with keys from {sorted(GRID_KEYS)}, got {grid!r}")
    tasks = data.get("tasks")
    if not isinstance(tasks, Mapping) or not tasks:
        raise SweepConfigError("sweep.tasks: give at least one task (name: {type, validation, test})")
    for name, task in tasks.items():
        if not isinstance(task, Mapping):
            raise SweepConfigError(f"sweep.tasks.{name}: expected a mapping, got {type(task).__name__}")
        bad = sorted(set(task) - TASK_KEYS)
        if bad:
            raise SweepConfigError(f"sweep.tasks.{name}: unknown key(s) {bad}; known: {sorted(TASK_KEYS)}")
        kind = task.get("type", "classification")
        if kind != "callable" and kind not in EVALUATORS:
            raise SweepConfigError(f"sweep.tasks.{name}.type: {kind!r} is not one of {sorted([*EVALUATORS, 'callable'])}")
        if kind == "callable" and "callable" not in task:
            raise SweepConfigError(f"sweep.tasks.{name}: type callable needs callable: module:function")
        if kind != "callable" and "validation" not in task:
            what = "lm-eval task(s)" if kind == "lm_eval" else "data"
            raise SweepConfigError(f"sweep.tasks.{name}: give its validation {what}")
        if kind == "lm_eval":
            data = _lm_eval_task(data, name, task, folder)
    return data


def _lm_eval_task(data: dict[str, Any], name: str, task: Mapping[str, Any], folder: str | Path | None) -> dict[str, Any]:
    """An lm_eval task's checks; a relative include_path joined to the YAML's folder (in a copy of ``data``)."""
    if "higher_is_better" in task:
        raise SweepConfigError(f"sweep.tasks.{name}.higher_is_better: an lm_eval task's direction is its metric's "
                               f"higher_is_better in the task's metric_list")
    options = task.get("options") or {}
    if not isinstance(options, Mapping):
        raise SweepConfigError(f"sweep.tasks.{name}.options: expected a mapping, got {type(options).__name__}")
    if "metric" in task and options.get("metric", task["metric"]) != task["metric"]:
        raise SweepConfigError(f"sweep.tasks.{name}: metric {task['metric']!r} and options.metric "
                               f"{options['metric']!r} disagree; give one")
    include = options.get("include_path")
    if include is None or folder is None or Path(include).is_absolute():
        return data
    tasks = dict(data["tasks"])
    tasks[name] = {**task, "options": {**options, "include_path": str(Path(folder) / include)}}
    return {**data, "tasks": tasks}


def build_task(name: str, task: Mapping[str, Any]) -> tuple[Any, Any]:
    """(validation evaluator, test evaluator or None) for one task of the config."""
    kind = task.get("type", "classification")
    options = dict(task.get("options") or {})
    if kind == "callable":
        fn = import_callable(task["callable"], f"sweep.tasks.{name}.callable")
        metric, up = task.get("metric", "score"), bool(task.get("higher_is_better", True))
        if task.get("split"):
            return (CallableEvaluator(lambda m: fn(m, "validation"), metric, up),
                    CallableEvaluator(lambda m: fn(m, "test"), metric, up))
        return CallableEvaluator(fn, metric, up), None
    cls = EVALUATORS[kind]
    if kind == "lm_eval" and "metric" in task:
        options["metric"] = task["metric"]
    try:
        val = cls(task["validation"], **options)
        test = cls(task["test"], **options) if task.get("test") is not None else None
    except TypeError as e:
        raise SweepConfigError(f"sweep.tasks.{name}.options: {e}") from None
    return val, test


def sweep_arguments(config: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``hf_lines.eval.sweep`` from a validated config (local paths relative to the working directory)."""
    models, weights = [], []
    for i, m in enumerate(config.get("models") or []):
        if isinstance(m, Mapping):
            if "model" not in m:
                raise SweepConfigError(f"sweep.models[{i}]: a mapping needs model:")
            models.append(str(m["model"]))
            weights.append(float(m.get("weight", 1.0)))
        else:
            models.append(str(m))
            weights.append(1.0)
    if "base_model" not in config or not models:
        raise SweepConfigError("sweep: give base_model and at least one of models")
    if config.get("weights") is not None:
        weights = [float(w) for w in config["weights"]]
    tasks, task_models = {}, {}
    for name, task in config["tasks"].items():
        val, test = build_task(name, task)
        tasks[name] = {"validation": val, "test": test} if test is not None else val
        if task.get("model") is not None:
            task_models[name] = task["model"] if isinstance(task["model"], int) else str(task["model"])
    grid = config.get("grid") or {}
    kwargs: dict[str, Any] = dict(
        base=str(config["base_model"]), models=models, tasks=tasks, method=config.get("method", "task_arithmetic"),
        weights=weights if any(w != 1.0 for w in weights) else None, rule=config.get("rule"),
        task_models=task_models or None, policy=config.get("policy", "paper"), stacks=config.get("stacks", "chain"),
        evaluate_test=config.get("evaluate_test", "best"), mode=config.get("mode", "auto"),
        model_class=config.get("model_class"), device=config.get("device"),
        **{k: grid[k] for k in GRID_KEYS if k in grid},
        **dict(config.get("method_options") or {}),
    )
    return kwargs


def import_callable(spec: str, where: str) -> Callable[..., Any]:
    """``package.module:function`` -> the function."""
    if not isinstance(spec, str) or ":" not in spec:
        raise SweepConfigError(f"{where}: expected 'module:function', got {spec!r}")
    module, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise SweepConfigError(f"{where}: cannot import {spec!r}: {e}") from None
    if not callable(obj):
        raise SweepConfigError(f"{where}: {spec!r} is not callable")
    return obj
