"""LiNeS settings, checked when made: the schedule's alpha and beta and how tensors outside the blocks follow it."""
from __future__ import annotations

from dataclasses import dataclass

from hf_lines.core.layers.infer import StackMode
from hf_lines.core.layers.map import POLICIES, Policy
from hf_lines.errors import OptionError
from hf_lines.options import check_schedule


@dataclass
class LinesConfig:
    """LiNeS settings: lambda(i) = alpha + beta * i / (L - 1); non-block tensors follow ``policy``.

    ``beta = 0`` is no LiNeS: one constant lambda = alpha (the defaults, alpha 1 and beta 0,
    leave tau_MTL unscaled). ``alpha = "auto"`` is resolved by a statistics pass: see
    ``hf_lines.pipeline.statistics``. alpha, beta and every lambda(i) must be finite, and |lambda| at most
    ``hf_lines.options.MAX_LAMBDA`` unless ``allow_large_lambda``.
    """

    alpha: float | str = 1.0
    beta: float = 0.0
    policy: Policy = "paper"
    stacks: StackMode = "chain"
    allow_large_lambda: bool = False

    def __post_init__(self) -> None:
        if self.alpha != "auto" and (isinstance(self.alpha, (bool, str)) or not isinstance(self.alpha, (int, float))):
            raise OptionError(f"alpha must be a number or 'auto', got {self.alpha!r}")
        if isinstance(self.beta, (bool, str)) or not isinstance(self.beta, (int, float)):
            raise OptionError(f"beta must be a number, got {self.beta!r}")
        if self.policy not in POLICIES:
            raise OptionError(f"unknown non-block policy {self.policy!r}; use one of {list(POLICIES)}")
        if self.stacks not in ("chain", "separate"):
            raise OptionError(f"unknown stacks mode {self.stacks!r}; use 'chain' or 'separate'")
        if not isinstance(self.allow_large_lambda, bool):
            raise OptionError(f"allow_large_lambda must be true or false, got {self.allow_large_lambda!r}")
        check_schedule(self.alpha, self.beta, allow_large_lambda=self.allow_large_lambda)
