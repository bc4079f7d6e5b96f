"""Refusals a merge makes on its own numbers: auto alpha where it would cancel the schedule, an output that overflowed."""
from __future__ import annotations

import math

import torch

from hf_lines.core.methods.arithmetic import is_finite
from hf_lines.errors import NonFiniteError, RecipeError


def check_auto_alpha(alpha: float | str, method: str, num_models: int) -> None:
    """alpha = "auto" is the paper's rule for multi-task merges; with one model it cancels the schedule.

    (1/N) ||sum tau||_1 / ||tau_MTL||_1 is 1 for one task vector and 1/gamma for WiSE-FT's
    gamma * tau, so "auto" would silently undo the edit the user asked for.
    """
    if alpha == "auto" and method == "wise_ft":
        raise RecipeError(
            "alpha = 'auto' with wise_ft resolves to 1/gamma, which undoes gamma: WiSE-FT already fixes the scale; "
            "give alpha and beta as numbers (alpha 1, beta 0 is plain WiSE-FT), or use task_arithmetic or ties to merge"
        )
    if alpha == "auto" and num_models == 1:
        raise RecipeError(
            f"alpha = 'auto' (the LiNeS paper's rule for multi-task merges) needs two or more fine-tuned models; "
            f"with one model and method {method!r} it gives alpha = 1 (1/gamma for wise_ft) and cancels the "
            "schedule: give alpha and beta as numbers, e.g. alpha 0.2, beta 0.8 (the paper's single-task edit)"
        )


def check_output_finite(name: str, scale: float, after_norm: float, out: torch.Tensor) -> None:
    """Refuse an output tensor that overflowed (finite inputs, a large lambda, a narrow dtype).

    ``after_norm`` = ||out - base|| is computed anyway for the card, and any overflowed value
    makes it non-finite: only then does the exact check run (huge finite values can overflow a
    float32 sum of squares too), so a normal run pays nothing for it.
    """
    if not math.isfinite(after_norm) and not is_finite(out):
        dtype = out.dtype
        raise NonFiniteError(
            f"tensor {name!r} came out with infinite or NaN values at lambda = {scale:g}: the scaled task vector "
            f"overflows {str(dtype).removeprefix('torch.')}; choose smaller alpha and beta, or write a wider dtype "
            "(dtype='float32', recipe dtype: float32)"
        )
