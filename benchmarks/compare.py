"""Streaming numeric comparison of merged checkpoints, against each other and a float32 reference.

The reference for task arithmetic is computed here plainly, tensor by tensor:
theta_0 + lambda(i) * sum_t (theta_t - theta_0) in float32, rounded once to bf16, with
lambda(i) = alpha + beta * i / (L - 1) in block i and alpha outside the blocks.
Differences are reported as max |a - b| and in bf16 ulps at the inputs' scale:
|a - b| / ulp(max(|a|, |b|, |theta_0|, |theta_1|, ..)). Plain ulps of the output explode where
theta_0 + lambda * tau cancels to near zero, although the error there is one rounding of
numbers the size of the inputs; measured this way, one rounding step of a bf16 pipeline
(e.g. tau = theta_t - theta_0 computed in bf16) reads as about 1.
Also ||a - b|| / ||b - theta_0|| over the whole checkpoint: the error relative to the update.
"""
from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from safetensors_stream import checkpoint_files, read_tensor  # noqa: E402


def output_digest(out: Path) -> dict[str, str]:
    """sha256 of every safetensors shard and index below ``out`` (a soup writes one folder per output)."""
    files = sorted(p for p in out.rglob("*") if p.name.endswith((".safetensors", ".safetensors.index.json")))
    digests = {}
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while chunk := fh.read(64 << 20):
                h.update(chunk)
        digests[str(f.relative_to(out))] = h.hexdigest()
    return digests


BLOCK = re.compile(r"^model\.layers\.(\d+)\.")


def lines_scale(name: str, num_blocks: int, alpha: float, beta: float) -> float:
    m = BLOCK.match(name)
    if m is None:
        return alpha
    i = int(m.group(1))
    return alpha + beta if num_blocks == 1 else alpha + beta * i / (num_blocks - 1)


def bf16_ulp(x: torch.Tensor) -> torch.Tensor:
    """Spacing of bf16 numbers at |x| (7 stored mantissa bits), floored at the smallest normal's."""
    _, exp = torch.frexp(x.abs().clamp_min(2.0 ** -126))
    return torch.ldexp(torch.ones_like(x), exp - 8)


class Diff:
    def __init__(self):
        self.max_abs = 0.0
        self.max_ulp = 0.0
        self.n_diff = 0
        self.n = 0
        self.worst = ""
        self.err_sq = 0.0
        self.update_sq = 0.0
        self.problems: list[str] = []

    def add(self, name: str, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, update_sq: float) -> None:
        """Fold in one tensor; scale = max |input| elementwise, update_sq = ||b - theta0||^2."""
        if a.shape != b.shape:
            self.problems.append(f"{name}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
            return
        if a.dtype != b.dtype:
            self.problems.append(f"{name}: dtype {a.dtype} vs {b.dtype}")
        self.n += a.numel()
        self.update_sq += update_sq
        # Differences are rare, so everything past this mask runs on those elements only.
        idx = (a != b).view(-1).nonzero().view(-1)
        if idx.numel() == 0:
            return
        aa, bb = a.view(-1)[idx].float(), b.view(-1)[idx].float()
        dd = (aa - bb).abs_()
        m = float(dd.max())
        if m > self.max_abs:
            self.max_abs, self.worst = m, name
        self.n_diff += dd.numel()
        self.err_sq += float(torch.linalg.vector_norm(dd)) ** 2
        at = torch.stack([aa.abs(), bb.abs(), scale.view(-1)[idx].float()]).amax(0)
        self.max_ulp = max(self.max_ulp, float((dd / bf16_ulp(at)).max()))

    def as_dict(self) -> dict:
        return {"max_abs": self.max_abs, "max_ulps_at_input_scale": self.max_ulp, "worst_tensor": self.worst,
                "update_rel_err": (self.err_sq / self.update_sq) ** 0.5 if self.update_sq else 0.0,
                "frac_elements_differing": self.n_diff / self.n if self.n else 0.0,
                "elements": self.n, "problems": self.problems[:20]}


def compare_outputs(outputs: dict[str, Path], base: Path, finetuned: list[Path], *,
                    alpha: float, beta: float, num_blocks: int, with_reference: bool,
                    only: set[str] | None = None) -> dict[str, dict]:
    """Pairwise diffs between the tools' outputs (and vs the reference), one tensor at a time.

    Keys look like "hf-lines vs mergekit" and "mergekit vs reference". ``only``: compare just
    these tensors (a sample, where reading every tensor of 7B checkpoints costs minutes).
    """
    tools = sorted(outputs)
    diffs: dict[str, Diff] = {}
    for i, a in enumerate(tools):
        for b in tools[i + 1:]:
            diffs[f"{a} vs {b}"] = Diff()
        if with_reference:
            diffs[f"{a} vs reference"] = Diff()
    locations = {tool: {n: p / f for f, names in checkpoint_files(p).items() for n in names}
                 for tool, p in outputs.items()}
    base_files = checkpoint_files(base)
    ft_locs = [{n: p / f for f, names in checkpoint_files(p).items() for n in names} for p in finetuned]
    for fname, names in base_files.items():
        for name in names:
            if only is not None and name not in only:
                continue
            got = {}
            for tool in tools:
                if name not in locations[tool]:
                    for key, d in diffs.items():
                        if key.startswith(tool + " ") or key.endswith(" " + tool):
                            d.problems.append(f"{name}: missing in {tool}")
                    continue
                got[tool] = read_tensor(locations[tool][name], name)
            theta0 = read_tensor(base / fname, name)
            t0 = theta0.float()
            scale = t0.abs()
            acc = torch.zeros(theta0.shape, dtype=torch.float32) if with_reference else None
            for locs in ft_locs:
                tt = read_tensor(locs[name], name).float()
                torch.maximum(scale, tt.abs(), out=scale)
                if acc is not None:
                    acc.add_(tt).sub_(t0)
                del tt
            ref = None
            if acc is not None:
                lam = lines_scale(name, num_blocks, alpha, beta)
                ref = acc.mul_(lam).add_(t0).to(theta0.dtype)
                del acc
            update_sq = {key: float(torch.linalg.vector_norm(t.float() - t0)) ** 2
                         for key, t in [*got.items(), ("reference", ref)] if t is not None and t.shape == t0.shape}
            for i, a in enumerate(tools):
                if a not in got:
                    continue
                for b in tools[i + 1:]:
                    if b in got:
                        diffs[f"{a} vs {b}"].add(name, got[a], got[b], scale, update_sq.get(b, 0.0))
                if ref is not None:
                    diffs[f"{a} vs reference"].add(name, got[a], ref, scale, update_sq["reference"])
            del got, ref, t0, scale
    for tool, locs in locations.items():
        extra = set(locs) - {n for names in base_files.values() for n in names}
        for key, d in diffs.items():
            if extra and (key.startswith(tool + " ") or key.endswith(" " + tool)):
                d.problems.append(f"{tool} has extra tensors: {sorted(extra)[:5]}")
    return {k: d.as_dict() for k, d in diffs.items()}
