"""The inputs of a rewarded soup: theta_SFT and the policies, each a full checkpoint or a LoRA adapter.

- The SFT model is a full model, or a LoRA adapter on a base model: then theta_SFT is the
  base with the SFT adapter merged in (float32, as peft's merge computes it before rounding).
- A policy is a full model or a LoRA adapter over theta_SFT (trained on the SFT model, as
  the rewarded soups paper trains PPO LoRAs on the merged Alpaca SFT model).

Every input is read lazily, one tensor at a time, through the ``Checkpoint`` interface.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from hf_lines.adapters import AdapterCheckpoint, is_adapter_folder, read_lora_config
from hf_lines.adapters.reader import LoraAdapter
from hf_lines.io.checkpoint import TensorSource
from hf_lines.pipeline.executor import check_compatible
from hf_lines.errors import AdapterError, OptionError
from hf_lines.io import Checkpoint, ModelRef, resolve
from hf_lines.io.checkpoint import TensorInfo


class MergedSFTCheckpoint(AdapterCheckpoint):
    """theta_SFT = base + SFT adapter, read like a full checkpoint.

    ``path`` is the base's folder: config.json, tokenizer files and the meta-device model
    facts of policy adapters come from there; ``adapter_path`` is the SFT adapter's folder.
    """

    def __init__(self, adapter_path: str | Path, base: TensorSource, label: str | None = None):
        super().__init__(adapter_path, base, label)
        self.adapter_path = self.adapter.path
        self.path = base.path

    def __repr__(self) -> str:
        return f"MergedSFTCheckpoint({self.label!r} merged into {self.base.label!r})"


@dataclass
class SoupInput:
    """One input as given (``spec``), where it came from (``ref``) and how it is read (``checkpoint``)."""

    spec: str
    ref: ModelRef
    checkpoint: Any  # Checkpoint, AdapterCheckpoint or MergedSFTCheckpoint

    @property
    def is_adapter(self) -> bool:
        return isinstance(self.checkpoint, AdapterCheckpoint) and not isinstance(self.checkpoint, MergedSFTCheckpoint)

    @property
    def folder(self) -> Path:
        """The folder the user pointed at (an adapter's folder for adapters, the SFT adapter's for a merged SFT)."""
        ckpt = self.checkpoint
        return Path(getattr(ckpt, "adapter_path", None) or ckpt.path)

    def spec_for_recipe(self) -> str:
        """``repo@revision`` for Hub inputs, the absolute folder for local ones."""
        if self.ref.is_hub:
            return f"{self.ref.repo_id}@{self.ref.revision}" if self.ref.revision else str(self.ref.repo_id)
        return str(self.folder.expanduser().resolve())

    def record(self) -> dict[str, Any]:
        """The input in the shape of ``LinesMerger.describe()`` entries."""
        if self.ref.is_hub:
            return {"repo_id": self.ref.repo_id, "revision": self.ref.revision, "path": None}
        return {"repo_id": None, "revision": None, "path": str(self.folder.expanduser().resolve())}


@dataclass
class SoupInputs:
    """theta_SFT, its base when the SFT model is an adapter, and the policies."""

    sft: SoupInput
    base: SoupInput | None  # the base model under an SFT adapter, else None
    policies: list[SoupInput]

    @property
    def sft_checkpoint(self) -> Any:
        return self.sft.checkpoint

    @property
    def weights_reader(self) -> Checkpoint:
        """A real checkpoint with theta_SFT's names, shapes, dtypes, config and support files."""
        return self.base.checkpoint if self.base is not None else self.sft.checkpoint

    def infos(self) -> dict[str, TensorInfo]:
        """Output tensor plan: names, shapes and the SFT's stored dtypes (the base's under an SFT adapter)."""
        reader = self.weights_reader
        return {n: reader.info(n) for n in reader.names()}

    @property
    def sft_adapter(self) -> LoraAdapter | None:
        ckpt = self.sft.checkpoint
        return ckpt.adapter if isinstance(ckpt, MergedSFTCheckpoint) else None

    def policy_adapters(self) -> list[LoraAdapter] | None:
        """The policies as LoRA adapters, or None when any of them is a full model."""
        if all(p.is_adapter for p in self.policies):
            return [p.checkpoint.adapter for p in self.policies]
        return None

    def read(self, name: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """theta_SFT and every policy's tensor ``name`` (NaN and infinity refused)."""
        from hf_lines.pipeline.executor import read_inputs

        return read_inputs(name, self.sft.checkpoint, [p.checkpoint for p in self.policies])


def open_inputs(
    sft: str | Path, policies: Sequence[str | Path], *, sft_base: str | Path | None = None,
    token: str | bool | None = None,
) -> SoupInputs:
    """Open the SFT model (full, or an adapter on ``sft_base``) and the policies (full or adapters over it).

    Reads headers and adapter configs only. ``sft_base`` defaults to the SFT adapter's
    ``base_model_name_or_path``.
    """
    if isinstance(policies, (str, Path)):
        policies = [policies]
    if not policies:
        raise OptionError("give at least one policy (a full model or a LoRA adapter over the SFT model)")
    sft_path = resolve(sft, token=token)
    base_input = None
    if is_adapter_folder(sft_path):
        if sft_base is None:
            sft_base = read_lora_config(sft_path, str(sft)).base_model_name_or_path
            if not sft_base:
                raise AdapterError(
                    f"the SFT model {sft} is a LoRA adapter whose adapter_config.json names no base model; "
                    "give the base it was trained on (CLI: --sft-base BASE; Python: sft_base=...)"
                )
        base_path = resolve(sft_base, token=token)
        if is_adapter_folder(base_path):
            raise AdapterError(f"the SFT adapter's base {sft_base} is itself an adapter; merge it first and give that model")
        base_ckpt = Checkpoint(base_path, label=str(sft_base))
        base_input = SoupInput(str(sft_base), ModelRef.parse(sft_base), base_ckpt)
        sft_ckpt: Any = MergedSFTCheckpoint(sft_path, base_ckpt, label=str(sft))
    else:
        if sft_base is not None:
            raise AdapterError(f"sft_base was given but the SFT model {sft} is a full model, not an adapter")
        sft_ckpt = Checkpoint(sft_path, label=str(sft))
    sft_input = SoupInput(str(sft), ModelRef.parse(sft), sft_ckpt)
    opened = []
    for spec in policies:
        path = resolve(spec, token=token)
        ckpt = AdapterCheckpoint(path, sft_ckpt, label=str(spec)) if is_adapter_folder(path) else Checkpoint(path, label=str(spec))
        opened.append(SoupInput(str(spec), ModelRef.parse(spec), ckpt))
    check_compatible(sft_ckpt, [p.checkpoint for p in opened])
    return SoupInputs(sft_input, base_input, opened)
