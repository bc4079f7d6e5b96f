"""Plain aligned text tables: the CLI's summaries and the evaluation reports print the same way."""
from __future__ import annotations


def format_table(header: list[str], rows: list[list[object]]) -> str:
    """A plain aligned text table."""
    cells = [header] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c: object) -> str:
    if isinstance(c, float):
        return f"{c:.4g}"
    return "-" if c is None else str(c)
