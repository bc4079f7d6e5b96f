"""SweepResult: every grid point's metrics, the references, the selected point; as a table, CSV, JSON and a plot."""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hf_lines.errors import OptionError
from hf_lines.eval.selection import References, Rule, SelectionError, SingleTaskRule, get_rule

SPLITS = ("validation", "test")


@dataclass
class Point:
    """One grid point: lambda(i) = alpha + beta * i / (L - 1); ``label`` names its family (``LiNeS``, ``uniform``)."""

    alpha: float
    beta: float
    label: str
    alpha_setting: str = "explicit"  # "auto" when alpha was the paper's auto value
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # split -> task -> {metric: value}
    scores: dict[str, float] = field(default_factory=dict)  # split -> rule score
    details: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> normalized values

    @property
    def key(self) -> tuple[float, float]:
        return (self.alpha, self.beta)

    def values(self, split: str, primary: Mapping[str, str]) -> dict[str, float] | None:
        """task -> primary metric on ``split`` (None when the point was not evaluated there)."""
        m = self.metrics.get(split)
        return None if m is None else {t: v[primary[t]] for t, v in m.items()}


@dataclass
class SweepResult:
    """What ``hf_lines.eval.sweep`` found. ``best`` is the point the rule selected on validation data."""

    points: list[Point]
    best_index: int
    rule: Rule
    primary: dict[str, str]  # task -> primary metric
    references: dict[str, References]  # split -> references
    reference_metrics: dict[str, dict[str, dict[str, dict[str, float]]]]  # split -> model -> task -> metrics
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    runner: Any = None  # the Sweep that made it, for later evaluations (None once loaded from JSON)

    # ------------------------------------------------------------------ queries
    @property
    def best(self) -> Point:
        return self.points[self.best_index]

    @property
    def tasks(self) -> list[str]:
        return list(self.primary)

    def score(self, point: Point, split: str = "validation", rule: Rule | None = None) -> float:
        values = point.values(split, self.primary)
        if values is None:
            return float("nan")
        return (rule or self.rule).score(values, self.references[split])

    def select(self, rule: Any = None, where: Callable[[Point], bool] | None = None, split: str = "validation") -> Point:
        """Re-select with another rule and/or among the points ``where`` accepts (e.g. ``lambda p: p.label == "uniform"``)."""
        rule = self.rule if rule is None else get_rule(rule)
        chosen = [p for p in self.points if (where is None or where(p)) and p.values(split, self.primary) is not None]
        if not chosen:
            raise OptionError("no evaluated point matches")
        i = rule.select([p.key for p in chosen], [p.values(split, self.primary) for p in chosen], self.references[split])
        return chosen[i]

    def normalized(self, point: Point | str, split: str = "validation") -> dict[str, float]:
        """The rule's normalized values (``target_normalized``/``control_normalized``, or per task) of a point or a reference model."""
        values = self.task_values(point, split)
        return self.rule.details(values, self.references[split]) if values is not None else {}

    def task_values(self, point: Point | str, split: str) -> dict[str, float] | None:
        """task -> primary metric of a point or of a reference model ("zero-shot", "fine-tuned") on ``split``."""
        if isinstance(point, Point):
            return point.values(split, self.primary)
        ref = self.reference_metrics.get(split, {}).get(point)
        return None if ref is None else {t: v[self.primary[t]] for t, v in ref.items()}

    # ------------------------------------------------------------------ output
    def rows(self, split: str = "validation") -> list[dict[str, Any]]:
        """One flat dict per evaluated point: alpha, beta, label, each task's primary metric, normalized values, score."""
        out = []
        for i, p in enumerate(self.points):
            values = p.values(split, self.primary)
            if values is None:
                continue
            row: dict[str, Any] = {"alpha": p.alpha, "beta": p.beta, "label": p.label}
            row.update(values)
            row.update(p.details.get(split, {}))
            row["score"] = p.scores.get(split, float("nan"))
            row["selected"] = i == self.best_index
            out.append(row)
        return out

    def table(self, split: str = "validation", max_tasks: int = 8) -> str:
        """The grid as an aligned text table; the selected point is marked with ``*``."""
        from hf_lines.publish.tables import format_table

        rows = self.rows(split)
        if not rows:
            return f"(no point evaluated on {split})"
        tasks = self.tasks[:max_tasks]
        extra = [k for k in rows[0] if k not in ("alpha", "beta", "label", "score", "selected", *self.tasks)
                 and not k.endswith(":normalized")]
        header = ["", "alpha", "beta", "label", *tasks, *extra, "score"]
        body = [["*" if r["selected"] else "", r["alpha"], r["beta"], r["label"], *[r[t] for t in tasks],
                 *[r[k] for k in extra], r["score"]] for r in rows]
        refs = []
        for name, metrics in self.reference_metrics.get(split, {}).items():
            try:
                d = self.normalized(name, split)
            except (SelectionError, KeyError):  # a reference that covers only some tasks has no rule columns
                d = {}
            refs.append(["", "", "", name, *[metrics[t][self.primary[t]] if t in metrics else None for t in tasks],
                         *[d.get(k) for k in extra], None])
        return format_table(header, body + refs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "rule": self.rule.describe(),
            "primary_metrics": self.primary,
            "references": {s: r.as_dict() for s, r in self.references.items()},
            "reference_metrics": self.reference_metrics,
            "points": [{"alpha": p.alpha, "beta": p.beta, "label": p.label, "alpha_setting": p.alpha_setting,
                        "metrics": p.metrics, "scores": p.scores, "details": p.details} for p in self.points],
            "best": {"index": self.best_index, "alpha": self.best.alpha, "beta": self.best.beta, "label": self.best.label},
            "seconds": self.seconds,
        }

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(_finite(self.to_dict()), indent=2) + "\n")
        return path

    def to_csv(self, path: str | Path, split: str | None = None) -> Path:
        """One row per (point, split): alpha, beta, label, split, every task's primary metric, normalized values, score."""
        path = Path(path)
        rows = []
        for s in ([split] if split else SPLITS):
            rows += [{"split": s, **r} for r in self.rows(s)]
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        return path

    def plot(self, path: str | Path, split: str | None = None, title: str | None = None) -> Path:
        """PNG: the target/control trade-off (single-task rule) or the score against the coefficient (other rules)."""
        from hf_lines.eval.plots import plot_sweep

        if split is None:
            split = "test" if all(p.values("test", self.primary) is not None for p in self.points) else "validation"
        return plot_sweep(self, path, split, title)

    def save(self, folder: str | Path, prefix: str = "sweep") -> dict[str, Path]:
        """Write ``<prefix>.csv``, ``<prefix>.json`` and ``<prefix>.png`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return {"csv": self.to_csv(folder / f"{prefix}.csv"), "json": self.to_json(folder / f"{prefix}.json"),
                "png": self.plot(folder / f"{prefix}.png")}

    # ------------------------------------------------------------------ follow-ups
    def evaluate(self, points: Sequence[Point], split: str = "test") -> None:
        """Evaluate more points on a split (needs the live sweep: not after loading from JSON)."""
        if self.runner is None:
            raise RuntimeError("this result has no live sweep attached (it was loaded from a file)")
        self.runner.evaluate_points(self, points, split)

    def merger(self, point: Point | None = None) -> Any:
        """A ``LinesMerger`` set to ``point`` (default: the selected one), e.g. to ``save_pretrained`` it with its card."""
        if self.runner is None:
            raise RuntimeError("this result has no live sweep attached (it was loaded from a file)")
        return self.runner.merger_at(point or self.best)

    def is_single_task(self) -> bool:
        return isinstance(self.rule, SingleTaskRule)


def _finite(obj: Any) -> Any:
    """JSON has no NaN: write null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
