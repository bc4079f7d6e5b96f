"""Layer maps: which block of which stack every tensor belongs to."""
from .infer import Stack, Tower, find_block
from .map import POLICIES, LayerMap, config_layer_counts

__all__ = ["LayerMap", "Stack", "Tower", "POLICIES", "find_block", "config_layer_counts"]
