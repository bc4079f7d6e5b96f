"""Layer maps: which block of which stack every tensor belongs to."""
from hf_lines.core.layers.infer import Stack, Tower, find_block
from hf_lines.core.layers.map import POLICIES, LayerMap, config_layer_counts

__all__ = ["LayerMap", "Stack", "Tower", "POLICIES", "find_block", "config_layer_counts"]
