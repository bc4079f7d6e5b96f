"""CPU cost of hf-lines' per-tensor work, apart from the disk: what a cold-cache run must overlap with its reads.

    python benchmarks/profile_compute.py /tmp/hf-lines-bench/7b/inputs [--layers 0] [--repeat 3] [--json out.json]

On the tensors of the given decoder layers plus ``embed_tokens`` (read into memory first, so
no disk time is in the figures), with one intra-op thread, it times the steps each scenario
of ``run.py`` runs per tensor and scales them to the whole checkpoint by bytes:

- ``single``: ``kernels.weighted_sum_edit`` with one model (the fused lerp);
- ``ta2-auto``: the statistics pass (finite check of every input and ``sum_l1_norm``, which
  for task arithmetic is computed twice: once as ||sum tau||_1 and once as ||tau_MTL||_1,
  the same number), then the merge (``weighted_sum_edit``, 2 models);
- ``soup3``: three outputs of the soup's plan (``pipeline.plan.output_tensor``, task
  arithmetic of 2 models; the fused kernel measures each output's card norms on the way).

CPU seconds for the whole 7B at one thread; divide by the cores (2 here) for the least wall
time the arithmetic needs when it overlaps perfectly.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(argv: list[str] | None = None) -> int:
    from hf_lines.core import kernels
    from hf_lines.core.methods.arithmetic import is_finite
    from hf_lines.core.methods.task_vectors import sum_l1_norm
    from hf_lines.io.checkpoint import Checkpoint
    from hf_lines.core.methods.task_arithmetic import TaskArithmetic
    from hf_lines.pipeline.plan import PlanOutput, output_tensor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", type=Path, help="folder with base/, ft1/, ft2/ (run.py's synthetic set)")
    ap.add_argument("--layers", default="0", help="comma list of decoder layers to time")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many timings per step")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    base, ft1, ft2 = (Checkpoint(args.inputs / n) for n in ("base", "ft1", "ft2"))
    layers = {int(x) for x in args.layers.split(",")}
    names = [n for n in base.names() if n == "model.embed_tokens.weight"
             or any(n.startswith(f"model.layers.{i}.") for i in layers)]
    total = sum(base.info(n).nbytes for n in base.names())
    sample = sum(base.info(n).nbytes for n in names)
    soup = PlanOutput(TaskArithmetic(), (0.5, 0.5))
    steps = {
        "finite check, 3 inputs": lambda b, m: [is_finite(t) for t in (b, *m)],
        "sum_l1_norm, 2 models": lambda b, m: sum_l1_norm(b, m, [1.0, 1.0]),
        "weighted_sum_edit, 1 model (single edit)": lambda b, m: kernels.weighted_sum_edit(b, m[:1], [1.0], 0.7),
        "weighted_sum_edit, 2 models (merge)": lambda b, m: kernels.weighted_sum_edit(b, m, [1.0, 1.0], 0.7),
        "output_tensor, 2 models (one soup output)": lambda b, m: output_tensor(soup, "", [], b, m, 0.7, norms={}),
        "copy (memory bandwidth reference)": lambda b, m: b.clone(),
    }
    cpu = {k: 0.0 for k in steps}
    for name in names:
        b = base.get(name).clone()  # in memory: the timings hold no disk reads
        m = [ft1.get(name).clone(), ft2.get(name).clone()]
        for key, fn in steps.items():
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.thread_time()
                fn(b, m)
                best = min(best, time.thread_time() - t0)
            cpu[key] += best
    scale = total / sample
    whole = {k: v * scale for k, v in cpu.items()}
    plans = {
        "single": whole["weighted_sum_edit, 1 model (single edit)"],
        "ta2-auto": whole["finite check, 3 inputs"] + 2 * whole["sum_l1_norm, 2 models"]
        + whole["weighted_sum_edit, 2 models (merge)"],
        "soup3": 3 * whole["output_tensor, 2 models (one soup output)"],
    }
    res = {"tensors": names, "sample_bytes": sample, "checkpoint_bytes": total,
           "cpu_s_whole_checkpoint_one_thread": whole, "scenario_cpu_s_one_thread": plans}
    print(f"{len(names)} tensors, {sample / 1e9:.2f} GB of {total / 1e9:.2f} GB per checkpoint; CPU s for the whole "
          "checkpoint at one thread:")
    for k, v in whole.items():
        print(f"  {k:<44} {v:7.1f}")
    for k, v in plans.items():
        print(f"  scenario {k:<35} {v:7.1f}  ({v / 2:.1f} s on 2 cores)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
