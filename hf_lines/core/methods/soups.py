"""Model soups and WiSE-FT: single-task recipes that LiNeS improves (Sec. 5 of the LiNeS paper).

* Uniform model soup (Wortsman et al. 2022): the average of checkpoints fine-tuned from one
  base on one task (different seeds or hyper-parameters). Its task vector is the mean of
  theirs, so ``soup`` is ``mean`` under its own name: with no LiNeS (alpha 1, beta 0)
  theta = mean of the checkpoints; with LiNeS theta = theta_0 + lambda(layer) * mean(tau).
* WiSE-FT (Wortsman et al. 2022): theta = (1 - gamma) theta_0 + gamma theta_ft =
  theta_0 + gamma * tau, a constant lambda. ``wise_ft`` is that task vector, gamma * tau
  (gamma * mean(tau) for several checkpoints, i.e. WiSE-FT of their soup); LiNeS on top
  scales it by depth: theta = theta_0 + lambda(layer) * gamma * tau.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from hf_lines.errors import OptionError
from hf_lines.core.methods.base import is_number, register_method
from hf_lines.core.methods.dare import DareOptions
from hf_lines.core.methods.task_arithmetic import WeightedSum, mean_weights


@register_method
@dataclass(frozen=True)
class Soup(WeightedSum):
    """Uniform model soup: tau_MTL = (1/N) sum_t w_t tau_t, the checkpoints' average minus theta_0.

    Options:
        dare: ``{drop_rate, seed}`` to DARE each task vector first (default: off).
    """

    name = "soup"
    aliases = ("model_soup", "uniform_soup")

    dare: DareOptions | None = None

    def task_weights(self, weights: Sequence[float]) -> list[float]:
        return mean_weights(weights)


@register_method
@dataclass(frozen=True)
class WiseFT(WeightedSum):
    """WiSE-FT: tau_MTL = gamma * (1/N) sum_t w_t tau_t (gamma * tau for one fine-tune).

    Options:
        gamma: interpolation weight of the fine-tuned model, theta_0 + gamma * tau (default 0.5).
        dare: ``{drop_rate, seed}`` to DARE each task vector first (default: off).
    """

    name = "wise_ft"
    aliases = ("wiseft",)

    gamma: float = 0.5
    dare: DareOptions | None = None

    def __post_init__(self) -> None:
        if not is_number(self.gamma):
            raise OptionError(f"wise_ft option gamma must be a number, got {self.gamma!r}")
        self._set("gamma", float(self.gamma))
        super().__post_init__()

    def task_weights(self, weights: Sequence[float]) -> list[float]:
        n = len(weights)
        return [self.gamma * (w / n) for w in weights]  # gamma times mean's weights, rounded as they are
