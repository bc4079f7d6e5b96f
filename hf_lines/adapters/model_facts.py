"""Facts about the base model that its checkpoint names and shapes do not tell, from a meta-device build.

peft names adapter tensors after the *live* modules of the transformers model, and decides
Linear versus ``Conv1D`` by the module's class. Since transformers 5 some architectures
rename checkpoint tensors on load (ViT's ``encoder.layer.N.attention.attention.query`` is
the live ``layers.N.attention.q_proj``), so an adapter's names can differ from the base
checkpoint's. Both facts come from building the model on the meta device (no memory, no
weights) and asking transformers for its own renaming rules.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Sequence

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFacts:
    """``conv1d``: live names of transformers ``Conv1D`` modules; ``checkpoint_name``: live -> checkpoint tensor name."""

    conv1d: frozenset[str]
    checkpoint_name: dict[str, str]

    @property
    def live_names(self) -> list[str]:
        return list(self.checkpoint_name)


@functools.lru_cache(maxsize=8)
def model_facts(base_path: str, checkpoint_names: Sequence[str]) -> ModelFacts | None:
    """Facts of the model whose config.json is in ``base_path``; None when it cannot be built (e.g. custom code).

    Args:
        base_path: folder with the base's config.json.
        checkpoint_names: the base checkpoint's tensor names (a tuple, for the cache).
    """
    try:
        import transformers
        from transformers.pytorch_utils import Conv1D

        from hf_lines.io.confine import confined_file

        # transformers opens config.json itself: a FIFO or a link outside raises here first, and ends as None below
        if confined_file(base_path, "config.json") is None:
            return None
        config = transformers.AutoConfig.from_pretrained(base_path)
        arch = (getattr(config, "architectures", None) or [None])[0]
        cls = getattr(transformers, arch, None) if arch else None
        if cls is None:
            return None
        with torch.device("meta"):
            model = cls._from_config(config)
        conv1d = frozenset(n for n, m in model.named_modules() if isinstance(m, Conv1D))
        return ModelFacts(conv1d, _live_to_checkpoint(model, checkpoint_names))
    except Exception as e:  # custom code, unknown architecture, missing config: callers fall back
        log.debug("meta-device build of %s failed: %s", base_path, e)
        return None


def _live_to_checkpoint(model: torch.nn.Module, checkpoint_names: Sequence[str]) -> dict[str, str]:
    """Live name -> checkpoint name for every tensor that transformers only renames (not fuses or splits)."""
    live = model.state_dict()
    out = {n: n for n in checkpoint_names if n in live}
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # transformers 4: checkpoint names are module names
        return out
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    prefix = getattr(model, "base_model_prefix", None)
    for name in checkpoint_names:
        if name in out:
            continue
        renamed, converted = rename_source_key(name, renamings, converters, prefix, live)
        if converted is None and renamed in live:
            out[renamed] = name
    return out
