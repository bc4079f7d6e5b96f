"""A PEFT LoRA adapter read lazily: its LoraConfig, its tensors and their layout on a base."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import torch

from hf_lines.errors import AdapterError
from hf_lines.adapters.config import adapter_weights_file, read_lora_config
from hf_lines.adapters.delta import ModuleKind
from hf_lines.adapters.layout import AdapterLayout, LoraModule, module_paths, parse_layout
from hf_lines.adapters.model_facts import ModelFacts, model_facts
from hf_lines.io.checkpoint import TensorSource

log = logging.getLogger(__name__)


class LoraAdapter:
    """One LoRA adapter folder laid onto a base; reads adapter tensors on demand, never base weights."""

    def __init__(self, path: str | Path, base: TensorSource, label: str | None = None):
        self.path = Path(path)
        self.label = label or str(path)
        self.base = base
        self.config = read_lora_config(self.path, self.label)
        self.file = adapter_weights_file(self.path, self.label)
        self._bin: dict[str, torch.Tensor] | None = None
        self._handle: Any = None
        self._open_lock = threading.Lock()
        self.shapes = self._read_shapes()
        self._facts_lock = threading.Lock()
        self._renamed = False  # some adapter name is not a checkpoint name (transformers renamed it)
        self.layout: AdapterLayout = parse_layout(
            self.shapes, self.config, self._locate, lambda n: base.info(n).shape, self.label
        )

    @property
    def is_dora(self) -> bool:
        return any(m.is_dora for m in self.layout.modules.values())

    # ----------------------------------------------------------------- tensors
    def _read_shapes(self) -> dict[str, tuple[int, ...]]:
        try:
            if self.file.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(self.file), framework="pt") as f:
                    return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            self._bin = torch.load(self.file, map_location="cpu", weights_only=True, mmap=True)
            return {k: tuple(v.shape) for k, v in self._bin.items()}
        except Exception as e:
            raise AdapterError(f"{self.file}: cannot read the adapter weights ({e}); re-save or re-download the adapter") from e

    def tensor(self, key: str) -> torch.Tensor:
        """One adapter tensor by its key in the adapter file: a private copy, the caller may change it."""
        if self._bin is not None:
            return self._bin[key].clone()
        # One handle for the adapter's life: re-opening parses the header on every read, and an
        # adapter is small next to its base. Tensors from one handle share its mapping, so a
        # merge method that works in place on an input would change every later read: copy.
        with self._open_lock:
            if self._handle is None:
                from safetensors import safe_open

                self._handle = safe_open(str(self.file), framework="pt")
            return self._handle.get_tensor(key).clone()

    def keys(self) -> list[str]:
        return list(self.shapes)

    # ------------------------------------------------------- model facts
    def facts(self) -> ModelFacts | None:
        """Conv1D modules and live -> checkpoint names of the base (built once, on the meta device)."""
        with self._facts_lock:
            return model_facts(str(self.base.path), tuple(self.base.names()))

    def _locate(self, name: str) -> str | None:
        """The base checkpoint tensor for a live tensor name used by peft, or None."""
        if name in self.base:
            return name
        self._renamed = True
        facts = self.facts()
        return facts.checkpoint_name.get(name) if facts is not None else None

    def kind(self, module: LoraModule) -> ModuleKind:
        """Linear or Conv1D for a square weight, decided as peft does: by the module's class in the model."""
        if module.kind is not None:
            return module.kind
        facts = self.facts()
        if facts is not None:
            return "conv1d" if module.module in facts.conv1d else "linear"
        # The saved flag is the last value peft settled on, so it is right unless Linear and
        # Conv1D modules were both targeted; say so rather than guess silently.
        log.warning(
            "%s: cannot build the base model on the meta device to tell Linear from Conv1D for the square weight "
            "%r; following adapter_config.json fan_in_fan_out=%s",
            self.label, module.weight, bool(self.config.fan_in_fan_out),
        )
        return "conv1d" if self.config.fan_in_fan_out else "linear"

    def module_paths(self) -> set[str]:
        """Paths of the base's modules as peft names them (live names)."""
        facts = self.facts() if self._renamed else None
        return module_paths(facts.live_names if facts is not None else self.base.names())
