"""A run's input models: where each came from and the checkpoint it is read through."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_lines.io import Checkpoint, ModelRef, TensorSource, resolve


@dataclass
class Parent:
    """One input model: where it came from and the folder it was read from."""

    ref: ModelRef
    checkpoint: TensorSource  # a model folder, or an adapter seen as the fine-tune it defines
    weight: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


def open_parent(spec: str | Path, *, token: str | bool | None, weight: float = 1.0, base: Parent | None = None) -> Parent:
    ref = ModelRef.parse(spec)
    path = resolve(spec, token=token)
    from hf_lines.adapters import AdapterCheckpoint, is_adapter_folder

    if is_adapter_folder(path):  # a PEFT adapter stands for base + its update
        if base is None:
            from hf_lines.errors import AdapterError

            raise AdapterError(
                f"{spec} is a PEFT adapter, not a full model: give the model it was trained on as the base "
                "and the adapter among the fine-tuned models"
            )
        return Parent(ref, AdapterCheckpoint(path, base.checkpoint, label=str(spec)), weight)
    return Parent(ref, Checkpoint(path, label=str(spec)), weight)


def parent_record(p: Parent) -> dict[str, Any]:
    if p.ref.is_hub:
        return {"repo_id": p.ref.repo_id, "revision": p.ref.revision, "path": None}
    return {"repo_id": None, "revision": None, "path": str(p.checkpoint.path)}
