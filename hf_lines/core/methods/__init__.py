"""Merge methods as pure tensor functions, registered by name."""
from hf_lines.core.methods import consensus, soups, task_arithmetic, ties
from hf_lines.core.methods.base import METHODS, MergeMethod, get_method, register_method

_REGISTERED_BY = (consensus, soups, task_arithmetic, ties)  # importing these modules registers their methods

__all__ = ["METHODS", "MergeMethod", "get_method", "register_method"]
