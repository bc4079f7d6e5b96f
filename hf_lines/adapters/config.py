"""Reading a PEFT adapter folder's ``adapter_config.json`` with peft's own config classes.

Only plain LoRA (and the LoRA variants whose merged weight is ``W + scale * B @ A``, or
DoRA, whose merged weight hf-lines computes as peft does) can be LiNeS-scaled. Everything
else is refused here, before any tensor is read, with a message that says what to do.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from hf_lines.errors import AdapterError
from hf_lines.io.confine import confined_file

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")

_MERGE_FIRST = (
    "merge it into its base with peft (`PeftModel.from_pretrained(base, adapter).merge_and_unload()"
    ".save_pretrained(folder)`) and give hf-lines that full model instead"
)

# LoraConfig fields that turn on a variant whose merged weight is not W + scale * B @ A,
# or whose tensors do not map one to one onto base weights: field -> what it is.
UNSUPPORTED_LORA_FIELDS: dict[str, str] = {
    "alora_invocation_tokens": "Activated LoRA (aLoRA) applies only after its invocation tokens and cannot be merged",
    "arrow_config": "Arrow routes between several LoRA experts per token and cannot be merged",
    "use_bdlora": "BD-LoRA stores block-diagonal factors",
    "kasa_config": "KaSA inserts a learned diagonal between A and B",
    "use_qalora": "QALoRA pools inputs of a quantized base",
    "layer_replication": "layer replication duplicates base layers, so adapter layers do not map onto base tensors",
    "target_parameters": "LoRA on raw nn.Parameters (target_parameters) is stored per parameter, not per module",
    "trainable_token_indices": "trainable tokens store sparse embedding rows",
}

# init_lora_weights values that train against a modified base (a residual or quantized copy).
_MODIFIED_BASE_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")


def is_adapter_folder(path: str | Path) -> bool:
    """True for a folder that holds a PEFT adapter (``adapter_config.json``) and no full model weights."""
    path = Path(path)
    if not (path / ADAPTER_CONFIG).is_file():
        return False
    full = [p for p in path.glob("*.safetensors") if not p.name.startswith("adapter_model")]
    full += list(path.glob("pytorch_model*.bin")) + list(path.glob("model.safetensors.index.json"))
    if full:
        logging.getLogger(__name__).info(
            "%s holds both adapter_config.json and full model weights; reading it as a full model", path
        )
        return False
    return True


def read_lora_config(path: str | Path, label: str | None = None) -> Any:
    """The adapter's ``peft.LoraConfig``, after refusing what LiNeS cannot scale exactly."""
    from peft import PeftConfig, PeftType

    label = label or str(path)
    if Path(path).is_dir():  # peft opens the file itself: check it first (confined, regular, not a FIFO)
        confined_file(path, ADAPTER_CONFIG, what=f"{label}: {ADAPTER_CONFIG}", error=AdapterError)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = PeftConfig.from_pretrained(str(path))
    except Exception as e:  # peft raises ValueError/TypeError/KeyError for bad or unknown configs
        raise AdapterError(f"{label}: cannot read {ADAPTER_CONFIG} with peft ({e}); is it a PEFT adapter folder?") from e
    peft_type = getattr(config, "peft_type", None)
    if peft_type != PeftType.LORA:
        kind = getattr(peft_type, "value", peft_type)
        raise AdapterError(
            f"{label} is a {kind} adapter; hf-lines scales LoRA adapters (peft_type LORA, DoRA included) only. "
            f"To use it, {_MERGE_FIRST}"
        )
    for field, what in UNSUPPORTED_LORA_FIELDS.items():
        if getattr(config, field, None):
            raise AdapterError(f"{label}: {what}, so LiNeS cannot scale it exactly ({field} is set). To use it, {_MERGE_FIRST}")
    init = str(getattr(config, "init_lora_weights", "")).lower()
    if init.startswith(_MODIFIED_BASE_INITS):
        warnings.warn(
            f"{label} was initialised with init_lora_weights={config.init_lora_weights!r}, which trains against a "
            "modified base (residual or quantized); pass that modified model as the base, or convert the adapter "
            "with peft's path_initial_model_for_weight_conversion first",
            stacklevel=2,
        )
    return config


def adapter_weights_file(path: Path, label: str) -> Path:
    """The adapter's weights file, a regular file inside its folder (see ``sources.confine``)."""
    for name in ADAPTER_WEIGHTS:
        found = confined_file(path, name, what=f"{label}: {name}", error=AdapterError)
        if found is not None:
            return found
    raise AdapterError(f"{label} has {ADAPTER_CONFIG} but no {' or '.join(ADAPTER_WEIGHTS)}; re-save the adapter")
