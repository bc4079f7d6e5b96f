"""The schedule plot of a model card: lambda per block, and the task vector's norm per block before and after."""
from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence


def preload() -> threading.Thread:
    """Import what the model card needs in the background (about 1 s) while the weights stream.

    matplotlib, jinja2 and huggingface_hub's card classes; a tiny figure with text is drawn
    too, which loads the fonts and fills the text caches that the first real plot would
    otherwise pay for once the weights are written.
    """

    def load() -> None:
        import jinja2  # noqa: F401
        from huggingface_hub import ModelCard, ModelCardData  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(1, 1), dpi=20)
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.set_title("λ(i) α β ‖τ‖₂", fontsize=10)
        ax.plot([0, 1], [0, 1], "o-", label="x")
        ax.legend(fontsize=8)
        fig.canvas.draw()

    thread = threading.Thread(target=load, name="hf-lines-preload-matplotlib", daemon=True)
    thread.start()
    return thread


def plot_schedule(
    path: str | Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    alpha: float,
    beta: float,
    title: str | None = None,
) -> Path:
    """Write a PNG with lambda(i) per block (top) and ||tau|| per block before/after scaling (bottom).

    ``rows`` are the card's table rows: ``tower``, ``block`` (None outside the blocks), ``scale``,
    ``before`` and ``after`` (None when norms are unknown). One line per tower.
    """
    # The object API with the Agg canvas: no pyplot, so no global backend and no GUI, thread-safe.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    towers: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("block") is not None:
            towers.setdefault(row["tower"], []).append(row)
    has_norms = any(_finite(r.get("before")) for rs in towers.values() for r in rs)

    height = 5.6 if has_norms else 3.2
    fig = Figure(figsize=(7.5, height), dpi=110)
    FigureCanvasAgg(fig)
    # Fixed margins (the constrained layout engine would double the drawing time for no visible
    # gain), Unicode labels instead of mathtext and a cheap legend placement: a third of the time.
    fig.subplots_adjust(left=0.1, right=0.98, top=1 - 0.35 / height, bottom=0.5 / height, hspace=0.12)
    axes = fig.subplots(2 if has_norms else 1, 1, sharex=True, squeeze=False)[:, 0]
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    several = len(towers) > 1

    ax = axes[0]
    for k, (tower, trs) in enumerate(towers.items()):
        label = tower if several else "λ(i) per block"
        ax.plot([r["block"] for r in trs], [r["scale"] for r in trs], "o-", color=colors[k % len(colors)], label=label)
    ax.axhline(alpha, color="0.5", ls=":", lw=1, label=f"α = {alpha:g}")
    ax.axhline(alpha + beta, color="0.5", ls="--", lw=1, label=f"α + β = {alpha + beta:g}")
    ax.set_ylabel("λ(i)")
    ax.set_ylim(bottom=min(0.0, alpha - 0.05, alpha + beta - 0.05))
    formula = "LiNeS: λ(i) = α + β·i/(L−1)"
    ax.set_title(title or f"{formula},  α = {alpha:g}, β = {beta:g}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=_emptiest_corner(ax))

    if has_norms:
        ax = axes[1]
        for k, (tower, trs) in enumerate(towers.items()):
            color = colors[k % len(colors)]
            prefix = f"{tower}: " if several else ""
            blocks = [r["block"] for r in trs]
            ax.plot(blocks, [r["before"] for r in trs], "s--", color=color, alpha=0.45, label=f"{prefix}‖τ‖ before")
            ax.plot(blocks, [r["after"] for r in trs], "o-", color=color, label=f"{prefix}‖τ‖ after LiNeS")
        ax.set_ylabel("‖τ‖₂ per block")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc=_emptiest_corner(ax))
    axes[-1].set_xlabel("block i (0 = shallowest)")
    axes[-1].xaxis.get_major_locator().set_params(integer=True)

    path = Path(path)
    fig.savefig(path, format="png", metadata={"Software": "hf-lines"})
    return path


def _emptiest_corner(ax: Any) -> str:
    """The axes corner with the fewest data points: matplotlib's ``loc="best"`` at a fraction of its cost."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    counts = dict.fromkeys(("upper left", "upper right", "lower left", "lower right"), 0)
    for line in ax.get_lines():
        for x, y in zip(line.get_xdata(), line.get_ydata()):
            fx, fy = (x - x0) / ((x1 - x0) or 1), (y - y0) / ((y1 - y0) or 1)
            if fx < 0.45 or fx > 0.55:
                vertical = "upper" if fy > 0.6 else "lower" if fy < 0.4 else None
                if vertical:
                    counts[f"{vertical} {'left' if fx < 0.45 else 'right'}"] += 1
    return min(counts, key=counts.get)  # ties keep the order above


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
