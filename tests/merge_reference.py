"""Plain in-memory merge references: load every tensor, flatten, compute, compare.

Written straight from the papers' code (TIES ``ties_merging``/``topk_values_mask``, TALL
masks ``generate_task_masks``/``construct_consensus_mask``, the LiNeS repo's auto alpha),
with none of the library's streaming: whole-model thresholds come from ``torch.kthvalue``
on the concatenated task vector. Decisions (trim, sign, masks) are made in float32 as the
papers' code does; sums and the final theta_0 + lambda * tau in float64.
"""
from __future__ import annotations

import torch

from hf_lines.core.methods.dare import DARE_CHUNK, dare_generator


def task_vectors(base: dict, finetuned: list[dict], weights: list[float], dare: dict | None = None) -> dict:
    """name -> (N, numel) float32 stack of w_t * (theta_t - theta_0), DARE'd (drop + rescale) when asked."""
    out = {}
    for name, b in base.items():
        if not b.is_floating_point():
            continue
        rows = []
        for t, (ft, w) in enumerate(zip(finetuned, weights)):
            tau = (ft[name].reshape(-1).float() - b.reshape(-1).float()) * w
            if dare is not None:
                p, seed = dare["drop_rate"], dare["seed"]
                keep = torch.cat([
                    torch.rand(min(DARE_CHUNK, tau.numel() - c * DARE_CHUNK), generator=dare_generator(seed, t, name, c)) >= p
                    for c in range(max(1, -(-tau.numel() // DARE_CHUNK)))
                ])
                tau = tau * keep / (1 - p)
            rows.append(tau)
        out[name] = torch.stack(rows)
    return out


def kth_threshold(mags: torch.Tensor, density: float) -> float:
    """The paper's topk_values_mask threshold: kthvalue(|x|, d - int(d * density)); 0 keeps everything."""
    d = mags.numel()
    k = d - int(d * density)
    return 0.0 if k <= 0 or density >= 1 else float(torch.kthvalue(mags, k).values)


def ties_thresholds(taus: dict, density: float, trim: str) -> dict:
    """name -> (N, 1) thresholds: one per task over the whole flattened model, or per tensor."""
    n = next(iter(taus.values())).shape[0]
    if trim == "global":
        flat = torch.cat([taus[k] for k in sorted(taus)], dim=1).abs()
        thr = torch.tensor([kth_threshold(flat[t], density) for t in range(n)]).reshape(-1, 1)
        return {k: thr for k in taus}
    return {k: torch.tensor([kth_threshold(v[t].abs(), density) for t in range(n)]).reshape(-1, 1) for k, v in taus.items()}


def ties(taus: dict, density: float = 0.2, trim: str = "global", aggregate: str = "mean",
         zero_sign: str = "model") -> dict:
    """TIES tau_MTL per tensor: trim, elect, disjoint mean/sum.

    An entry whose trimmed values sum to exactly zero takes the sign of the total of elected
    signs (the authors' ``resolve_zero_signs(sign, "majority")``): over the whole flattened
    model, as their code sees one vector (``zero_sign="model"``), or over the tensor.
    """
    thr = ties_thresholds(taus, density, trim)
    trimmed = {name: v * (v.abs() >= thr[name]) for name, v in taus.items()}
    signs = {name: torch.sign(t.sum(0)) for name, t in trimmed.items()}
    model_majority = torch.sign(sum(s.double().sum() for s in signs.values()))
    out = {}
    for name, t in trimmed.items():
        sign = signs[name].clone()
        sign[sign == 0] = model_majority if zero_sign == "model" else torch.sign(sign.sum())
        agree = torch.where(sign > 0, t > 0, t < 0)  # sign 0 (a zero majority) keeps the negatives
        total = (t.double() * agree).sum(0)
        out[name] = total if aggregate == "sum" else total / agree.sum(0).clamp(min=1)
    return out


def task_arithmetic(taus: dict) -> dict:
    return {k: v.double().sum(0) for k, v in taus.items()}


def consensus(taus: dict, merged: dict, k: int = 2, lam: float | list = 0.4) -> dict:
    """tau_MTL masked to entries that >= k TALL masks mark: |tau_t| > lam_t * |tau_MTL - tau_t|."""
    out = {}
    for name, v in taus.items():
        n = v.shape[0]
        lams = torch.tensor(lam if isinstance(lam, list) else [lam] * n, dtype=torch.float32).reshape(-1, 1)
        m32 = merged[name].float()
        masks = v.abs() > (m32 - v).abs() * lams
        out[name] = merged[name] * (masks.sum(0) >= k)
    return out


def auto_alpha(taus: dict, merged: dict) -> float:
    """(1/N) * ||sum_t tau_t||_1 / ||tau_MTL||_1 over the whole model."""
    n = next(iter(taus.values())).shape[0]
    num = sum(float(v.double().sum(0).abs().sum()) for v in taus.values())
    den = sum(float(m.double().abs().sum()) for m in merged.values())
    return num / den / n


def apply(base: dict, merged: dict, scales: dict) -> dict:
    """theta_0 + lambda * tau_MTL per tensor, in float64, stored in the base's dtype."""
    out = {}
    for name, b in base.items():
        if name not in merged:
            out[name] = b
            continue
        theta = b.double().reshape(-1) + scales[name] * merged[name].double()
        out[name] = theta.reshape(b.shape).to(b.dtype)
    return out
