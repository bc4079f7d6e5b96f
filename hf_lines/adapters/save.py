"""Writing a LiNeS-scaled PEFT adapter folder; ``scale_adapter`` makes one straight from paths."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from hf_lines.errors import AdapterError, OptionError, writing
from hf_lines.options import check_output_free, finite_number
from hf_lines.io.support_files import copy_support_files
from hf_lines.io.staging import input_paths, staged_output
from hf_lines.io import resolve
from hf_lines.adapters.config import ADAPTER_CONFIG
from hf_lines.adapters.reader import LoraAdapter
from hf_lines.io.checkpoint import TensorSource
from hf_lines.adapters.scaled import linear_coefficients, scaled_adapter

log = logging.getLogger(__name__)

OUTPUT_FORMATS: tuple[str, ...] = ("auto", "model", "adapter")
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"


def write_adapter(
    save_directory: str | Path,
    tensors: dict[str, torch.Tensor],
    config: Any,
    *,
    support_from: Path | None = None,
    record: dict[str, Any] | None = None,
    overwrite: bool = False,
    keep_config: bool = False,
    card: dict[str, Any] | None = None,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """An adapter folder (adapter_config.json + adapter_model.safetensors) that ``PeftModel.from_pretrained`` loads.

    With ``keep_config`` the adapter_config.json of ``support_from`` is copied as it is
    (a single scaled adapter keeps its config byte for byte); otherwise ``config`` is saved.
    ``card`` holds the keyword arguments of ``hf_lines.publish.card.write_card`` for its README.md
    (``record`` must then be given). ``inputs`` are the folders read: the output may not overlap them.
    """
    from safetensors.torch import save_file

    with staged_output(save_directory, overwrite=overwrite, inputs=inputs) as tmp:
        if support_from is not None:
            with writing(tmp):
                copy_support_files(support_from, tmp)  # tokenizer files an adapter may carry, and its config
        if not (keep_config and support_from is not None):
            with writing(tmp / ADAPTER_CONFIG):
                config.save_pretrained(str(tmp))
        with writing(tmp / ADAPTER_WEIGHTS_NAME):
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / ADAPTER_WEIGHTS_NAME),
                      metadata={"format": "pt", "hf_lines": "LiNeS"})
        if record is not None:
            with writing(tmp / "hf_lines.json"):
                (tmp / "hf_lines.json").write_text(json.dumps(record, indent=2) + "\n")
        if card is not None and record is not None:
            from hf_lines.publish.card import write_card

            write_card(tmp, record, relation="adapter", **card)
    return Path(save_directory).expanduser().resolve()


# ------------------------------------------------------------------ output format
def adapter_output_blocker(lora_configs: Sequence[Any | None], method: Any, weights: Sequence[float]) -> str | None:
    """Why these inputs cannot give an adapter output (None when they can).

    Args:
        lora_configs: each input's LoraConfig, None for a full model.
        method: the merge method.
        weights: the inputs' weights.
    """
    for cfg in lora_configs:
        if cfg is None:
            return "an input is a full model"
        if getattr(cfg, "use_dora", False):
            return "DoRA adapters are not linear in B"
    if linear_coefficients(method, weights) is None:
        return f"merge method {method.name!r} is not linear in the adapters' updates"
    return None


def choose_output_format(requested: str, blocker: str | None) -> str:
    """'auto' becomes 'adapter' when nothing blocks it, else 'model'."""
    if requested not in OUTPUT_FORMATS:
        raise OptionError(f"unknown output format {requested!r} (output, --output-format); use one of {list(OUTPUT_FORMATS)}")
    if requested != "auto":
        return requested
    if blocker is not None:
        log.debug("%s: writing a full model", blocker)
        return "model"
    return "adapter"


def plan_output_format(
    models: Sequence[str | Path], requested: str, *, method: str = "task_arithmetic",
    weights: Sequence[float] | None = None, token: str | bool | None = None,
) -> str:
    """The output format for these inputs, reading only their small files (adapter_config.json)."""
    if requested != "auto":
        return choose_output_format(requested, None)
    from hf_lines.core.methods import get_method
    from hf_lines.adapters.config import is_adapter_folder, read_lora_config

    configs = []
    for spec in models:
        path = resolve(spec, token=token, weights=False)
        configs.append(read_lora_config(path, str(spec)) if is_adapter_folder(path) else None)
    weights = list(weights) if weights is not None else [1.0] * len(configs)
    return choose_output_format(requested, adapter_output_blocker(configs, get_method(method), weights))


def check_adapter_card_template(template: str | Path | None, record: dict[str, Any], card: dict[str, Any]) -> None:
    """``check_card_template`` with the adapter's own card as the context (alpha = 'auto' as a stand-in)."""
    from hf_lines.publish.card import check_card_template, preview_record, write_card

    check_card_template(template, lambda folder: write_card(folder, preview_record(record), relation="adapter",
                                                            **{**card, "plot": False}))


def adapter_card_options(base: TensorSource, adapters: Sequence[LoraAdapter], save_directory: str | Path,
                  template: str | Path | None, card_data: dict[str, Any] | None, model_name: str | None) -> dict[str, Any]:
    return {
        "config": base.config,
        "parent_folders": [base.path, *(a.path for a in adapters)],
        "template": template,
        "card_data": card_data,
        "model_name": model_name or Path(save_directory).name,
    }


def _ref_record(spec: str | Path, folder: Path) -> dict[str, Any]:
    """Where an input came from, in the shape of ``LinesMerger.describe()``."""
    from hf_lines.io import ModelRef

    ref = ModelRef.parse(spec)
    if ref.is_hub:
        return {"repo_id": ref.repo_id, "revision": ref.revision, "path": None}
    return {"repo_id": None, "revision": None, "path": str(Path(folder).expanduser().resolve())}


def linear_method_names() -> list[str]:
    from hf_lines.adapters.scaled import LINEAR_METHODS

    return list(LINEAR_METHODS)


# ------------------------------------------------------------------ straight from paths
def scale_adapter(
    base: str | Path,
    adapters: str | Path | Sequence[str | Path],
    save_directory: str | Path,
    *,
    alpha: float,
    beta: float,
    weights: Sequence[float] | None = None,
    method: str = "task_arithmetic",
    policy: str = "paper",
    stacks: str = "chain",
    token: str | bool | None = None,
    overwrite: bool = False,
    card_template: str | Path | None = None,
    card_data: dict[str, Any] | None = None,
    allow_large_lambda: bool = False,
) -> Path:
    """LiNeS on one LoRA adapter (or the task-arithmetic merge of several), written as a PEFT adapter.

    Reads the base's config and tensor names only (a Hub base is read from its safetensors
    headers, never downloaded), plus the base tensors of whole saved modules. Each
    module's B is multiplied by lambda of its layer; several adapters are concatenated in
    rank. ``PeftModel.from_pretrained(base_model, save_directory)`` loads the result. The
    folder gets a model card (``card_template``, ``card_data``: see ``hf_lines.publish.card``).
    ``allow_large_lambda`` lifts the bound on |lambda| (``hf_lines.options.MAX_LAMBDA``).
    """
    from hf_lines.version import __version__
    from hf_lines.core.layers import LayerMap
    from hf_lines.core.lines import LinesConfig
    from hf_lines.core.methods import get_method
    from hf_lines.adapters.base_headers import open_base_headers

    LinesConfig(alpha, beta, policy, stacks, allow_large_lambda)  # type: ignore[arg-type]  # same checks as LinesMerger

    specs = [adapters] if isinstance(adapters, (str, Path)) else list(adapters)
    weights = list(weights) if weights is not None else [1.0] * len(specs)
    if len(weights) != len(specs):
        raise OptionError(f"{len(weights)} weights given for {len(specs)} adapters")
    weights = [finite_number(w, f"weights[{i}]") for i, w in enumerate(weights)]
    check_output_free(save_directory, overwrite)
    merge = get_method(method)
    coefs = linear_coefficients(merge, weights)
    if coefs is None:
        raise AdapterError(f"merge method {method!r} is not linear; scale_adapter supports {linear_method_names()}")
    base_reader: TensorSource = open_base_headers(base, token=token)
    opened = [open_adapter(s, base_reader, token=token) for s in specs]
    layer_map = LayerMap.from_names(base_reader.names(), base_reader.config, stacks)  # type: ignore[arg-type]
    scales = layer_map.scales(alpha, beta, policy)  # type: ignore[arg-type]
    record = {
        "hf_lines_version": __version__,
        "base_model": _ref_record(base, base_reader.path),
        "models": [{**_ref_record(s, a.path), "weight": w} for s, a, w in zip(specs, opened, weights)],
        "method": merge.describe(),
        "lines": {"alpha": alpha, "beta": beta, "policy": policy, "stacks": stacks,
                  **({"allow_large_lambda": True} if allow_large_lambda else {}),
                  "towers": [{"name": t.name, "num_blocks": t.num_blocks} for t in layer_map.towers]},
        "output": "adapter",
        "coefficients": coefs,
    }
    card = adapter_card_options(base_reader, opened, save_directory, card_template, card_data, None)
    check_adapter_card_template(card_template, record, card)  # before the adapters' tensors are read
    tensors, config = scaled_adapter(opened, coefs, scales, base_reader)
    inputs = input_paths(base_reader.path, *(a.path for a in opened), card_template)
    return write_adapter(save_directory, tensors, config, support_from=opened[0].path, record=record,
                         overwrite=overwrite, keep_config=len(opened) == 1, card=card, inputs=inputs)


def open_adapter(spec: str | Path, base: TensorSource, *, token: str | bool | None = None) -> LoraAdapter:
    """A LoRA adapter from a local folder or a Hub ``repo@revision``, laid onto ``base``."""
    path = resolve(spec, token=token)
    if not (path / ADAPTER_CONFIG).is_file():
        raise AdapterError(f"{spec} has no {ADAPTER_CONFIG}; it is not a PEFT adapter")
    return LoraAdapter(path, base, label=str(spec))
