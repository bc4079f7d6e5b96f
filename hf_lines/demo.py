"""``hf-lines demo``: the paper's first claim end to end, offline, on a model trained here in about a minute.

1. Build the synthetic benchmark (``hf_lines.eval.synthetic``): pre-train a 6-block GPT-2-style
   classifier on a broad mixture of primitive sequence tasks, give 8 new tasks frozen
   prototype ("zero-shot") heads, and fine-tune it on one of them (the target) until the other
   7 (the controls) lose accuracy.
2. Sweep LiNeS in the paper's single-task form (alpha = gamma, beta = 1 - gamma, gamma =
   0, 0.1, ..., 1) in memory on validation data and select gamma by the paper's rule.
3. Report target and control accuracy on held-out test data for the zero-shot, fine-tuned
   and LiNeS models, and write the LiNeS model (weights, config, model card) to ``out``.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Callable


DEMO_TARGET = "min_first_half"  # the task whose fine-tune forgets the most in the run of docs/evidence.md


@dataclass
class DemoResult:
    output: Path
    rows: list[tuple[int, float, float, float]]  # block, lambda, ||tau||, ||lambda * tau||
    accuracy: list[dict[str, object]]  # model, target_acc, control_acc, target_norm, control_norm (test)
    alpha: float = 0.0
    beta: float = 0.0
    target: str = DEMO_TARGET
    seconds: dict[str, float] = field(default_factory=dict)


QUICK = dict(d_model=32, layers=4, pretrain_steps=100, finetune_steps=40, n_validation=300, n_test=300)


def demo_config(steps: int | None = None, seed: int = 0, quick: bool = False):
    """The benchmark of docs/evidence.md (same seeds: the same models as its run), one task fine-tuned instead of eight.

    ``quick``: a 4-block model trained for a few seconds, for tests; its numbers mean little.
    """
    from hf_lines.eval.synthetic import BenchmarkConfig

    config = BenchmarkConfig(seed=seed, **(QUICK if quick else {}))
    if steps is not None:
        config.finetune_steps = steps
    return config


def run_demo(out: str | Path, alpha: float | None = None, beta: float | None = None, steps: int | None = None,
             overwrite: bool = False, *, target: str = DEMO_TARGET, seed: int = 0, quick: bool = False,
             log: Callable[[str], None] = lambda message: None) -> DemoResult:
    """Train, fine-tune on ``target``, select LiNeS on validation (or use ``alpha``/``beta``), write the edit to ``out``.

    Runs on one CPU thread (restored afterwards): the models are tiny, and one thread is the
    fastest choice when other processes share the cores.
    """
    from transformers.utils import logging as hf_logging

    from hf_lines.core.threads import intra_op_threads
    from hf_lines.errors import OptionError
    from hf_lines.eval import sweep
    from hf_lines.eval.synthetic import build_benchmark
    from hf_lines.options import check_output_free, check_schedule

    # a minute of training must not end in a refusal that was known before it started
    check_output_free(out, overwrite)
    if alpha is not None:
        check_schedule(alpha, beta if beta is not None else 0.0)
    config = demo_config(steps, seed, quick)
    if target not in config.tasks:
        raise OptionError(f"target (--target) {target!r} is not a demo task; choose one of {', '.join(config.tasks)}")
    hf_logging.disable_progress_bar()
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover - datasets is a dependency
        pass
    with intra_op_threads(1), tempfile.TemporaryDirectory() as tmp:
        bench = build_benchmark(tmp, config, log=log, tasks_to_finetune=[target])
        start = time.perf_counter()
        grid = ({"points": [(alpha, beta if beta is not None else 0.0, "LiNeS")]} if alpha is not None
                else {"gammas": [round(0.1 * i, 1) for i in range(11)]})
        result = sweep(bench.base, bench.finetuned[target], bench.tasks(), rule={"single_task": {"target": target}},
                       **grid)
        best = result.best
        log(f"selected gamma = {best.alpha:.1f} on validation (alpha = {best.alpha:g}, beta = {best.beta:g}) "
            f"in {time.perf_counter() - start:.0f} s")
        accuracy = [_row(result, name, name, target) for name in ("zero-shot", "fine-tuned")]
        accuracy.append(_row(result, best, f"LiNeS (alpha={best.alpha:g}, beta={best.beta:g})", target))
        merger = result.merger(best)
        output = merger.save_pretrained(out, overwrite=overwrite, progress=False,
                                        card_data={"tags": ["hf-lines-demo"]})
        rows = [(b.block, b.scale, b.before, b.after) for b in merger.block_norms() if b.block is not None]
        seconds = {**bench.seconds, "sweep": time.perf_counter() - start}
    return DemoResult(Path(output), rows, accuracy, best.alpha, best.beta, target, seconds)


def _row(result, point, name: str, target: str) -> dict[str, object]:
    values = result.task_values(point, "test")
    norm = result.normalized(point, "test")
    controls = [t for t in values if t != target]
    return {"model": name, "target_acc": values[target], "control_acc": mean(values[c] for c in controls),
            "target_norm": norm["target_normalized"], "control_norm": norm["control_normalized"]}
