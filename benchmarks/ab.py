"""Two source trees of hf-lines on the benchmark scenarios: the same bytes, and how their wall times compare.

    python benchmarks/ab.py --before /tmp/hf-lines-old --after . --repeat 3

``--before`` is another checkout (e.g. ``git archive REV | tar -x -C DIR``, then
``python setup.py build_ext --inplace`` there for its kernels). Each run is a subprocess of
``run.py``'s command for the scenario with ``PYTHONPATH`` set to one tree; runs alternate
(before, after, before, ...) on a warm page cache, so drifting load on the machine hits both
alike. The last run of each tree keeps its output, whose safetensors shards and index are
hashed: the trees must write the same bytes. Writes ``<results-dir>/<name>.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402
from bench_report import ab_table, machine  # noqa: E402
from compare import output_digest  # noqa: E402
from synthetic import make_checkpoint_set  # noqa: E402

LAUNCHER = [sys.executable, "-c", "import sys; from hf_lines.cli import main; sys.exit(main())"]
PROBE = "import hf_lines, sys; sys.stdout.write(hf_lines.__file__)"


def imported_from(tree: Path) -> str:
    """Where ``hf_lines`` is imported from with ``PYTHONPATH=tree``: proves each side runs its own code."""
    import subprocess

    env = {**run.os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True).stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="the reference source tree")
    ap.add_argument("--after", type=Path, default=run.REPO, help="the tree under test (default: this one)")
    ap.add_argument("--shape", default="1.1b")
    ap.add_argument("--scenarios", default="single,ta4,ties4,ties4-global,ta2-auto,soup3")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None, help="synthetic set (reused; default: run.py's)")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--density", type=float, default=0.2)
    ap.add_argument("--soup-lambdas", default="0,0.5,1")
    ap.add_argument("--name", default=None, help="results file stem (default: ab-<shape>)")
    ap.add_argument("--results-dir", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    # what run.commands reads besides these
    args.device, args.floor_reader, args.floor_overlap = None, "pread", False
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    scenarios = [s for s in args.scenarios.split(",") if s]
    root = (args.workdir or Path(run.tempfile.gettempdir()) / "hf-lines-bench" / args.shape).resolve()
    work = root / "ab"
    work.mkdir(parents=True, exist_ok=True)
    run.os.chdir(work)  # `python -c` puts the working folder first on sys.path: it must hold no hf_lines
    origins = {k: imported_from(t) for k, t in trees.items()}
    for k, t in trees.items():
        if not origins[k].startswith(str(t)):
            ap.error(f"with PYTHONPATH={t}, hf_lines is imported from {origins[k]}: is it a source tree?")
    base, fts = make_checkpoint_set(root / "inputs", args.shape, max(run.SCENARIOS[s] for s in scenarios))
    rows = []
    for scenario in scenarios:
        models = fts[: run.SCENARIOS[scenario]]
        walls: dict[str, list[float]] = {k: [] for k in trees}
        peaks: dict[str, list[float]] = {k: [] for k in trees}
        digests: dict[str, dict[str, str]] = {}
        for rep in range(args.repeat):
            for side, tree in trees.items():
                out = work / f"out-{scenario}-{side}"
                shutil.rmtree(out, ignore_errors=True)
                cmd = run.commands("hf-lines", scenario, base, models, out, work, args, LAUNCHER, None)
                run.os.sync()
                run.warm_page_cache([base, *models])
                sample = run.measure(cmd, work / f"{scenario}-{side}-{rep}.log", env={"PYTHONPATH": str(tree)})
                if sample["rc"] != 0:
                    raise SystemExit(f"{scenario} ({side}) failed: " + " | ".join(sample["log_tail"][-3:]))
                walls[side].append(sample["wall_s"])
                if sample.get("peak_rss_gb") is not None:
                    peaks[side].append(sample["peak_rss_gb"])
                print(f"  {scenario:<12} {side:<6} run {rep + 1}: {sample['wall_s']:7.2f}s", file=sys.stderr)
                if rep == args.repeat - 1:
                    digests[side] = output_digest(out)
                shutil.rmtree(out, ignore_errors=True)
        same = bool(digests["before"]) and digests["before"] == digests["after"]
        row = {"scenario": scenario, "same_bytes": same, "files": len(digests["after"]),
               **{f"{side}_s_{stat}": f(walls[side]) for side in trees
                  for stat, f in (("min", min), ("median", statistics.median))},
               **{f"{side}_peak_rss_gb": max(peaks[side], default=None) for side in trees},
               "samples": walls}
        row["after_x_before_min"] = row["after_s_min"] / row["before_s_min"]
        row["after_x_before_median"] = row["after_s_median"] / row["before_s_median"]
        rows.append(row)
        print(f"{scenario:<12} before {row['before_s_min']:.2f}s after {row['after_s_min']:.2f}s "
              f"(x{row['after_x_before_min']:.3f} min, x{row['after_x_before_median']:.3f} median) "
              f"same bytes: {same}", file=sys.stderr)
    result = {"machine": machine(), "shape": args.shape, "repeat": args.repeat, "trees": origins, "rows": rows}
    name = args.name or f"ab-{args.shape}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results_dir / f"{name}.md").write_text(ab_table(result))
    print(ab_table(result))
    return 0 if all(r["same_bytes"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
