"""Selection rules: which grid point of a sweep to keep, from validation metrics.

A rule scores every evaluated point (higher is better) and breaks ties its own way. It
sees one ``dict`` per point, ``{task: value}`` of each task's primary metric, and the
sweep's references: ``zeroshot`` (the pre-trained model, lambda = 0) and ``finetuned``
(each task's own fine-tuned model) per task.

Normalized values follow the LiNeS paper's code (``wang-kee/LiNeS``, ``src/eval/eval.py``,
``add_normalized_accuracy``): ``value / reference``. For a metric where lower is better
(a loss, a perplexity) it is ``reference / value``, so 1 still means "as good as the
reference" and smaller is worse.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union


class SelectionError(ValueError):
    """A rule cannot score the points: a missing task or reference. The message says which."""


def normalized(value: float, reference: float, higher_is_better: bool = True) -> float:
    """``value / reference`` (``reference / value`` when lower is better); NaN when undefined.

    Args:
        value: the metric of the edited model.
        reference: the same metric of the reference model (fine-tuned or zero-shot).
        higher_is_better: direction of the metric.
    """
    num, den = (value, reference) if higher_is_better else (reference, value)
    if den == 0 or any(isinstance(x, float) and math.isnan(x) for x in (num, den)):
        return float("nan")
    return float(num) / float(den)


@dataclass
class References:
    """Per-task metric of the pre-trained model (``zeroshot``) and of each task's fine-tuned model (``finetuned``)."""

    zeroshot: dict[str, float] = field(default_factory=dict)
    finetuned: dict[str, float] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)

    def get(self, kind: str, task: str) -> float:
        table = getattr(self, kind)
        if task not in table:
            raise SelectionError(
                f"no {kind} reference for task {task!r}; the sweep computes it when the task is assigned a "
                "fine-tuned model (task_models=...), or pass references=... yourself"
            )
        return table[task]

    def norm(self, kind: str, task: str, value: float) -> float:
        return normalized(value, self.get(kind, task), self.higher_is_better.get(task, True))

    def as_dict(self) -> dict[str, Any]:
        return {"zeroshot": dict(self.zeroshot), "finetuned": dict(self.finetuned),
                "higher_is_better": dict(self.higher_is_better)}

    @classmethod
    def coerce(cls, data: "References | Mapping[str, Any] | None") -> "References":
        if data is None:
            return cls()
        if isinstance(data, References):
            return data
        return cls(dict(data.get("zeroshot", {})), dict(data.get("finetuned", {})), dict(data.get("higher_is_better", {})))


class Rule:
    """Scores points; ``select`` returns the index of the winner. Subclasses set ``name`` and ``score``."""

    name = "rule"

    def score(self, metrics: Mapping[str, float], refs: References) -> float:
        raise NotImplementedError

    def details(self, metrics: Mapping[str, float], refs: References) -> dict[str, float]:
        """Extra columns for the tables (normalized accuracies); the score is added by the sweep."""
        return {}

    def tie_key(self, point: tuple[float, float], order: int) -> tuple:
        """Among equal scores the largest key wins; default: the first point in grid order."""
        return (-order,)

    def select(self, points: Sequence[tuple[float, float]], metrics: Sequence[Mapping[str, float]], refs: References) -> int:
        """Index of the best point: highest score, then the rule's tie-break; NaN scores never win."""
        if not points:
            raise SelectionError("no points to select from")
        scored = [(self.score(m, refs), i) for i, m in enumerate(metrics)]
        valid = [(s, i) for s, i in scored if not math.isnan(s)]
        if not valid:
            raise SelectionError(f"rule {self.name!r} gave no finite score on any point")
        return max(valid, key=lambda si: (si[0], *self.tie_key(points[si[1]], si[1])))[1]

    def describe(self) -> dict[str, Any]:
        return {"rule": self.name}


class SingleTaskRule(Rule):
    """The LiNeS paper's single-task rule: keep the target task, recover the control tasks.

    score = target_weight * mean_target(acc / finetuned_acc) + mean_control(acc / zeroshot_acc)

    This is ``find_optimal_coef_tradeoff`` in the authors' code (``wang-kee/LiNeS``,
    ``src/utils/utils.py``, selected in ``src/eval/eval_utils.py`` for ``method=single_task``)
    with ``target_normalized_accuracy`` and ``control_normalized_accuracy`` from
    ``src/eval/eval.py``: the target is normalized by the fine-tuned model's accuracy, each
    control task by the zero-shot (pre-trained) model's, and the controls are averaged. The
    weight defaults to 2, the repository's ``method.tradeoff_target_weight`` (its README:
    "set by default to 2"). The code walks gamma = 1.0, 0.9, ..., 0.0 (alpha = gamma,
    beta = 1 - gamma) and keeps the first strict maximum, so ties keep the larger alpha; for
    points with equal alpha the larger beta wins (less of the task vector removed).

    Args:
        target: the fine-tuned task (or several: their normalized accuracies are averaged).
        control: the control tasks; default every other task the sweep evaluates.
        target_weight: weight of the target term (2 in the paper's code).
    """

    name = "single_task"

    def __init__(self, target: str | Sequence[str], control: Sequence[str] | None = None, target_weight: float = 2.0):
        self.targets = [target] if isinstance(target, str) else list(target)
        if not self.targets:
            raise SelectionError("single_task rule: give at least one target task")
        self.control = list(control) if control is not None else None
        self.target_weight = float(target_weight)

    def controls(self, metrics: Mapping[str, float]) -> list[str]:
        return self.control if self.control is not None else [t for t in metrics if t not in self.targets]

    def details(self, metrics, refs):
        _require(metrics, self.targets + self.controls(metrics), self.name)
        target = _mean([refs.norm("finetuned", t, metrics[t]) for t in self.targets])
        controls = self.controls(metrics)
        control = _mean([refs.norm("zeroshot", c, metrics[c]) for c in controls]) if controls else float("nan")
        return {"target_normalized": target, "control_normalized": control}

    def score(self, metrics, refs):
        d = self.details(metrics, refs)
        control = 0.0 if math.isnan(d["control_normalized"]) and not self.controls(metrics) else d["control_normalized"]
        return self.target_weight * d["target_normalized"] + control

    def tie_key(self, point, order):
        return (point[0], point[1], -order)

    def describe(self):
        return {"rule": self.name, "target": self.targets, "control": self.control, "target_weight": self.target_weight}


class MergeRule(Rule):
    """Multi-task merges: the mean over tasks of acc / (that task's fine-tuned acc), "normalized accuracy".

    This is ``find_optimal_coef(..., metric="avg_normalized_top1")`` of the LiNeS paper's code
    (``src/utils/utils.py``; ``avg_normalized_top1`` in ``src/eval/eval.py``). The code walks its
    coefficients in increasing order and keeps the first strict maximum: ties keep the first
    point in grid order.

    Args:
        tasks: the tasks averaged; default every task the sweep evaluates.
    """

    name = "merge"

    def __init__(self, tasks: Sequence[str] | None = None):
        self.tasks = list(tasks) if tasks is not None else None

    def details(self, metrics, refs):
        tasks = self.tasks if self.tasks is not None else list(metrics)
        _require(metrics, tasks, self.name)
        return {f"{t}:normalized": refs.norm("finetuned", t, metrics[t]) for t in tasks}

    def score(self, metrics, refs):
        return _mean(list(self.details(metrics, refs).values()))

    def describe(self):
        return {"rule": self.name, "tasks": self.tasks}


class MetricRule(Rule):
    """Best mean of the raw primary metrics of ``tasks`` (every task by default); ties keep the first point."""

    name = "metric"

    def __init__(self, tasks: Sequence[str] | None = None, higher_is_better: bool | None = None):
        self.tasks = list(tasks) if tasks is not None else None
        self.higher_is_better = higher_is_better

    def score(self, metrics, refs):
        tasks = self.tasks if self.tasks is not None else list(metrics)
        _require(metrics, tasks, self.name)
        up = self.higher_is_better
        if up is None:
            up = all(refs.higher_is_better.get(t, True) for t in tasks)
        value = _mean([metrics[t] for t in tasks])
        return value if up else -value

    def describe(self):
        return {"rule": self.name, "tasks": self.tasks}


class CallableRule(Rule):
    """Any ``f(metrics, references) -> float`` (higher is better); ties keep the first point."""

    def __init__(self, fn: Callable[[Mapping[str, float], References], float], name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom")

    def score(self, metrics, refs):
        return float(self.fn(metrics, refs))


RuleLike = Union[Rule, str, Callable[..., float]]


def get_rule(rule: RuleLike | Mapping[str, Any], **options: Any) -> Rule:
    """A rule from an instance, a name (``single_task``, ``merge``, ``metric``) with options, or a callable."""
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, Mapping):
        if len(rule) != 1:
            raise SelectionError(f"a rule mapping has one key, the rule's name, e.g. {{single_task: {{target: t}}}}; got {dict(rule)}")
        (name, opts), = rule.items()
        return get_rule(name, **{**(opts or {}), **options})
    if callable(rule):
        return CallableRule(rule)
    rules = {"single_task": SingleTaskRule, "merge": MergeRule, "metric": MetricRule}
    if rule not in rules:
        raise SelectionError(f"unknown selection rule {rule!r}; use one of {sorted(rules)} or a callable")
    try:
        return rules[rule](**options)
    except TypeError as e:
        raise SelectionError(f"rule {rule!r}: {e}") from None


def _require(metrics: Mapping[str, float], tasks: Sequence[str], rule: str) -> None:
    missing = [t for t in tasks if t not in metrics]
    if missing:
        raise SelectionError(f"rule {rule!r} needs task(s) {missing}, but the sweep evaluated {sorted(metrics)}")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
