"""One output of a sweep: its weight vector, its variant (plain soup or LiNeS soup) and its schedule."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from hf_lines.errors import OptionError
from hf_lines.core.layers import LayerMap
from hf_lines.core.lines import LinesConfig
from hf_lines.core.methods.task_arithmetic import TaskArithmetic
from hf_lines.pipeline.plan import PlanOutput
from hf_lines.soups.weights import lambda_of, output_name

PLAIN_PREFIX = "plain-"  # the baseline sweep's folders when a LiNeS sweep is the main one
PLAIN = LinesConfig(1.0, 0.0)
TASK_ARITHMETIC = TaskArithmetic()  # a soup output is the task arithmetic merge of its recipe


@dataclass(frozen=True)
class SoupOutput:
    """theta_SFT + lambda(l) * sum_k w_k tau_k, with lambda from ``lines`` (plain: lambda = 1)."""

    name: str
    weights: tuple[float, ...]
    variant: str  # "lines" or "plain"
    lines: LinesConfig

    @property
    def lam(self) -> float | None:
        """The interpolation coefficient (first weight) for one or two policies, else None."""
        return lambda_of(self.weights)

    def scales(self, layer_map: LayerMap) -> dict[str, float]:
        """Tensor name -> lambda of its block (1 everywhere for the plain soup)."""
        return layer_map.scales(self.lines.alpha, self.lines.beta, self.lines.policy)  # type: ignore[arg-type]

    def plan_output(self, layer_map: LayerMap) -> PlanOutput:
        """This output as a plan's: task arithmetic of the policies with its weights, at its lambdas."""
        return PlanOutput(TASK_ARITHMETIC, self.weights, self.scales(layer_map))

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name, "variant": self.variant, "weights": list(self.weights), "lambda": self.lam,
            "alpha": self.lines.alpha, "beta": self.lines.beta, "policy": self.lines.policy, "stacks": self.lines.stacks,
        }


def plan_outputs(weights: Sequence[Sequence[float]], lines: LinesConfig | None, include_plain: bool) -> list[SoupOutput]:
    """The outputs of a sweep: one per weight vector for the main variant, plus the plain baseline if asked.

    The main sweep's folders are ``lam0.30`` (``w0.20-0.30-0.50`` for more than two policies);
    the plain baseline of a LiNeS sweep gets ``plain-lam0.30``.
    """
    main = "lines" if lines is not None else "plain"
    out = [SoupOutput(output_name(w), tuple(w), main, lines or PLAIN) for w in weights]
    if include_plain and lines is not None:
        plain_lines = LinesConfig(1.0, 0.0, lines.policy, lines.stacks)
        out += [SoupOutput(PLAIN_PREFIX + output_name(w), tuple(w), "plain", plain_lines) for w in weights]
    names = [o.name for o in out]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise OptionError(f"two outputs would both be named {dup!r}; give weights that differ in the first two decimals")
    return out
