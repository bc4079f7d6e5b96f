"""Reading and writing checkpoints: lazy, confined reads by name; the aligned sharded writer; output staging."""
from hf_lines.io.checkpoint import Checkpoint, TensorInfo, TensorSource, natural_key
from hf_lines.io.resolve import ModelRef, resolve

__all__ = ["Checkpoint", "TensorInfo", "TensorSource", "ModelRef", "resolve", "natural_key"]
