"""Plain reference computations the library is checked against: load everything, compute, compare."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

# Tolerances: the result is stored in the base dtype, so it may differ from the exact
# value by rounding once in that dtype (one ulp, relative 2**-8 for bf16, 2**-11 for fp16)
# plus float32 arithmetic error (relative ~1e-6 of the operands).
TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.bfloat16: dict(rtol=2**-7, atol=1e-5),
    torch.float16: dict(rtol=2**-10, atol=1e-6),
}


def load_folder(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a saved model folder, in memory."""
    out: dict[str, torch.Tensor] = {}
    files = sorted(Path(folder).glob("*.safetensors"))
    assert files, f"no safetensors in {folder}"
    for f in files:
        out.update(load_file(f))
    return out


def lines_reference(base: dict, finetuned: list[dict], weights: list[float], scales: dict[str, float]) -> dict:
    """theta_0 + lambda * sum_i w_i (theta_i - theta_0), computed in float64."""
    out = {}
    for n, b in base.items():
        if not b.is_floating_point():
            out[n] = b
            continue
        tau = sum(w * (m[n].double() - b.double()) for w, m in zip(weights, finetuned))
        out[n] = (b.double() + scales[n] * tau).to(b.dtype)
    return out


def assert_close_dict(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected), set(actual) ^ set(expected)
    for n in expected:
        torch.testing.assert_close(actual[n], expected[n], **TOL.get(expected[n].dtype, {}), msg=lambda m: f"{n}: {m}")
