"""Reproduce the LiNeS paper's two claims offline, on CPU, in minutes, with hf-lines' own sweep.

    python examples/reproduce_paper.py --out examples/results            # the run of docs/evidence.md (~5-10 min, 2 CPU cores)
    python examples/reproduce_paper.py --out /tmp/lines-quick --quick     # the same pipeline, tiny (< 1 min)

The benchmark (``hf_lines.eval.synthetic``): a 6-block GPT-2-style classifier pre-trained
on a broad mixture of 13 primitive sequence tasks; 8 new downstream tasks get frozen
prototype heads (the analogue of CLIP's zero-shot heads); each task is then fine-tuned
alone, heads frozen, until the other tasks lose accuracy. Nothing is downloaded.

Claim 1 (forgetting, the paper's Sec. 4.1): for each fine-tuned task, sweep LiNeS in its
single-task form (alpha = gamma, beta = 1 - gamma) and WiSE-FT (theta_0 + gamma * tau) over
gamma = 0, 0.1, ..., 1 on validation data; select LiNeS by the paper's rule (2 * target
normalized + control normalized); compare with WiSE-FT at the same target accuracy on
validation; report everything on held-out test data.

Claim 2 (merging, Sec. 4.2): merge the 8 fine-tunes with task arithmetic, TIES and
Consensus, each without LiNeS (one coefficient, grid as the paper's code) and with LiNeS
(alpha = auto, beta on the same grid); select on validation by the mean normalized accuracy;
report per task on test.

Everything printed and every file under --out is computed by this run; nothing is typed in.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean

import torch

from hf_lines.eval import sweep
from hf_lines.eval.plots import plot_tradeoff_curves
from hf_lines.eval.synthetic import BenchmarkConfig, build_benchmark

GAMMAS = [round(0.1 * i, 1) for i in range(11)]
MERGE_GRIDS = {  # the paper's code: TIES 0.1..1.5, the others 0.1..1.0 (src/eval/eval.py)
    "task_arithmetic": [round(0.1 * i, 1) for i in range(1, 11)],
    "ties": [round(0.1 * i, 1) for i in range(1, 16)],
    "consensus": [round(0.1 * i, 1) for i in range(1, 11)],
}
LINES, WISE_MATCHED, WISE_RULE = "LiNeS (paper's rule)", "WiSE-FT (matched target)", "WiSE-FT (paper's rule)"
MERGE_OPTIONS = {"task_arithmetic": {}, "ties": {"density": 0.2}, "consensus": {"k": 2, "lam": 0.4}}
QUICK = dict(d_model=32, layers=4, pretrain_steps=100, finetune_steps=40, n_validation=300, n_test=300,
             tasks=["first_gt_last", "ends_close", "low_vs_high", "even_majority"])


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- claim 1
def single_task(bench, tasks: dict, gammas: list[float]) -> dict:
    """Per fine-tuned task: LiNeS (selected by the paper's rule) vs WiSE-FT at matched target accuracy, on test."""
    per_task, curves = {}, {"LiNeS": {}, "WiSE-FT": {}}
    for t, ft in bench.finetuned.items():
        r = sweep(bench.base, ft, tasks, gammas=gammas, alphas=gammas, rule={"single_task": {"target": t}},
                  evaluate_test="all")
        lines = r.select(where=lambda p: p.label == "LiNeS")
        wise_rule = r.select(where=lambda p: p.label == "uniform")
        goal = r.normalized(lines, "validation")["target_normalized"]
        uniform = sorted((p for p in r.points if p.label == "uniform"), key=lambda p: p.alpha)
        # WiSE-FT at matched target accuracy: the smallest gamma whose validation target accuracy reaches LiNeS's
        matched = next((p for p in uniform if r.normalized(p, "validation")["target_normalized"] >= goal - 1e-12),
                       uniform[-1])
        row = {"zero-shot": _summary(r, "zero-shot", t), "fine-tuned": _summary(r, "fine-tuned", t),
               WISE_MATCHED: _summary(r, matched, t), WISE_RULE: _summary(r, wise_rule, t), LINES: _summary(r, lines, t)}
        per_task[t] = row
        for label, name in (("LiNeS", "LiNeS"), ("uniform", "WiSE-FT")):
            for p in r.points:
                if p.label == label:
                    d = r.normalized(p, "test")
                    curves[name].setdefault(p.alpha, []).append((d["control_normalized"], d["target_normalized"]))
        log(f"  {t:16s} fine-tuned: target {row['fine-tuned']['target_acc']:.3f}, control (norm.) "
            f"{row['fine-tuned']['control_norm']:.3f} | LiNeS gamma={lines.alpha:.1f}: "
            f"{row[LINES]['target_norm']:.3f}/{row[LINES]['control_norm']:.3f} | "
            f"WiSE-FT gamma={matched.alpha:.1f}: {row[WISE_MATCHED]['target_norm']:.3f}/"
            f"{row[WISE_MATCHED]['control_norm']:.3f}  ({r.seconds:.0f} s)")
    mean_curves = {k: [(mean(x for x, _ in v[g]), mean(y for _, y in v[g])) for g in sorted(v)] for k, v in curves.items()}
    return {"per_task": per_task, "curves": mean_curves, "gammas": gammas}


def _summary(r, point, target: str) -> dict:
    """Test numbers of a point or a reference model: target and mean control accuracy, raw and normalized."""
    values = r.task_values(point, "test")
    d = r.normalized(point, "test")
    controls = [c for c in values if c != target]
    out = {"target_acc": values[target], "control_acc": mean(values[c] for c in controls),
           "target_norm": d["target_normalized"], "control_norm": d["control_normalized"]}
    if not isinstance(point, str):
        out.update(alpha=point.alpha, beta=point.beta)
    return out


# --------------------------------------------------------------------------- claim 2
def merging(bench, evaluators: dict, grids: dict[str, list[float]]) -> dict:
    tasks = list(bench.finetuned)
    models = [bench.finetuned[t] for t in tasks]
    out = {}
    for method, grid in grids.items():
        r = sweep(bench.base, models, evaluators, method=method, alphas=grid, betas=[0.0],
                  points=[("auto", b, "LiNeS") for b in grid], rule="merge", evaluate_test="all",
                  task_models={t: i for i, t in enumerate(tasks)}, **MERGE_OPTIONS[method])
        res = {"auto_alpha": r.config["auto_alpha"], "curves": {}}
        for label, name in (("uniform", "plain"), ("LiNeS", "LiNeS")):
            best = r.select(where=lambda p, lab=label: p.label == lab)
            norm = r.normalized(best, "test")
            acc = best.values("test", r.primary)
            res[name] = {"alpha": best.alpha, "beta": best.beta, "avg_norm": mean(norm.values()), "avg_acc": mean(acc.values()),
                         "per_task_norm": {t: norm[f"{t}:normalized"] for t in tasks}}
            res["curves"][name] = [(p.beta if label == "LiNeS" else p.alpha, r.score(p, "validation"), r.score(p, "test"))
                                   for p in r.points if p.label == label]
        zs = r.normalized("zero-shot", "test")
        res["zero-shot"] = {"avg_norm": mean(zs.values()), "per_task_norm": {t: zs[f"{t}:normalized"] for t in tasks}}
        out[method] = res
        log(f"  {method:16s} plain (alpha={res['plain']['alpha']:.1f}): {res['plain']['avg_norm']:.3f} | LiNeS (alpha=auto="
            f"{res['auto_alpha']:.3f}, beta={res['LiNeS']['beta']:.1f}): {res['LiNeS']['avg_norm']:.3f}  ({r.seconds:.0f} s)")
    return out


# --------------------------------------------------------------------------- reporting
def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(claim1: dict, claim2: dict, meta: dict) -> str:
    tasks = list(claim1["per_task"])
    rows = list(next(iter(claim1["per_task"].values())))
    lines = ["### Claim 1 (forgetting): LiNeS vs WiSE-FT on single-task edits", "",
             f"Mean over the {len(tasks)} fine-tuned tasks, test data (%). Control = the other {len(tasks) - 1} tasks; "
             "target normalized by the fine-tuned model, control by the zero-shot model.", "",
             "| model | target acc | control acc | target (normalized) | control (normalized) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name in rows:
        v = [claim1["per_task"][t][name] for t in tasks]
        lines.append(f"| {name} | {_pct(mean(x['target_acc'] for x in v))} | {_pct(mean(x['control_acc'] for x in v))} | "
                     f"{_pct(mean(x['target_norm'] for x in v))} | {_pct(mean(x['control_norm'] for x in v))} |")
    lines += ["", "Per task (normalized target / control, test; gamma chosen on validation):", "",
              "| task | zero-shot target acc | fine-tuned | WiSE-FT (matched) | LiNeS |", "| --- | ---: | ---: | ---: | ---: |"]
    for t in tasks:
        r = claim1["per_task"][t]
        cell = lambda k: f"{_pct(r[k]['target_norm'])} / {_pct(r[k]['control_norm'])}"  # noqa: E731
        lines.append(f"| {t} | {_pct(r['zero-shot']['target_acc'])} | {cell('fine-tuned')} | "
                     f"{cell(WISE_MATCHED)} (γ={r[WISE_MATCHED]['alpha']:.1f}) | {cell(LINES)} (γ={r[LINES]['alpha']:.1f}) |")
    lines += ["", "### Claim 2 (merging): task arithmetic, TIES and Consensus with and without LiNeS", "",
              f"Normalized accuracy (acc / the task's fine-tuned acc, %) of one model merged from {len(tasks)} fine-tunes, "
              "test data; coefficients chosen on validation.", "",
              "| method | " + " | ".join(tasks) + " | average | coefficients |", "| --- |" + " ---: |" * (len(tasks) + 2)]
    first = next(iter(claim2.values()))
    lines.append("| zero-shot | " + " | ".join(_pct(first["zero-shot"]["per_task_norm"][t]) for t in tasks)
                 + f" | {_pct(first['zero-shot']['avg_norm'])} | |")
    names = {"task_arithmetic": "Task arithmetic", "ties": "TIES", "consensus": "Consensus"}
    for method, res in claim2.items():
        for variant in ("plain", "LiNeS"):
            v = res[variant]
            coef = f"alpha={v['alpha']:.1f}" if variant == "plain" else f"alpha=auto ({res['auto_alpha']:.3f}), beta={v['beta']:.1f}"
            label = names.get(method, method) + (" + LiNeS" if variant == "LiNeS" else "")
            lines.append(f"| {label} | " + " | ".join(_pct(v["per_task_norm"][t]) for t in tasks)
                         + f" | **{_pct(v['avg_norm'])}** | {coef} |")
    lines += ["", f"Run: `{meta['command']}`; seed {meta['seed']}; {meta['machine']}; torch {meta['torch']} "
              f"({meta['threads']} thread(s)); wall time {meta['seconds']:.0f} s "
              f"(pre-training {meta['stages']['pretrain']:.0f} s, fine-tuning {meta['stages']['finetune']:.0f} s, "
              f"claim 1 {meta['stages']['claim1']:.0f} s, claim 2 {meta['stages']['claim2']:.0f} s); "
              f"load average {meta['load_before']} before, {meta['load_after']} after."]
    return "\n".join(lines) + "\n"


def plots(out: Path, claim1: dict, claim2: dict) -> list[Path]:
    per = claim1["per_task"]
    markers = {}
    for name, label in (("zero-shot", "zero-shot"), ("fine-tuned", "fine-tuned"), (LINES, "* LiNeS (selected)"),
                        (WISE_MATCHED, WISE_MATCHED)):
        markers[label] = (mean(per[t][name]["control_norm"] for t in per), mean(per[t][name]["target_norm"] for t in per))
    files = [plot_tradeoff_curves(out / "tradeoff.png", {"LiNeS (gamma = 0..1)": claim1["curves"]["LiNeS"],
                                                        "WiSE-FT (gamma = 0..1)": claim1["curves"]["WiSE-FT"]},
                                  markers=markers, title=f"Forgetting trade-off, mean over {len(per)} fine-tuned tasks (test)")]
    from hf_lines.eval.plots import _figure

    fig = _figure(4.0 * len(claim2), 3.6)
    for i, (method, res) in enumerate(claim2.items()):
        ax = fig.add_subplot(1, len(claim2), i + 1)
        for variant, color, xlabel in (("plain", "#1f77b4", "alpha"), ("LiNeS", "#d62728", "beta (alpha = auto)")):
            pts = res["curves"][variant]
            ax.plot([x for x, _, _ in pts], [t for _, _, t in pts], "o-", color=color, markersize=3,
                    label=f"{'no LiNeS: ' if variant == 'plain' else 'LiNeS: '}{xlabel}")
        ax.set_title(method, fontsize=10)
        ax.set_xlabel("coefficient")
        if i == 0:
            ax.set_ylabel("mean normalized accuracy (test)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "merging.png")
    return files + [out / "merging.png"]


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="examples/results", help="folder for tables, CSV/JSON and plots")
    p.add_argument("--quick", action="store_true", help="tiny sizes and grids: the pipeline end to end in < 1 min")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    p.add_argument("--finetune-lr", type=float, default=None, help="override the fine-tuning learning rate")
    p.add_argument("--finetune-steps", type=int, default=None, help="override the fine-tuning steps")
    p.add_argument("--work", default=None, help="keep the trained models here (default: a temporary folder)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()

    start, load_before = time.perf_counter(), _load()
    config = BenchmarkConfig(seed=args.seed, **(QUICK if args.quick else {}))
    if args.finetune_lr is not None:
        config.finetune_lr = args.finetune_lr
    if args.finetune_steps is not None:
        config.finetune_steps = args.finetune_steps
    gammas = [0.0, 0.5, 1.0] if args.quick else GAMMAS
    grids = {m: [0.3, 0.6, 1.0] for m in MERGE_GRIDS} if args.quick else MERGE_GRIDS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        log(f"building the benchmark in {work} ({'quick' if args.quick else 'full'} mode, seed {args.seed})")
        bench = build_benchmark(work, config, log=lambda m: log("  " + m))
        stages = dict(bench.seconds)
        log("claim 1: single-task edits (LiNeS vs WiSE-FT)")
        t0 = time.perf_counter()
        evaluators = bench.tasks()  # read and batched once, shared by every sweep
        claim1 = single_task(bench, evaluators, gammas)
        stages["claim1"] = time.perf_counter() - t0
        log("claim 2: merging (task arithmetic, TIES, Consensus; with and without LiNeS)")
        t0 = time.perf_counter()
        claim2 = merging(bench, evaluators, grids)
        stages["claim2"] = time.perf_counter() - t0
    meta = {"command": "python examples/reproduce_paper.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "seed": args.seed, "threads": args.threads, "torch": torch.__version__,
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores",
            "seconds": time.perf_counter() - start, "stages": stages, "load_before": load_before, "load_after": _load(),
            "config": config.__dict__}
    table = markdown(claim1, claim2, meta)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"meta": meta, "claim1": claim1, "claim2": claim2}, indent=2) + "\n")
    plots(out, claim1, claim2)
    log("\n" + table)
    log(f"wrote {out / 'results.md'}, results.json, tradeoff.png, merging.png ({meta['seconds']:.0f} s in all)")
    return 0


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


if __name__ == "__main__":
    sys.exit(main())
