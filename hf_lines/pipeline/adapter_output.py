"""``LinesMerger.save_pretrained(output='adapter')``: a merger whose inputs are LoRA adapters, written as one."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_lines.adapters.checkpoint import AdapterCheckpoint
from hf_lines.adapters.reader import LoraAdapter
from hf_lines.adapters.save import (adapter_card_options, check_adapter_card_template, linear_method_names, adapter_output_blocker,
                                    choose_output_format, write_adapter)
from hf_lines.adapters.scaled import linear_coefficients, scaled_adapter
from hf_lines.errors import AdapterError
from hf_lines.options import check_output_free

if TYPE_CHECKING:
    from hf_lines.pipeline.merger import LinesMerger

log = logging.getLogger(__name__)


def adapter_inputs(merger: "LinesMerger") -> list[LoraAdapter] | None:
    """The merger's inputs as LoRA adapters, or None when any of them is a full model."""
    ckpts = [m.checkpoint for m in merger.models]
    if all(isinstance(c, AdapterCheckpoint) for c in ckpts):
        return [c.adapter for c in ckpts]
    return None


def resolve_output_format(merger: "LinesMerger", requested: str) -> str:
    """'auto' is 'adapter' when every input is a non-DoRA LoRA adapter and the method is linear, else 'model'."""
    if requested != "auto":
        return choose_output_format(requested, None)
    configs = [m.checkpoint.lora_config if isinstance(m.checkpoint, AdapterCheckpoint) else None for m in merger.models]
    return choose_output_format(requested, adapter_output_blocker(configs, merger.method, merger.weights))


def save_merger_adapter(
    merger: "LinesMerger", save_directory: str | Path, *, overwrite: bool = False, progress: bool = False,
    card_template: str | Path | None = None, card_data: dict[str, Any] | None = None, model_name: str | None = None,
) -> Path:
    """``LinesMerger.save_pretrained(output='adapter')``: the scaled or merged LoRA adapter, with its model card."""
    adapters = adapter_inputs(merger)
    if adapters is None:
        full = [m.checkpoint.label for m in merger.models if not isinstance(m.checkpoint, AdapterCheckpoint)]
        raise AdapterError(
            f"output='adapter' needs every input to be a LoRA adapter, but {full[0]} is a full model; "
            "use output='model'"
        )
    coefs = linear_coefficients(merger.method, merger.weights)
    if coefs is None:
        raise AdapterError(
            f"merge method {merger.method.name!r} (options {merger.method.options}) is not linear in the task vectors, "
            f"so its result is not a low-rank adapter; use output='model', or one of {sorted(linear_method_names())} "
            "for an adapter"
        )
    if getattr(merger, "dtype", None) is not None:
        log.warning("the output dtype applies to full models; the adapter keeps its factors' dtype")
    base = merger.base.checkpoint
    card = adapter_card_options(base, adapters, save_directory, card_template, card_data, model_name)
    # an existing output or a broken card template fails now, before the first tensor is read
    check_output_free(save_directory, overwrite)
    check_adapter_card_template(card_template, {**merger.describe(), "output": "adapter", "coefficients": coefs}, card)
    merger.compute_statistics(progress)
    scales = merger.scales()
    tensors, config = scaled_adapter(adapters, coefs, scales, base)
    record = {**merger.describe(), "output": "adapter", "coefficients": coefs}
    return write_adapter(save_directory, tensors, config, support_from=adapters[0].path, record=record,
                         overwrite=overwrite, keep_config=len(adapters) == 1, card=card,
                         inputs=merger.input_paths(card_template))
