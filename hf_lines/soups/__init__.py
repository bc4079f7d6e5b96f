"""Rewarded soups (Rame et al., 2023) with LiNeS: interpolate policies trained from one SFT model.

theta(w) = theta_SFT + lambda(l) * sum_k w_k (theta_k - theta_SFT). ``RewardedSoup`` writes
a sweep of weight vectors, one output folder each plus ``soup.json``: exact LoRA adapters
when the policies are LoRA adapters, streamed full models otherwise (several outputs per
read pass). ``hf_lines.eval.rewards`` scores the outputs with reward models.
"""
from .disk import InsufficientDiskError, plan_groups
from .index import INDEX_FILE, SoupIndex
from .inputs import MergedSFTCheckpoint, SoupInputs, open_inputs
from .outputs import SoupOutput, plan_outputs
from .recipe import SOUP_RECIPE_FILE, SoupRecipe
from .soup import RewardedSoup
from .weights import output_name, parse_lambdas, parse_weights, weights_for_lambdas

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
