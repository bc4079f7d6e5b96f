"""Evaluation: sweep (alpha, beta) on validation data and select by a stated rule (``hf-lines sweep``)."""
from hf_lines.eval.evaluators import CallableEvaluator, ClassificationAccuracy, Evaluator, ExactMatch, LanguageModelLoss
from hf_lines.eval.lm_eval import LmEvalHarness
from hf_lines.eval.results import Point, SweepResult
from hf_lines.eval.selection import MergeRule, MetricRule, References, SingleTaskRule
from hf_lines.eval.sweep import Sweep, make_grid, sweep
from hf_lines.eval.rewards import GenerationSettings, RewardModel, RewardModelSpec, RewardTable, load_prompts  # noqa: F401  (rewarded soups)

__all__ = [
    "sweep", "Sweep", "make_grid", "SweepResult", "Point",
    "Evaluator", "ClassificationAccuracy", "ExactMatch", "LanguageModelLoss", "CallableEvaluator", "LmEvalHarness",
    "SingleTaskRule", "MergeRule", "MetricRule", "References",
]
