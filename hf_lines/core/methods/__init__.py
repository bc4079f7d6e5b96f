"""Merge methods as pure tensor functions, registered by name."""
from hf_lines.core.methods import consensus, soups, task_arithmetic, ties  # noqa: F401  (registers the methods)
from hf_lines.core.methods.base import METHODS, MergeMethod, get_method, register_method

__all__ = ["METHODS", "MergeMethod", "get_method", "register_method"]
