"""A private mergekit install for the benchmarks, and the mergekit configs that match hf-lines' math.

    python benchmarks/mergekit_env.py            # create/check the venv, print mergekit-yaml's path

The venv lives outside the repo (default ~/.cache/hf-lines-bench/mergekit-venv). It is made
with --system-site-packages so it reuses the installed CPU torch; mergekit 0.1.5 only asks
for torch>=2.0 and transformers>=5, which the system satisfies, and ``pip check`` is run to
prove nothing was broken. If that fails we fall back to a plain venv with ``torch==2.13.0``
installed first (a local CPU wheel; an unpinned torch would pull a multi-GB CUDA build).

How mergekit 0.1.5 evaluates a gradient list ``[a, b]`` (mergekit/plan.py, config.py):
- block i of L gets t = i / (L - 1) (t = 1 for L = 1), value = a + (b - a) * t: exactly LiNeS'
  lambda(i) = alpha + beta * i / (L - 1) with ``[alpha, alpha + beta]``;
- pre-weights (embed_tokens) and post-weights (model.norm, lm_head) are planned with t = 0,
  so they get the first value, alpha: the paper's default non-block policy.
- Math runs in the inputs' dtype (bf16 here) unless the config sets ``dtype``; the result
  is cast to ``out_dtype`` or the base's dtype.
- ``ties`` defaults to normalize: true (divide by the summed weights of the agreeing
  models: TIES' disjoint mean), which cancels per-model weights, so the LiNeS gradient goes
  on the shared ``lambda`` instead. It trims per tensor (``magnitude``: top-k of |delta|).
- ``--out-shard-size`` is documented as parameters but counted in bytes (default 5B = 5 GB),
  and a whole shard is held in RAM until it is written, so peak RSS >= one output shard.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import venv
from pathlib import Path

MERGEKIT_VERSION = "0.1.5"
TORCH_PIN = "torch==2.13.0"
DEFAULT_VENV = Path(os.environ.get("HF_LINES_BENCH_CACHE", Path.home() / ".cache" / "hf-lines-bench")) / "mergekit-venv"

# Flags used for every mergekit run. --lazy-unpickle only matters for .bin inputs but is
# the documented low-memory setting; the card and tokenizer steps are off because the
# inputs have no tokenizer and the card step can reach for the network.
MERGEKIT_FLAGS = ["--lazy-unpickle", "--no-copy-tokenizer", "--no-write-model-card", "--quiet"]


def _bin(venv_dir: Path, name: str) -> Path:
    return venv_dir / "bin" / name


def _works(venv_dir: Path) -> bool:
    py = _bin(venv_dir, "python")
    if not py.exists() or not _bin(venv_dir, "mergekit-yaml").exists():
        return False
    probe = "import mergekit, torch, importlib.metadata as m; print(m.version('mergekit'))"
    r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True)
    if r.returncode != 0 or r.stdout.strip() != MERGEKIT_VERSION:
        return False
    return subprocess.run([str(py), "-m", "pip", "check"], capture_output=True).returncode == 0


def _pip(venv_dir: Path, *args: str, log=sys.stderr) -> None:
    cmd = [str(_bin(venv_dir, "python")), "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), file=log)
    subprocess.run(cmd, check=True, stdout=log, stderr=log)


def ensure_mergekit(venv_dir: str | Path = DEFAULT_VENV, log=sys.stderr) -> Path:
    """Path to a working ``mergekit-yaml``, creating the venv on first use."""
    venv_dir = Path(venv_dir)
    if _works(venv_dir):
        return _bin(venv_dir, "mergekit-yaml")
    try:
        venv.EnvBuilder(system_site_packages=True, with_pip=True, clear=True).create(venv_dir)
        _pip(venv_dir, f"mergekit=={MERGEKIT_VERSION}", log=log)
        if _works(venv_dir):
            return _bin(venv_dir, "mergekit-yaml")
        print("system-site-packages venv failed pip check; trying a plain venv", file=log)
    except subprocess.CalledProcessError as e:
        print(f"system-site-packages install failed ({e}); trying a plain venv", file=log)
    venv.EnvBuilder(system_site_packages=False, with_pip=True, clear=True).create(venv_dir)
    _pip(venv_dir, TORCH_PIN, log=log)
    _pip(venv_dir, f"mergekit=={MERGEKIT_VERSION}", log=log)
    if not _works(venv_dir):
        raise RuntimeError(f"mergekit {MERGEKIT_VERSION} does not import in {venv_dir}")
    return _bin(venv_dir, "mergekit-yaml")


def mergekit_config(scenario: str, base: str | Path, models: list[str | Path], alpha: float, beta: float,
                    density: float = 0.2, dtype: str = "bfloat16") -> dict:
    """mergekit YAML (as a dict) computing the same LiNeS merge as hf-lines for a scenario.

    single / ta4: task_arithmetic, theta_0 + sum_t lambda(i) * tau_t, the gradient on each
    model's weight. ties4: ties with the gradient on the shared lambda (see module doc).
    dtype is mergekit's compute dtype; the output stays bfloat16 (the inputs' dtype).
    """
    gradient = [float(alpha), float(alpha + beta)]
    cfg: dict = {"base_model": str(base), "dtype": dtype}
    if dtype != "bfloat16":
        cfg["out_dtype"] = "bfloat16"
    if scenario in ("single", "ta4", "ta2-auto"):  # ta2-auto: alpha is the one hf-lines resolved
        cfg["merge_method"] = "task_arithmetic"
        cfg["models"] = [{"model": str(m), "parameters": {"weight": gradient}} for m in models]
    elif scenario == "ties4":
        cfg["merge_method"] = "ties"
        cfg["models"] = [{"model": str(m), "parameters": {"weight": 1.0, "density": density}} for m in models]
        cfg["parameters"] = {"normalize": True, "lambda": gradient}
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    return cfg


def mergekit_command(mergekit_yaml: str | Path, config_path: str | Path, out: str | Path,
                     shard_size: str | None = None) -> list[str]:
    cmd = [str(mergekit_yaml), str(config_path), str(out), *MERGEKIT_FLAGS]
    if shard_size:
        cmd += ["--out-shard-size", shard_size]
    return cmd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="create or check the benchmark's mergekit venv")
    ap.add_argument("--venv", default=str(DEFAULT_VENV))
    args = ap.parse_args(argv)
    exe = ensure_mergekit(args.venv)
    print(exe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
