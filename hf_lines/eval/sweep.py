"""Sweep (alpha, beta) over an edit or a merge, evaluate every point on validation data, select by a stated rule.

>>> from hf_lines.eval import sweep, ClassificationAccuracy
>>> result = sweep("base", ["ft-a", "ft-b"], method="ties",                       # doctest: +SKIP
...                tasks={"a": (ClassificationAccuracy("a_val.jsonl"), ClassificationAccuracy("a_test.jsonl")),
...                       "b": (ClassificationAccuracy("b_val.jsonl"), ClassificationAccuracy("b_test.jsonl"))},
...                alphas=["auto"], betas=[0.1, 0.2, 0.5, 1.0], rule="merge")
>>> print(result.table()); result.save("sweep-out"); result.merger().save_pretrained("best")  # doctest: +SKIP

No candidate is written to disk: the base model is loaded once and each grid point sets
its weights in place (``hf_lines.eval.candidates``). The references every rule needs are
evaluated too: the pre-trained model (``zero-shot``) and each task's fine-tuned model
(``fine-tuned``). The rule selects on validation; the selected point (or every point,
``evaluate_test="all"``) is then evaluated on the test splits.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from hf_lines.errors import OptionError
from hf_lines.pipeline.merger import LinesMerger
from hf_lines.options import check_device, parse_number
from hf_lines.eval.candidates import CandidateModels
from hf_lines.eval.evaluators import Evaluator, as_evaluator
from hf_lines.eval.results import Point, SweepResult
from hf_lines.eval.selection import References, get_rule

log = logging.getLogger(__name__)
GridSpec = Sequence[Any]


@dataclass
class Task:
    """A task's evaluators: ``validation`` selects, ``test`` reports.

    ``key`` is the task's name inside an evaluator that scores several tasks in one pass
    (``evaluator.tasks``); such an evaluator runs once per model for all of its tasks.
    """

    name: str
    validation: Evaluator
    test: Evaluator | None = None
    key: str | None = None


def make_grid(alphas: Iterable[Any] | None = None, betas: Iterable[float] | None = None,
              gammas: Iterable[float] | None = None, points: Iterable[Any] | None = None) -> list[tuple[Any, float, str]]:
    """Grid points (alpha, beta, label).

    * ``alphas`` x ``betas``: every pair (betas default to [0]); alpha may be ``"auto"``.
      Label ``uniform`` where beta is 0 (one constant lambda: WiSE-FT, or a merge without
      LiNeS), ``LiNeS`` otherwise.
    * ``gammas``: the paper's single-task form, alpha = gamma, beta = 1 - gamma (label ``LiNeS``).
    * ``points``: explicit (alpha, beta) or (alpha, beta, label) tuples, or mappings.
    """
    grid: list[tuple[Any, float, str]] = []
    if alphas is not None or betas is not None:
        for a in (list(alphas) if alphas is not None else [1.0]):
            for b in (list(betas) if betas is not None else [0.0]):
                beta = parse_number(b, "betas")
                grid.append((_alpha(a), beta, "uniform" if beta == 0.0 else "LiNeS"))
    for g in gammas or []:
        gamma = parse_number(g, "gammas")
        grid.append((gamma, 1.0 - gamma, "LiNeS"))
    for p in points or []:
        if isinstance(p, Mapping):
            grid.append((_alpha(p["alpha"]), parse_number(p.get("beta", 0.0), "points"), str(p.get("label", "point"))))
        else:
            p = tuple(p)
            beta = parse_number(p[1], "points")
            grid.append((_alpha(p[0]), beta, str(p[2]) if len(p) > 2 else ("uniform" if beta == 0 else "LiNeS")))
    if not grid:
        raise OptionError("empty grid: give alphas/betas, gammas or points")
    return grid


def _alpha(a: Any) -> Any:
    if a == "auto":
        return "auto"
    if isinstance(a, bool) or not isinstance(a, (int, float, str)):
        raise OptionError(f"alpha must be a number or 'auto', got {a!r}")
    return parse_number(a, "alphas")


class Sweep:
    """The live sweep: the loaded model, the evaluators and the references (see ``sweep``)."""

    def __init__(self, base: str | Path, models: Sequence[str | Path], tasks: Mapping[str, Any], *,
                 method: str = "task_arithmetic", method_options: Mapping[str, Any] | None = None,
                 weights: Sequence[float] | None = None, policy: str = "paper", stacks: str = "chain",
                 rule: Any = "merge", test_tasks: Mapping[str, Any] | None = None,
                 task_models: Mapping[str, int | str] | None = None, references: Mapping[str, Any] | None = None,
                 model_class: Any = None, mode: str = "auto", device: str | None = None,
                 load_kwargs: Mapping[str, Any] | None = None, token: str | bool | None = None,
                 progress: bool = True, needs_auto_alpha: bool = False):
        check_device(device)  # before the models load
        self.base, self.models = str(base), [str(m) for m in ([models] if isinstance(models, (str, Path)) else models)]
        self.merger_kwargs = dict(method=method, weights=weights, policy=policy, stacks=stacks, token=token,
                                  **dict(method_options or {}))
        self.rule = get_rule(rule)
        self.tasks = _tasks(tasks, test_tasks)
        self.progress = progress
        merger = LinesMerger.from_pretrained(self.base, self.models, alpha="auto" if needs_auto_alpha else 1.0,
                                             beta=0.0, **self.merger_kwargs)
        self.candidates = CandidateModels(merger, model_class=model_class, mode=mode, device=device,
                                          load_kwargs=dict(load_kwargs or {}))
        for task in self.tasks.values():
            for ev in (task.validation, task.test):
                if ev is not None:
                    ev.bind(self.candidates.base.path)
        self.task_models = self._assign(task_models)
        self.given_references = {s: References.coerce(r) for s, r in (references or {}).items()}
        self.cache: dict[tuple[str, float, float], dict[str, dict[str, float]]] = {}

    def _assign(self, task_models: Mapping[str, int | str] | None) -> dict[str, int]:
        """Task -> index of its fine-tuned model (for the fine-tuned reference)."""
        if task_models is not None:
            out = {}
            for task, m in task_models.items():
                if task not in self.tasks:
                    raise OptionError(f"task_models names task {task!r}, which is not among the tasks {sorted(self.tasks)}")
                if isinstance(m, int):
                    index = m
                elif str(m) in self.models:
                    index = self.models.index(str(m))
                else:
                    raise OptionError(f"task_models[{task!r}] = {m!r} is neither a model index nor one of the models {self.models}")
                if not 0 <= index < len(self.models):
                    raise OptionError(f"task_models[{task!r}] = {index} is out of range for {len(self.models)} models")
                out[task] = index
            return out
        if len(self.models) == 1:
            return {t: 0 for t in self.tasks}
        if len(self.models) == len(self.tasks):
            return {t: i for i, t in enumerate(self.tasks)}  # the i-th task is the i-th model's
        return {}

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, model: Any, split: str, tasks: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
        groups: dict[int, tuple[Evaluator, list[str]]] = {}
        for name in (tasks if tasks is not None else self.tasks):
            ev = self.tasks[name].validation if split == "validation" else self.tasks[name].test
            if ev is not None:
                groups.setdefault(id(ev), (ev, []))[1].append(name)
        out = {}
        for ev, names in groups.values():  # an evaluator of several tasks runs once for all of them
            metrics = ev(model)
            for name in names:
                key = self.tasks[name].key
                out[name] = {k: float(v) for k, v in (metrics[key] if key is not None else metrics).items()}
        return out

    def _point_metrics(self, alpha: float, beta: float, split: str) -> dict[str, dict[str, float]]:
        key = (split, alpha, beta)
        if key not in self.cache:
            self.cache[key] = self._evaluate(self.candidates.set_edit(alpha, beta), split)
        return self.cache[key]

    def references(self, split: str) -> tuple[References, dict[str, dict[str, dict[str, float]]]]:
        """Zero-shot metrics on every task and each task's fine-tuned metrics, plus the raw metrics per reference model."""
        raw: dict[str, dict[str, dict[str, float]]] = {"zero-shot": self._evaluate(self.candidates.set_base(), split)}
        finetuned: dict[str, dict[str, float]] = {}
        for index in sorted(set(self.task_models.values())):
            own = [t for t, i in self.task_models.items() if i == index]
            # one fine-tune: evaluate it everywhere (its control-task accuracy is part of the story)
            tasks = list(self.tasks) if len(self.models) == 1 else own
            metrics = self._evaluate(self.candidates.set_finetuned(index), split, tasks)
            finetuned.update({t: metrics[t] for t in own if t in metrics})
            if len(self.models) == 1:
                raw["fine-tuned"] = metrics
        if len(self.models) > 1 and finetuned:
            raw["fine-tuned (own task)"] = finetuned
        refs = References(
            zeroshot={t: m[self._primary(t)] for t, m in raw["zero-shot"].items()},
            finetuned={t: m[self._primary(t)] for t, m in finetuned.items()},
            higher_is_better={t: self.tasks[t].validation.higher_is_better for t in self.tasks},
        )
        given = self.given_references.get(split)
        if given is not None:
            refs.zeroshot.update(given.zeroshot)
            refs.finetuned.update(given.finetuned)
        return refs, raw

    def _primary(self, task: str) -> str:
        return self.tasks[task].validation.metric

    # ------------------------------------------------------------------ run
    def run(self, grid: Sequence[tuple[Any, float, str]], evaluate_test: str = "best") -> SweepResult:
        if evaluate_test not in ("best", "all", "none"):
            raise OptionError(f"evaluate_test must be 'best', 'all' or 'none', got {evaluate_test!r}")
        start = time.perf_counter()
        self.candidates.prepare(progress=self.progress)
        auto = self.candidates.auto_alpha
        points = []
        for a, b, label in grid:
            if a == "auto" and auto is None:
                raise OptionError("alpha 'auto' needs the sweep built with needs_auto_alpha=True (sweep() does this)")
            points.append(Point(auto if a == "auto" else a, b, label, "auto" if a == "auto" else "explicit"))
        primary = {t: self._primary(t) for t in self.tasks}
        has_test = any(t.test is not None for t in self.tasks.values()) and evaluate_test != "none"
        splits = ["validation"] + (["test"] if has_test else [])
        refs, raw = {}, {}
        for split in splits:
            refs[split], raw[split] = self.references(split)
        result = SweepResult(points, 0, self.rule, primary, refs, raw, self.describe(auto), runner=self)
        self.evaluate_points(result, points, "validation")
        result.best_index = self.rule.select([p.key for p in points], [p.values("validation", primary) for p in points],
                                             refs["validation"])
        if has_test:
            self.evaluate_points(result, points if evaluate_test == "all" else [result.best], "test")
        result.seconds = time.perf_counter() - start
        return result

    def evaluate_points(self, result: SweepResult, points: Sequence[Point], split: str) -> None:
        """Fill ``metrics``, ``scores`` and ``details`` of ``points`` on ``split``."""
        if split not in result.references:
            result.references[split], result.reference_metrics[split] = self.references(split)
        todo = [p for p in points if split not in p.metrics]
        bar = _progress(todo, f"sweep ({split})", self.progress)
        for p in bar:
            p.metrics[split] = self._point_metrics(p.alpha, p.beta, split)
            values = p.values(split, result.primary)
            p.scores[split] = self.rule.score(values, result.references[split])
            p.details[split] = self.rule.details(values, result.references[split])

    def merger_at(self, point: Point) -> LinesMerger:
        """A fresh LinesMerger with the point's alpha (``auto`` stays auto) and beta."""
        alpha = "auto" if point.alpha_setting == "auto" else point.alpha
        return LinesMerger.from_pretrained(self.base, self.models, alpha=alpha, beta=point.beta, **self.merger_kwargs)

    def describe(self, auto_alpha: float | None) -> dict[str, Any]:
        m = self.candidates.merger
        return {
            "base_model": self.base, "models": self.models, "method": m.method.describe(), "weights": m.weights,
            "policy": m.lines.policy, "stacks": m.lines.stacks, "auto_alpha": auto_alpha,
            "towers": [{"name": t.name, "num_blocks": t.num_blocks} for t in m.layer_map.towers],
            "mode": self.candidates.mode, "task_models": {t: self.models[i] for t, i in self.task_models.items()},
            "tasks": {n: {"validation": t.validation.describe(), "test": t.test.describe() if t.test else None}
                      for n, t in self.tasks.items()},
        }


def sweep(base: str | Path, models: Sequence[str | Path] | str | Path, tasks: Mapping[str, Any], *,
          alphas: Iterable[Any] | None = None, betas: Iterable[float] | None = None,
          gammas: Iterable[float] | None = None, points: Iterable[Any] | None = None,
          method: str = "task_arithmetic", rule: Any = None, test_tasks: Mapping[str, Any] | None = None,
          task_models: Mapping[str, int | str] | None = None, references: Mapping[str, Any] | None = None,
          weights: Sequence[float] | None = None, policy: str = "paper", stacks: str = "chain",
          model_class: Any = None, mode: str = "auto", device: str | None = None,
          load_kwargs: Mapping[str, Any] | None = None, evaluate_test: str = "best", progress: bool = False,
          token: str | bool | None = None, **method_options: Any) -> SweepResult:
    """Evaluate a grid of LiNeS edits (one model) or merges (several) and select the best on validation data.

    Args:
        base: the pre-trained model (folder or Hub ``repo@revision``).
        models: the fine-tuned model(s) (folders, Hub ids or PEFT adapters).
        tasks: name -> evaluator, ``(validation, test)`` pair, or ``{"validation": ..., "test": ...}``.
            An evaluator is a ``hf_lines.eval`` evaluator or any callable ``model -> float``.
        alphas, betas, gammas, points: the grid, see ``make_grid`` (alpha may be ``"auto"``).
        method, method_options: the merge method and its options (as ``LinesMerger.from_pretrained``).
        rule: ``"merge"`` (default for several models), ``{"single_task": {"target": name}}`` (default
            for one model, with its first task as the target), ``"metric"``, a ``Rule`` or a callable
            ``(metrics, references) -> float``; see ``hf_lines.eval.selection``.
        test_tasks: name -> test evaluator, when not given inside ``tasks``.
        task_models: task -> fine-tuned model (index or spec) for the fine-tuned reference; default:
            one model for every task, or the i-th task for the i-th model.
        references: split -> ``{"zeroshot": {...}, "finetuned": {...}}`` overriding computed references.
        model_class: transformers class (or its name) to load the base with; default its architecture.
        mode: ``auto``, ``memory`` or ``stream`` (see ``hf_lines.eval.candidates``).
        evaluate_test: ``best`` (the selected point), ``all`` (every point, for curves) or ``none``.

    Returns:
        A ``SweepResult``: ``.best``, ``.table()``, ``.save(folder)``, ``.merger()``, ``.select(...)``.
    """
    models = [models] if isinstance(models, (str, Path)) else list(models)
    grid = make_grid(alphas, betas, gammas, points)
    if rule is None:
        rule = {"single_task": {"target": next(iter(tasks))}} if len(models) == 1 else "merge"
    runner = Sweep(base, models, tasks, method=method, method_options=method_options, weights=weights, policy=policy,
                   stacks=stacks, rule=rule, test_tasks=test_tasks, task_models=task_models, references=references,
                   model_class=model_class, mode=mode, device=device, load_kwargs=load_kwargs, token=token,
                   progress=progress, needs_auto_alpha=any(a == "auto" for a, _, _ in grid))
    return runner.run(grid, evaluate_test=evaluate_test)


def _tasks(tasks: Mapping[str, Any], test_tasks: Mapping[str, Any] | None) -> dict[str, Task]:
    if not tasks:
        raise OptionError("give at least one task: name -> evaluator")
    out = {}
    for name, spec in tasks.items():
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"validation", "test"}
            if unknown or "validation" not in spec:
                raise OptionError(f"task {name!r}: expected {{'validation': evaluator, 'test': evaluator}}, got keys {sorted(spec)}")
            val, test = spec["validation"], spec.get("test")
        elif isinstance(spec, (tuple, list)):
            if len(spec) != 2:
                raise OptionError(f"task {name!r}: a pair (validation, test) of evaluators, got {len(spec)} items")
            val, test = spec
        else:
            val, test = spec, None
        val, test = as_evaluator(val), as_evaluator(test) if test is not None else None
        if val.tasks:  # several tasks in one evaluator: one Task per sub-task, named by it
            if test is not None and set(test.tasks or []) != set(val.tasks):
                raise OptionError(f"task group {name!r}: the test evaluator scores {test.tasks}, validation {val.tasks}")
            for key in val.tasks:
                if key in out:
                    raise OptionError(f"task {key!r} is defined twice")
                out[key] = Task(key, val, test, key)
        else:
            if name in out:
                raise OptionError(f"task {name!r} is defined twice")
            out[name] = Task(name, val, test)
    for name, ev in (test_tasks or {}).items():
        ev = as_evaluator(ev)
        names = ev.tasks or [name]
        for key in names:
            if key not in out:
                raise OptionError(f"test task {key!r} has no validation task of the same name")
            out[key].test = ev
    return out


def _progress(items: Sequence[Any], desc: str, enabled: bool) -> Any:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)
