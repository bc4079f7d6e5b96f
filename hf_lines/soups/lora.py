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

from typing import Any, Callable, Mapping, Sequence

import torch

from hf_lines.adapters.delta import concat_rank
from hf_lines.adapters.layout import PREFIX
from hf_lines.adapters.reader import LoraAdapter
from hf_lines.adapters.scaled import concatenated_config, promote_dtype, one_thread, scaled_adapter
from hf_lines.errors import AdapterError
from hf_lines.soups.inputs import SoupInputs

Factor = Callable[[str], float]  # base tensor name -> the factor of that part's update


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
    with one_thread():
        return stacked_adapter(parts)


def _factor(weight: float, scales: Mapping[str, float]) -> Factor:
    return lambda name: weight * scales[name]


def stacked_adapter(parts: Sequence[tuple[LoraAdapter, Factor]]) -> tuple[dict[str, torch.Tensor], Any]:
    """One adapter of concatenated rank equal to sum_p factor_p(weight) * s_p B_p A_p, per module.

    Args:
        parts: (adapter, factor) pairs; ``factor(name)`` scales the part's update of base tensor ``name``.
            Adapters must be plain LoRA without whole saved modules.
    """
    by_weight: dict[str, list] = {}
    for ad, factor in parts:
        if ad.is_dora or ad.layout.full:
            raise AdapterError(f"{ad.label}: DoRA or whole saved modules cannot be stacked into one adapter")
        for w, m in ad.layout.modules.items():
            by_weight.setdefault(w, []).append((ad, m, factor))
    with_bias = any(m.b_bias_key for found in by_weight.values() for _, m, _ in found)
    out: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    for weight, found in by_weight.items():
        module = found[0][1].module
        kinds = {m.kind == "embedding" for _, m, _ in found}
        if len(kinds) > 1:
            raise AdapterError(f"the adapters disagree on whether {module!r} is an embedding")
        tensors = [(ad.tensor(m.a_key), ad.tensor(m.b_key), f(weight) * m.scaling) for ad, m, f in found]
        dtype = promote_dtype([t for a, b, _ in tensors for t in (a, b)])
        a, b = concat_rank(tensors, dtype)
        if kinds.pop():
            out[f"{PREFIX}{module}.lora_embedding_A"], out[f"{PREFIX}{module}.lora_embedding_B"] = a, b
        else:
            out[f"{PREFIX}{module}.lora_A.weight"], out[f"{PREFIX}{module}.lora_B.weight"] = a, b
            if with_bias:
                bias = torch.zeros(b.shape[0], dtype=torch.float32)
                for ad, m, f in found:
                    if m.b_bias_key:
                        bias.add_(ad.tensor(m.b_bias_key).float(), alpha=f(m.bias or weight) * m.scaling)
                out[f"{PREFIX}{module}.lora_B.bias"] = bias.to(dtype)
        ranks[module] = a.shape[0]
    adapters = [ad for ad, _ in parts]
    config = concatenated_config(adapters, ranks, adapters[0].module_paths(), with_bias)
    return out, config
