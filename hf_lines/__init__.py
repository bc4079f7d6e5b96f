"""hf-lines: LiNeS (Layer-increasing Network Scaling) for Hugging Face checkpoints."""
from hf_lines.version import __version__

from hf_lines.core.layers import LayerMap
from hf_lines.core.lines import LinesConfig
from hf_lines.pipeline.merger import LinesMerger
from hf_lines.pipeline.recipe import Recipe
from hf_lines.core.schedule import block_scale, block_scales, single_task
from hf_lines.adapters import scale_adapter  # noqa: E402  (LiNeS on PEFT LoRA adapters, adapter out)
from hf_lines.soups import RewardedSoup  # noqa: E402  (rewarded soups with LiNeS)

__all__ = ["LayerMap", "LinesMerger", "LinesConfig", "Recipe", "block_scale", "block_scales", "single_task", "scale_adapter", "RewardedSoup", "__version__"]
