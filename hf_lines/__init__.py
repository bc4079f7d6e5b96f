"""hf-lines: LiNeS (Layer-increasing Network Scaling) for Hugging Face checkpoints."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hf-lines")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+local"

from .layers import LayerMap
from .merger import LinesConfig, LinesMerger
from .schedule import block_scale, block_scales, single_task

__all__ = ["LayerMap", "LinesMerger", "LinesConfig", "block_scale", "block_scales", "single_task", "__version__"]
