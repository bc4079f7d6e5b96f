"""``hf-lines sweep [CONFIG] [flags]``: evaluate a grid of LiNeS edits or merges and keep the best on validation data."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="evaluate a grid of (alpha, beta) edits or merges on validation data and select the best",
        description="Evaluate a grid of LiNeS edits (one fine-tune) or merges (several) in memory, select the best "
                    "point on validation data by a stated rule, report it on test data, and save CSV, JSON and a PNG. "
                    "Settings come from a YAML config (schema: hf_lines.eval.config) and/or the flags; flags win.")
    p.add_argument("config", nargs="?", help="YAML sweep config")
    p.add_argument("--base", help="pre-trained model (folder or Hub id[@revision])")
    p.add_argument("--model", dest="models", action="append", help="fine-tuned model (repeat for a merge)")
    p.add_argument("--method", help="merge method (task_arithmetic, ties, consensus, ...)")
    p.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                   help="merge method option, YAML value (e.g. density=0.2); repeat")
    p.add_argument("--alphas", type=_floats_or_auto, help="comma-separated alphas; 'auto' is the paper's merge alpha")
    p.add_argument("--betas", type=_floats, help="comma-separated betas")
    p.add_argument("--gammas", type=_floats, help="single-task grid: alpha = gamma, beta = 1 - gamma")
    p.add_argument("--task", dest="tasks", action="append", nargs="+", metavar="ARG",
                   help="NAME TYPE VALIDATION [TEST]: a task with a built-in evaluator (classification, exact_match, "
                        "lm_loss) on local files or Hub datasets (hub:ORG/NAME:SPLIT); repeat")
    p.add_argument("--rule", choices=("merge", "single_task", "metric"), help="selection rule (default: single_task "
                   "for one model, merge for several)")
    p.add_argument("--target", help="single_task rule: the target task (default: the first task)")
    p.add_argument("--target-weight", type=float, default=None, help="single_task rule: weight of the target (2)")
    p.add_argument("--evaluate-test", choices=("best", "all", "none"), help="test: the selected point (default) or all")
    p.add_argument("--mode", choices=("auto", "memory", "stream"), help="hold tau in memory, or re-read per point")
    p.add_argument("-o", "--output", help="folder for sweep.csv, sweep.json, sweep.png (default: sweep-out)")
    p.add_argument("--save-best", metavar="DIR", help="also write the selected model (with its card) to DIR")
    p.add_argument("--overwrite", action="store_true", help="with --save-best: replace DIR if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _floats_or_auto(text: str) -> list[Any]:
    return [x.strip() if x.strip() == "auto" else _floats(x)[0] for x in text.split(",") if x.strip()]


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The YAML config (if any) with the flags merged over it."""
    import yaml

    from hf_lines.eval.config import SweepConfigError, load_config

    data: dict[str, Any] = dict(yaml.safe_load(Path(args.config).read_text()) or {}) if args.config else {}
    if args.config and not Path(args.config).exists():
        raise SweepConfigError(f"sweep config {args.config} does not exist")
    if args.base:
        data["base_model"] = args.base
    if args.models:
        data["models"] = args.models
    if args.method:
        data["method"] = args.method
    for item in args.method_option:
        key, sep, value = item.partition("=")
        if not sep:
            raise SweepConfigError(f"--method-option expects KEY=VALUE, got {item!r}")
        data.setdefault("method_options", {})[key] = yaml.safe_load(value)
    grid = dict(data.get("grid") or {})
    for key in ("alphas", "betas", "gammas"):
        if getattr(args, key) is not None:
            grid[key] = getattr(args, key)
    if grid:
        data["grid"] = grid
    for spec in args.tasks or []:
        if len(spec) not in (3, 4):
            raise SweepConfigError(f"--task expects NAME TYPE VALIDATION [TEST], got {spec}")
        name, kind, val, *test = spec
        data.setdefault("tasks", {})[name] = {"type": kind, "validation": _data_arg(val),
                                              **({"test": _data_arg(test[0])} if test else {})}
    if args.rule or args.target or args.target_weight is not None:
        rule = args.rule or "single_task"
        if rule == "single_task":
            tasks = list((data.get("tasks") or {}))
            opts = {"target": args.target or (tasks[0] if tasks else None)}
            if args.target_weight is not None:
                opts["target_weight"] = args.target_weight
            data["rule"] = {"single_task": opts}
        else:
            data["rule"] = rule
    for key in ("evaluate_test", "mode"):
        if getattr(args, key):
            data[key] = getattr(args, key)
    if args.output:
        data["output"] = args.output
    if args.save_best:
        data["save_best"] = args.save_best
    return load_config(data, folder=Path(args.config).parent if args.config else None)


def _data_arg(text: str) -> Any:
    """``hub:org/name[:split[:config]]`` -> a Hub spec; anything else is a local file."""
    if text.startswith("hub:"):
        parts = text[4:].split(":")
        spec: dict[str, Any] = {"dataset": parts[0], "split": parts[1] if len(parts) > 1 else "validation"}
        if len(parts) > 2:
            spec["name"] = parts[2]
        return spec
    return text


def run(args: argparse.Namespace) -> int:
    from hf_lines.eval import sweep
    from hf_lines.eval.config import sweep_arguments

    config = config_from_args(args)
    kwargs = sweep_arguments(config)
    result = sweep(**kwargs, progress=not args.quiet)
    auto = result.config.get("auto_alpha")
    print(f"hf-lines sweep: {len(result.points)} points, rule {result.rule.name}"
          + (f", alpha auto = {auto:.4g}" if auto is not None else "") + f", {result.seconds:.1f} s\n")
    print("validation:")
    print(result.table("validation"))
    if any("test" in p.metrics for p in result.points):
        print("\ntest:")
        print(result.table("test"))
    best = result.best
    print(f"\nselected: alpha = {best.alpha:.4g}{' (auto)' if best.alpha_setting == 'auto' else ''}, "
          f"beta = {best.beta:.4g} ({best.label}), validation score {best.scores['validation']:.4f}"
          + (f", test score {best.scores['test']:.4f}" if "test" in best.scores else ""))
    out = Path(config.get("output") or "sweep-out")
    files = result.save(out)
    print("wrote " + ", ".join(str(p) for p in files.values()))
    if config.get("save_best"):
        saved = result.merger().save_pretrained(config["save_best"], overwrite=args.overwrite, progress=not args.quiet)
        print(f"wrote the selected model to {saved}")
    return 0
