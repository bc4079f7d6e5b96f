"""``hf-lines evaluate OUTDIR``: score a rewarded-soup sweep with reward models (table, CSV/JSON, Pareto plot)."""
from __future__ import annotations

import argparse
from typing import Any

from hf_lines.publish.tables import format_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score the outputs of `hf-lines soup` with reward models: mean reward table and Pareto front",
        description="Generate with every output listed in OUTDIR/soup.json and score prompt + response with each "
        "reward model. Writes OUTDIR/eval/rewards.csv, rewards.json, pareto.png and generations/.",
    )
    p.add_argument("outdir", help="the folder `hf-lines soup -o` wrote (holds soup.json)")
    p.add_argument("--outputs", nargs="+", default=None, metavar="NAME", help="only these outputs (default: all on disk)")
    add_eval_args(p, required=True)
    p.set_defaults(func=run)


def add_eval_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    g = p.add_argument_group("evaluation with reward models")
    g.add_argument("--reward-model", action="append", default=None, required=required, metavar="RM",
                   help="AutoModelForSequenceClassification folder or Hub id[@revision]; repeat for several")
    g.add_argument("--reward-label", action="append", default=None, metavar="LABEL",
                   help="label whose logit is the reward: index or name (default 0); once for all, or once per --reward-model")
    g.add_argument("--prompts", required=required, metavar="SRC",
                   help="prompt set: a .jsonl/.json/.csv/.parquet/.txt file, a dataset folder, or a Hub dataset id")
    g.add_argument("--prompt-column", default="prompt", help="column holding the prompts (default: prompt)")
    g.add_argument("--prompt-split", default="train", help="dataset split (default: train)")
    g.add_argument("--prompt-config", default=None, help="dataset configuration name (Hub datasets)")
    g.add_argument("--limit", type=int, default=None, help="use the first N prompts")
    g.add_argument("--prompt-template", default="{prompt}", help="what the policy sees, e.g. 'Human: {prompt} Assistant:'")
    g.add_argument("--score-template", default="{input}{response}",
                   help="what the reward models see: {input} (templated prompt), {prompt}, {response}")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--sample", action="store_true", help="sample (with --seed) instead of greedy decoding")
    g.add_argument("--seed", type=int, default=0, help="sampling seed, the same for every output")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: accelerate's choice)")
    g.add_argument("--dtype", default="auto", help="weights dtype for policies and reward models: auto (checkpoint's), "
                                                   "float32, bfloat16, float16")
    g.add_argument("--max-length", type=int, default=1024, help="reward models truncate prompt + response to this")


def build_evaluator(args: argparse.Namespace, outdir: Any) -> Any:
    from hf_lines.eval.rewards import GenerationSettings, load_prompts
    from hf_lines.soups.evaluate import SoupEvaluator

    prompts = load_prompts(args.prompts, column=args.prompt_column, split=args.prompt_split,
                           config=args.prompt_config, limit=args.limit)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, do_sample=args.sample, seed=args.seed, temperature=args.temperature,
        top_p=args.top_p, batch_size=args.batch_size, prompt_template=args.prompt_template,
        score_template=args.score_template,
    )
    return SoupEvaluator(outdir, args.reward_model, prompts, settings=settings, device=args.device, dtype=args.dtype,
                         max_length=args.max_length, reward_labels=args.reward_label)


def print_results(table: Any, eval_dir: Any) -> None:
    print(table.format())
    summary = table.settings.get("pareto", {})
    rows = []
    for variant, entry in summary.get("variants", {}).items():
        beaten = ", ".join(f"{n} of {other}'s front" for other, n in entry.get("dominates", {}).items())
        rows.append([variant, " ".join(entry["front"]), entry.get("hypervolume"), beaten or None])
    if rows:
        print()
        print(format_table(["variant", "Pareto front", "hypervolume", "dominates"], rows))
    print(f"\nwrote {eval_dir}/rewards.csv, rewards.json, pareto.png and generations/")


def run(args: argparse.Namespace) -> int:
    evaluator = build_evaluator(args, args.outdir)
    table = evaluator.run(args.outputs)
    print_results(table, evaluator.eval_dir)
    return 0
