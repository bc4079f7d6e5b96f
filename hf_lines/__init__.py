"""hf-lines: LiNeS (Layer-increasing Network Scaling) for Hugging Face checkpoints."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hf-lines")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+local"

from .layers import LayerMap
from .merger import LinesConfig, LinesMerger
from .recipe import Recipe
from .schedule import block_scale, block_scales, single_task
from .adapters import scale_adapter  # noqa: E402  (LiNeS on PEFT LoRA adapters, adapter out)
from .soups import RewardedSoup  # noqa: E402  (rewarded soups with LiNeS)

__all__ = ["LayerMap", "LinesMerger", "LinesConfig", "Recipe", "block_scale", "block_scales", "single_task", "scale_adapter", "RewardedSoup", "__version__"]
