"""Rewarded soups (Rame et al., 2023) with LiNeS: interpolate policies trained from one SFT model.

theta(w) = theta_SFT + lambda(l) * sum_k w_k (theta_k - theta_SFT). ``RewardedSoup`` writes
a sweep of weight vectors, one output folder each plus ``soup.json``: exact LoRA adapters
when the policies are LoRA adapters, streamed full models otherwise (several outputs per
read pass). ``hf_lines.eval.rewards`` scores the outputs with reward models.
"""
from hf_lines.soups.disk import InsufficientDiskError, plan_groups
from hf_lines.soups.index import INDEX_FILE, SoupIndex
from hf_lines.soups.inputs import MergedSFTCheckpoint, SoupInputs, open_inputs
from hf_lines.soups.outputs import SoupOutput, plan_outputs
from hf_lines.soups.recipe import SOUP_RECIPE_FILE, SoupRecipe
from hf_lines.soups.soup import RewardedSoup
from hf_lines.soups.weights import output_name, parse_lambdas, parse_weights, weights_for_lambdas

__all__ = [
    "INDEX_FILE",
    "InsufficientDiskError",
    "MergedSFTCheckpoint",
    "RewardedSoup",
    "SOUP_RECIPE_FILE",
    "SoupIndex",
    "SoupInputs",
    "SoupOutput",
    "SoupRecipe",
    "open_inputs",
    "output_name",
    "parse_lambdas",
    "parse_weights",
    "plan_groups",
    "plan_outputs",
    "weights_for_lambdas",
]
