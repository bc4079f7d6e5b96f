"""LiNeS on LoRA factors: the scaled (or merged) adapter's tensors and its LoraConfig.

One adapter keeps its config and gets ``B <- lambda(layer) * c * B`` (exact: the update is
linear in B). Several adapters become one adapter of concatenated rank,
``A = [A_1; ...; A_N]`` and ``B = [c_1 s_1 lambda B_1, ..., c_N s_N lambda B_N]``, whose
config gives every module scale 1 (``lora_alpha = r``, ``use_rslora = False``, per-module
``rank_pattern`` / ``alpha_pattern`` anchored to the exact module path). Whole saved
tensors (``modules_to_save``, saved embedding copies) become
``theta_0 + lambda * sum_i c_i (theta_i - theta_0)``.
"""
from __future__ import annotations

import copy
import re
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

import torch

from hf_lines.core.threads import intra_op_threads
from hf_lines.errors import AdapterError
from hf_lines.core.methods import MergeMethod
from hf_lines.adapters.delta import concat_rank, lerp_full, scale_b
from hf_lines.adapters.layout import BASE_LAYER, PREFIX
from hf_lines.adapters.reader import LoraAdapter
from hf_lines.io.checkpoint import TensorSource

# Merge methods whose merged task vector is sum_i c_i tau_i: name -> weights -> c_i.
LINEAR_METHODS: dict[str, Callable[[Sequence[float]], list[float]]] = {
    "task_arithmetic": lambda w: [float(x) for x in w],
    "mean": lambda w: [float(x) / len(w) for x in w],
}


def linear_coefficients(method: MergeMethod, weights: Sequence[float]) -> list[float] | None:
    """c_i with tau_MTL = sum_i c_i tau_i, or None when the method is not linear in the task vectors."""
    rule = LINEAR_METHODS.get(method.name)
    # An option that is set (e.g. DARE dropping) changes the math; unset options read None/False.
    if rule is None or method.needs_statistics or any(v not in (None, False) for v in method.options.values()):
        return None
    return rule(weights)


def check_adapter_output(adapters: Sequence[LoraAdapter]) -> None:
    """Refuse inputs whose scaled update cannot be written as a LoRA adapter."""
    for ad in adapters:
        if ad.is_dora:
            raise AdapterError(
                f"{ad.label} is a DoRA adapter: its merged weight is not linear in B, so LiNeS cannot be written "
                "as a scaled adapter; use output='model' (CLI: --output-format model) for the exactly scaled full model"
            )


def scaled_adapter(
    adapters: Sequence[LoraAdapter],
    coefs: Sequence[float],
    scales: Mapping[str, float],
    base: TensorSource,
) -> tuple[dict[str, torch.Tensor], Any]:
    """Tensors and LoraConfig of the adapter equal to base + lambda * sum_i c_i delta_i."""
    check_adapter_output(adapters)
    # LoRA factors are kB to MB: thread start-up costs more than the work (a 7B adapter: 2 s on 2 threads, 0.02 s on 1)
    with intra_op_threads(1):
        if len(adapters) == 1:
            return _scale_one(adapters[0], coefs[0], scales, base), copy.deepcopy(adapters[0].config)
        return _concatenate(adapters, coefs, scales, base)


def _scale_one(ad: LoraAdapter, coef: float, scales: Mapping[str, float], base: TensorSource) -> dict[str, torch.Tensor]:
    factor: dict[str, float] = {}
    for m in ad.layout.modules.values():
        factor[m.b_key] = scales[m.weight] * coef
        if m.b_bias_key:
            factor[m.b_bias_key] = scales.get(m.bias, scales[m.weight]) * coef
    copies = {key: name for name, key in ad.layout.full.items()}
    out: dict[str, torch.Tensor] = {}
    for key in ad.keys():
        t = ad.tensor(key)
        if key in factor:
            out[key] = scale_b(t, factor[key])
        elif key in copies:
            name = copies[key]
            out[key] = lerp_full(base.get(name), [t], [scales[name] * coef], t.dtype)
        else:
            out[key] = t  # A factors and anything else unchanged
    return out


def _concatenate(
    adapters: Sequence[LoraAdapter], coefs: Sequence[float], scales: Mapping[str, float], base: TensorSource
) -> tuple[dict[str, torch.Tensor], Any]:
    by_weight: dict[str, list] = {}
    copies: dict[str, list] = {}
    for ad, c in zip(adapters, coefs):
        for w, m in ad.layout.modules.items():
            by_weight.setdefault(w, []).append((ad, m, c))
        for name, key in ad.layout.full.items():
            copies.setdefault(name, []).append((ad, key, c))
    for name, found in copies.items():
        whole = [ad.label for ad, key, _ in found if BASE_LAYER not in key]
        if name in by_weight and whole:
            raise AdapterError(
                f"{whole[0]} saves {name!r} whole (modules_to_save) while another adapter puts LoRA on it; "
                "one PEFT adapter cannot do both: use output='model' (CLI: --output-format model)"
            )

    out, ranks, with_bias = stacked_lora([(ad, m, _times(c, scales)) for parts in by_weight.values() for ad, m, c in parts])
    for name, found in copies.items():
        saved = [ad.tensor(key) for ad, key, _ in found]
        t = lerp_full(base.get(name), saved, [c * scales[name] for _, _, c in found], promote_dtype(saved))
        if name in by_weight:  # the saved own weight of a LoRA module (keys use peft's live module names)
            leaf = found[0][1].rsplit(".", 1)[-1]
            out[f"{PREFIX}{by_weight[name][0][1].module}{BASE_LAYER}{leaf}"] = t
        else:
            out[found[0][1]] = t
    return out, concatenated_config(adapters, ranks, adapters[0].module_paths(), with_bias)


Factor = Callable[[str], float]  # base tensor name -> the factor of one adapter's update of it


def _times(coef: float, scales: Mapping[str, float]) -> Factor:
    return lambda name: coef * scales[name]


def stacked_lora(parts: Sequence[tuple[LoraAdapter, Any, Factor]]) -> tuple[dict[str, torch.Tensor], dict[str, int], bool]:
    """LoRA modules of concatenated rank: ``B = [f_p(w) s_p B_p, ...]``, ``A = [A_p; ...]`` per base weight w.

    Args:
        parts: (adapter, its LoRA module, factor) triples, any number per module; ``factor(name)``
            scales that adapter's update of base tensor ``name`` (a LoRA bias: its bias tensor's
            name, or the weight's where the base has no such tensor).

    Returns:
        (tensors under peft's key names, rank per module, whether any module has a LoRA bias).
    """
    by_weight: dict[str, list[tuple[LoraAdapter, Any, Factor]]] = {}
    for ad, m, f in parts:
        by_weight.setdefault(m.weight, []).append((ad, m, f))
    with_bias = any(m.b_bias_key for _, m, _ in parts)
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
                        bias.add_(ad.tensor(m.b_bias_key).float(), alpha=_bias_factor(f, m, weight) * m.scaling)
                out[f"{PREFIX}{module}.lora_B.bias"] = bias.to(dtype)
        ranks[module] = a.shape[0]
    return out, ranks, with_bias


def _bias_factor(factor: Factor, module: Any, weight: str) -> float:
    try:
        return factor(module.bias) if module.bias else factor(weight)
    except KeyError:  # a LoRA bias on a layer whose base has no bias tensor follows its weight
        return factor(weight)


def promote_dtype(tensors: Sequence[torch.Tensor]) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def concatenated_config(adapters: Sequence[LoraAdapter], ranks: dict[str, int], paths: set[str], with_bias: bool) -> Any:
    config = copy.deepcopy(adapters[0].config)
    r = Counter(ranks.values()).most_common(1)[0][0] if ranks else config.r
    # Scale 1 everywhere: alpha equals rank per module, and each pattern key matches one exact path.
    special = {f"^{re.escape(m)}": rm for m, rm in sorted(ranks.items()) if rm != r}
    config.r, config.lora_alpha, config.use_rslora, config.use_dora = r, r, False, False
    config.rank_pattern, config.alpha_pattern = dict(special), dict(special)
    config.target_modules = target_modules_for(set(ranks), paths)
    config.exclude_modules = config.layers_to_transform = config.layers_pattern = None
    saved = sorted({m for ad in adapters for m in (ad.config.modules_to_save or [])})
    config.modules_to_save = saved or None
    config.lora_bias = with_bias
    return config


def target_modules_for(modules: set[str], paths: set[str]) -> set[str] | str:
    """target_modules that select exactly ``modules`` among the base's module ``paths``: leaf names when they do, else exact paths."""
    leaves = {m.rsplit(".", 1)[-1] for m in modules}
    if {p for p in paths if p.rsplit(".", 1)[-1] in leaves} == modules:
        return leaves
    if not any(p not in modules and p.endswith("." + m) for p in paths for m in modules):
        return set(modules)  # peft matches a list entry as the whole path or a dotted suffix of it
    return "^(?:" + "|".join(re.escape(m) for m in sorted(modules)) + ")$"  # a string is fullmatched
