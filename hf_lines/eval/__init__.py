"""Evaluation: sweep (alpha, beta) on validation data and select by a stated rule (``hf-lines sweep``)."""
from .evaluators import CallableEvaluator, ClassificationAccuracy, Evaluator, ExactMatch, LanguageModelLoss
from .results import Point, SweepResult
from .selection import MergeRule, MetricRule, References, SingleTaskRule
from .sweep import Sweep, make_grid, sweep
from .rewards import GenerationSettings, RewardModel, RewardModelSpec, RewardTable, load_prompts  # noqa: F401  (rewarded soups)

__all__ = [
    "sweep", "Sweep", "make_grid", "SweepResult", "Point",
    "Evaluator", "ClassificationAccuracy", "ExactMatch", "LanguageModelLoss", "CallableEvaluator",
    "SingleTaskRule", "MergeRule", "MetricRule", "References",
]
