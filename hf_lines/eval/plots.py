"""Sweep plots: the target/control trade-off of a single-task edit, or the score along the coefficient of a merge."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from hf_lines.eval.results import SweepResult

COLORS = {"LiNeS": "#d62728", "uniform": "#1f77b4"}
FALLBACK = ["#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _figure(width: float = 6.0, height: float = 4.4):
    # The object API with the Agg canvas: no pyplot, so no global backend and no GUI.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _color(label: str, i: int) -> str:
    return COLORS.get(label, FALLBACK[i % len(FALLBACK)])


def plot_sweep(result: "SweepResult", path: str | Path, split: str, title: str | None = None) -> Path:
    """One PNG for a sweep; see ``SweepResult.plot``."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    labels = list(dict.fromkeys(p.label for p in result.points))
    best = result.best
    if result.is_single_task():
        for i, label in enumerate(labels):
            pts = [(result.normalized(p, split), p) for p in result.points if p.label == label]
            pts = [(d, p) for d, p in pts if d]
            ax.plot([d["control_normalized"] for d, _ in pts], [d["target_normalized"] for d, _ in pts], "o-",
                    color=_color(label, i), label=label, markersize=4)
        d = result.normalized(best, split)
        if d:
            ax.plot([d["control_normalized"]], [d["target_normalized"]], "*", color="black", markersize=13,
                    label=f"selected (alpha={best.alpha:.3g}, beta={best.beta:.3g})")
        for name, marker in (("zero-shot", "s"), ("fine-tuned", "D")):
            d = result.normalized(name, split)
            if d:
                ax.plot([d["control_normalized"]], [d["target_normalized"]], marker, color="gray", label=name)
        ax.set_xlabel("control tasks: accuracy / zero-shot accuracy")
        ax.set_ylabel("target task: accuracy / fine-tuned accuracy")
    else:
        for i, label in enumerate(labels):
            pts = [p for p in result.points if p.label == label and p.values(split, result.primary) is not None]
            xs = [p.beta if label == "LiNeS" else p.alpha for p in pts]
            ax.plot(xs, [result.score(p, split) for p in pts], "o-", color=_color(label, i), markersize=4,
                    label=f"{label} ({'beta' if label == 'LiNeS' else 'alpha'})")
        ax.set_xlabel("coefficient")
        ax.set_ylabel(f"{result.rule.name} score ({split})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"hf-lines sweep ({split})", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_tradeoff_curves(path: str | Path, curves: dict[str, Sequence[tuple[float, float]]], *,
                         markers: dict[str, tuple[float, float]] | None = None, title: str = "",
                         xlabel: str = "control tasks: normalized accuracy (acc / zero-shot acc)",
                         ylabel: str = "target task: normalized accuracy (acc / fine-tuned acc)") -> Path:
    """Several (control, target) curves on one axis, e.g. LiNeS vs WiSE-FT averaged over fine-tuned tasks."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, pts) in enumerate(curves.items()):
        color = _color("LiNeS" if "LiNeS" in label else "uniform" if "WiSE" in label else label, i)
        ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", color=color, label=label, markersize=4)
    for i, (label, (x, y)) in enumerate((markers or {}).items()):
        ax.plot([x], [y], ["s", "D", "*", "^", "v"][i % 5], color="black" if "*" in label else "gray",
                markersize=9, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
