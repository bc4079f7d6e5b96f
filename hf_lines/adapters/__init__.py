"""LiNeS for PEFT LoRA adapters: scaled adapters out, merged models out, several adapters in.

- ``AdapterCheckpoint``: an adapter as the fine-tuned checkpoint it defines (base + B @ A
  * scale), so ``LinesMerger`` and every merge method take adapters like full models.
- ``scaled_adapter`` / ``scale_adapter``: LiNeS written back as a PEFT adapter by scaling
  each module's B (several adapters: concatenated rank).
"""
from hf_lines.adapters.checkpoint import AdapterCheckpoint
from hf_lines.adapters.config import ADAPTER_CONFIG, is_adapter_folder, read_lora_config
from hf_lines.adapters.delta import concat_rank, dora_weight, lora_delta, lora_scaling
from hf_lines.adapters.reader import LoraAdapter
from hf_lines.adapters.save import (
    OUTPUT_FORMATS,
    open_adapter,
    plan_output_format,
    scale_adapter,
    write_adapter,
)
from hf_lines.adapters.scaled import LINEAR_METHODS, linear_coefficients, scaled_adapter

__all__ = [
    "ADAPTER_CONFIG",
    "AdapterCheckpoint",
    "LINEAR_METHODS",
    "LoraAdapter",
    "OUTPUT_FORMATS",
    "concat_rank",
    "dora_weight",
    "is_adapter_folder",
    "linear_coefficients",
    "lora_delta",
    "lora_scaling",
    "open_adapter",
    "plan_output_format",
    "read_lora_config",
    "scale_adapter",
    "scaled_adapter",
    "write_adapter",
]
