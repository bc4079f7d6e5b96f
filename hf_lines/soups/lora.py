"""LoRA outputs of a sweep: the interpolated, LiNeS-scaled update written exactly as one adapter.

sum_k w_k lambda(l) s_k B_k A_k is one LoRA pair of concatenated rank,
``B = [w_1 lambda(l) s_1 B_1, w_2 lambda(l) s_2 B_2, ...]`` and ``A = [A_1; A_2; ...]``, with
scale 1. (Averaging the A's and the B's separately, as the rewarded soups code does, gives
(sum w_k B_k)(sum w_k A_k), which has cross terms B_j A_k and is not the interpolation.)

- SFT a full model: the adapter goes on theta_SFT (``hf_lines.adapters.scaled_adapter``, the
  same tensors ``hf-lines merge`` writes for this task-arithmetic merge of adapters).
- SFT an adapter on a base: the output goes on the base and carries the SFT update too,
  unscaled: ``B = [s_0 B_0, w_1 lambda(l) s_1 B_1, ...]``, ``A = [A_0; A_1; ...]``, so
  ``PeftModel.from_pretrained(base, output)`` is theta_SFT + LiNeS(sum_k w_k tau_k).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from hf_lines.adapters.reader import LoraAdapter
from hf_lines.adapters.scaled import Factor, concatenated_config, scaled_adapter, stacked_lora
from hf_lines.core.threads import intra_op_threads
from hf_lines.errors import AdapterError
from hf_lines.soups.inputs import SoupInputs

def adapter_output_blocker(inputs: SoupInputs) -> str | None:
    """Why this soup's outputs cannot be LoRA adapters (None when they can)."""
    adapters = inputs.policy_adapters()
    if adapters is None:
        return "a policy is a full model"
    sft = inputs.sft_adapter
    if any(a.is_dora for a in adapters) or (sft is not None and sft.is_dora):
        return "DoRA adapters are not linear in B"
    if sft is not None and any(a.layout.full for a in [sft, *adapters]):
        return "an adapter over an adapter SFT model saves whole modules (modules_to_save)"
    return None


def soup_adapter(inputs: SoupInputs, weights: Sequence[float], scales: Mapping[str, float]) -> tuple[dict[str, torch.Tensor], Any]:
    """Tensors and LoraConfig of the adapter whose merged model is theta_SFT + lambda * sum_k w_k tau_k."""
    reason = adapter_output_blocker(inputs)
    if reason is not None:
        raise AdapterError(f"the soup cannot be written as a LoRA adapter: {reason}; use output='model'")
    policies = inputs.policy_adapters()
    assert policies is not None
    sft = inputs.sft_adapter
    if sft is None:
        return scaled_adapter(policies, list(weights), scales, inputs.sft.checkpoint)
    parts: list[tuple[LoraAdapter, Factor]] = [(sft, lambda name: 1.0)]
    parts += [(ad, _factor(w, scales)) for ad, w in zip(policies, weights)]
    with intra_op_threads(1):
        return stacked_adapter(parts)


def _factor(weight: float, scales: Mapping[str, float]) -> Factor:
    return lambda name: weight * scales[name]


def stacked_adapter(parts: Sequence[tuple[LoraAdapter, Factor]]) -> tuple[dict[str, torch.Tensor], Any]:
    """One adapter of concatenated rank equal to sum_p factor_p(weight) * s_p B_p A_p, per module.

    Args:
        parts: (adapter, factor) pairs; ``factor(name)`` scales the part's update of base tensor ``name``.
            Adapters must be plain LoRA without whole saved modules.
    """
    for ad, _ in parts:
        if ad.is_dora or ad.layout.full:
            raise AdapterError(f"{ad.label}: DoRA or whole saved modules cannot be stacked into one adapter")
    out, ranks, with_bias = stacked_lora([(ad, m, f) for ad, f in parts for m in ad.layout.modules.values()])
    adapters = [ad for ad, _ in parts]
    config = concatenated_config(adapters, ranks, adapters[0].module_paths(), with_bias)
    return out, config
