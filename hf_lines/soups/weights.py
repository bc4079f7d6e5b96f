"""Interpolation weights of a rewarded soup: lambda lists, weight vectors and output names.

Two policies: ``lam`` gives the weights ``(lam, 1 - lam)``, so lam = 1 is policy 1 and
lam = 0 is policy 2, as in the rewarded soups paper. One policy: ``(lam,)``, the path
from the SFT model to the policy. More policies: explicit weight vectors.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from hf_lines.errors import OptionError
from hf_lines.options import parse_number

# Weights are rounded to this many decimals, so that 0:1:11 gives 0.3, not 0.30000000000000004.
DECIMALS = 12


def _number(text: Any, where: str) -> float:
    return parse_number(text, where, "'0,0.5,1' or '0:1:11'")


def parse_lambdas(spec: str | Sequence[float]) -> list[float]:
    """Interpolation coefficients from ``"0,0.5,1"``, ``"0:1:11"`` (start:stop:count, ends included),
    ``"0,0.1,...,1"`` (an arithmetic progression: step from the first two, up to the last) or a list."""
    if not isinstance(spec, str):
        values = [_number(v, "lambdas") for v in spec]
    elif ":" in spec:
        if spec.count(":") != 2:
            raise OptionError(f"lambdas (--lambdas): {spec!r} is not start:stop:count; "
                              "write e.g. '0:1:11' (11 values from 0 to 1)")
        a, b, n = spec.split(":")
        start, stop = _number(a, "lambdas"), _number(b, "lambdas")
        try:
            count = int(n)
        except ValueError:
            raise OptionError(f"lambdas (--lambdas): in {spec!r} the count {n!r} is not an integer") from None
        if count < 1:
            raise OptionError(f"lambdas (--lambdas): {spec!r} asks for {count} values; "
                              "give a count of at least 1, e.g. '0:1:11'")
        values = [start] if count == 1 else [start + (stop - start) * k / (count - 1) for k in range(count)]
    else:
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        if "..." in parts:
            values = _progression(parts, spec)
        else:
            values = [_number(p, "lambdas") for p in parts]
    values = [round(v, DECIMALS) + 0.0 for v in values]  # + 0.0: no -0.0 in names
    if not values:
        raise OptionError(f"lambdas (--lambdas): {spec!r} holds no value; e.g. '0,0.5,1' or '0:1:11'")
    if len(set(values)) != len(values):
        raise OptionError(f"lambdas (--lambdas): {spec!r} repeats a value")
    return values


def _progression(parts: list[str], spec: str) -> list[float]:
    i = parts.index("...")
    if i != len(parts) - 2 or i < 2:
        raise OptionError(f"lambdas (--lambdas): write a progression as 'first,second,...,last', got {spec!r}")
    head = [_number(p, "lambdas") for p in parts[:i]]
    last = _number(parts[-1], "lambdas")
    step = head[1] - head[0]
    if step == 0 or (last - head[0]) / step < 0:
        raise OptionError(f"lambdas (--lambdas): {spec!r} never reaches {last:g} from {head[0]:g} in steps of {step:g}")
    count = round((last - head[0]) / step)
    if not math.isclose(head[0] + count * step, last, rel_tol=1e-9, abs_tol=1e-9):
        raise OptionError(f"lambdas (--lambdas): {spec!r}: {last:g} is not {head[0]:g} plus a whole number of steps of {step:g}")
    return [head[0] + k * step for k in range(count + 1)]


def parse_weights(spec: str | Sequence[Sequence[float]], n_policies: int | None = None) -> list[tuple[float, ...]]:
    """Weight vectors from ``"0.2,0.3,0.5;0.5,0.5,0"`` (one vector per ``;``) or a list of sequences."""
    if isinstance(spec, str):
        rows = [r for r in (s.strip() for s in spec.split(";")) if r]
        vectors = [tuple(_number(p.strip(), "weights") for p in r.split(",")) for r in rows]
    else:
        vectors = [tuple(_number(x, "weights") for x in v) for v in spec]
    if not vectors:
        raise OptionError(f"weights (--weights): {spec!r} holds no vector; e.g. '0.2,0.3,0.5;0.5,0.5,0'")
    vectors = [tuple(round(x, DECIMALS) + 0.0 for x in v) for v in vectors]
    sizes = {len(v) for v in vectors}
    expected = n_policies if n_policies is not None else next(iter(sizes))
    bad = [v for v in vectors if len(v) != expected]
    if bad:
        raise OptionError(f"weights (--weights): vector {list(bad[0])} has {len(bad[0])} entries but there are {expected} policies")
    if len(set(vectors)) != len(vectors):
        raise OptionError("weights (--weights): a weight vector is repeated")
    return vectors


def weights_for_lambdas(lambdas: Sequence[float], n_policies: int) -> list[tuple[float, ...]]:
    """``(lam, 1 - lam)`` for two policies, ``(lam,)`` for one; more policies need explicit weight vectors."""
    if n_policies == 1:
        return [(float(lam),) for lam in lambdas]
    if n_policies == 2:
        return [(float(lam), round(1.0 - lam, DECIMALS) + 0.0) for lam in lambdas]
    raise OptionError(
        f"lambdas interpolate two policies, but {n_policies} were given: give weight vectors instead "
        "(CLI: --weights '0.2,0.3,0.5;...'; Python: weights=[(0.2, 0.3, 0.5), ...])"
    )


def lambda_of(weights: Sequence[float]) -> float | None:
    """The interpolation coefficient behind a weight vector (the first weight), for one or two policies."""
    return float(weights[0]) if len(weights) <= 2 else None


def output_name(weights: Sequence[float]) -> str:
    """Folder name of one output: ``lam0.30`` for one or two policies, ``w0.20-0.30-0.50`` for more."""
    if len(weights) <= 2:
        return f"lam{_fmt(weights[0])}"
    return "w" + "-".join(_fmt(w) for w in weights)


def _fmt(x: float) -> str:
    text = f"{x:.2f}"
    return text if float(text) == round(x, DECIMALS) else f"{x:.6g}"
