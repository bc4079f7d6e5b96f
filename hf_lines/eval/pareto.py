"""Pareto fronts of a sweep's mean rewards: which outputs no other output beats on every reward, and a plot.

Rewards are maximised. Point a dominates point b when a >= b on every reward and a > b on
at least one. The 2-D hypervolume (area dominated by a front above a common reference
point) compares fronts with one number: a front that dominates another has the larger one.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from hf_lines.eval.rewards import RewardTable

VARIANT_LABELS = {"plain": "rewarded soup", "lines": "rewarded soup + LiNeS"}
VARIANT_STYLES = {"plain": dict(color="tab:blue", marker="o"), "lines": dict(color="tab:red", marker="s")}


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a >= b everywhere and a > b somewhere (maximisation)."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates, in input order (duplicates all kept)."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]


def hypervolume_2d(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Area dominated by ``points`` and bounded below by ``reference`` (points below it count for nothing)."""
    pts = sorted({(p[0], p[1]) for p in points if p[0] > reference[0] and p[1] > reference[1]}, key=lambda p: -p[0])
    area, best_y = 0.0, reference[1]
    for x, y in pts:  # sweep from the largest x: each point adds the strip above the best y so far
        if y > best_y:
            area += (x - reference[0]) * (y - best_y)
            best_y = y
    return area


def front_summary(table: "RewardTable", axes: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    """Per variant: its Pareto front (output names) and, with two or more rewards, its hypervolume over a shared
    reference (the worst mean on each axis), and how many points of each other variant's front it dominates."""
    cols = [table.columns[a] for a in axes if a < len(table.columns)]
    by_variant = {v: [r for r in table.rows if r["variant"] == v] for v in table.variants()}
    points = {v: [[r["mean"][c] for c in cols] for r in rows] for v, rows in by_variant.items()}
    fronts = {v: pareto_front(p) for v, p in points.items()}
    out: dict[str, Any] = {"axes": cols, "variants": {}}
    every = [p for ps in points.values() for p in ps]
    reference = [min(p[i] for p in every) for i in range(len(cols))] if every else []
    for v, rows in by_variant.items():
        entry: dict[str, Any] = {"front": [rows[i]["name"] for i in fronts[v]]}
        if len(cols) == 2:
            entry["hypervolume"] = hypervolume_2d([points[v][i] for i in fronts[v]], reference)
            entry["dominates"] = {
                w: sum(any(dominates(points[v][i], points[w][j]) for i in fronts[v]) for j in fronts[w])
                for w in by_variant if w != v
            }
        out["variants"][v] = entry
    if len(cols) == 2:
        out["reference"] = reference
    return out


def plot_pareto(table: "RewardTable", path: str | Path, *, axes: tuple[int, int] = (0, 1), title: str | None = None) -> Path:
    """PNG of mean rewards: reward 1 vs reward 2 per output, one curve per variant ordered by lambda, the front
    highlighted; with one reward model, mean reward vs lambda."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    two = len(table.columns) >= 2
    cols = [table.columns[a] for a in axes] if two else table.columns[:1]
    for v in table.variants():
        rows = [r for r in table.rows if r["variant"] == v]
        rows.sort(key=lambda r: (r["lambda"] is None, r["lambda"] if r["lambda"] is not None else 0.0))
        style = VARIANT_STYLES.get(v, {})
        label = VARIANT_LABELS.get(v, v)
        if two:
            xs, ys = [r["mean"][cols[0]] for r in rows], [r["mean"][cols[1]] for r in rows]
            curve = rows[0]["lambda"] is not None
            ax.plot(xs, ys, linestyle="-" if curve else "none", alpha=0.5, label=label, **style)
            front = pareto_front(list(zip(xs, ys)))
            ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=70, facecolors="none",
                       edgecolors=style.get("color", "k"), linewidths=1.5)
            for r, x, y in zip(rows, xs, ys):
                text = f"{r['lambda']:g}" if r["lambda"] is not None else r["name"]
                ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=style.get("color", "k"))
        else:
            pts = [(r["lambda"], r["mean"][cols[0]]) for r in rows if r["lambda"] is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **style)
    if two:
        ax.set_xlabel(f"mean reward: {cols[0]}")
        ax.set_ylabel(f"mean reward: {cols[1]}")
    else:
        ax.set_xlabel("lambda (weight of policy 1)")
        ax.set_ylabel(f"mean reward: {cols[0]}")
    ax.set_title(title or "Rewarded soups: Pareto front (circled), numbers are lambda")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
