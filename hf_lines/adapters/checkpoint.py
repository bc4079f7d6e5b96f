"""A LoRA adapter seen as the fine-tuned checkpoint it stands for: base + B @ A * scale.

``AdapterCheckpoint`` has the interface of ``sources.Checkpoint`` (names, info, get,
config, path, label), so ``LinesMerger`` and every merge method use adapters unchanged:
``get(name)`` is the base tensor plus the adapter's update in float32 for adapted
tensors (DoRA's merged weight for DoRA modules, the saved copy for ``modules_to_save``),
and the base tensor itself for the rest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hf_lines.io.checkpoint import TensorInfo
from hf_lines.adapters.delta import dora_weight, lora_delta
from hf_lines.adapters.reader import LoraAdapter
from hf_lines.io.checkpoint import TensorSource


class AdapterCheckpoint:
    """The fine-tuned model a LoRA adapter defines on ``base``, read one tensor at a time."""

    def __init__(self, path: str | Path, base: TensorSource, label: str | None = None):
        self.adapter = LoraAdapter(path, base, label)
        self.base = base
        self.path = self.adapter.path
        self.label = self.adapter.label

    # The same tensors, shapes and config as the base: the adapter only changes values.
    @property
    def config(self) -> dict[str, Any]:
        return self.base.config

    def names(self) -> list[str]:
        return self.base.names()

    def __contains__(self, name: str) -> bool:
        return name in self.base

    def info(self, name: str) -> TensorInfo:
        return self.base.info(name)

    @property
    def lora_config(self) -> Any:
        return self.adapter.config

    def get(self, name: str) -> torch.Tensor:
        """The fine-tuned tensor: float32 where the adapter changes it, else the base tensor as stored."""
        layout, ad = self.adapter.layout, self.adapter
        module, bias_of, copy_key = layout.modules.get(name), layout.biases.get(name), layout.full.get(name)
        if module is None and bias_of is None and copy_key is None:
            return self.base.get(name)
        weight = ad.tensor(copy_key) if copy_key else self.base.get(name)
        if module is not None:
            kind = ad.kind(module)
            delta = lora_delta(ad.tensor(module.a_key), ad.tensor(module.b_key), module.scaling, kind)
            if module.is_dora:
                return dora_weight(weight, delta, ad.tensor(module.magnitude_key), kind)
            return weight.float() + delta
        if bias_of is not None:
            return weight.float() + bias_of.scaling * ad.tensor(bias_of.b_bias_key).float()
        return weight

    def __repr__(self) -> str:
        n = len(self.adapter.layout.modules)
        return f"AdapterCheckpoint({self.label!r}, {n} LoRA modules on {self.base.label!r})"
