"""LayerMap: every tensor of a checkpoint -> its block index (or None) and its LiNeS scale."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from hf_lines.errors import OptionError
from hf_lines.core.schedule import block_scale
from hf_lines.core.layers.families import LAYER_COUNT_KEYS
from hf_lines.core.layers.infer import Inferred, Stack, StackMode, Tower, infer

Policy = Literal["paper", "depth"]
POLICIES: tuple[str, ...] = ("paper", "depth")


def config_layer_counts(config: Mapping[str, Any], path: str = "") -> dict[str, int]:
    """Layer counts the config states, by dotted key, sub-configs included."""
    out: dict[str, int] = {}
    for key, value in config.items():
        where = f"{path}{key}"
        if isinstance(value, Mapping):
            out.update(config_layer_counts(value, where + "."))
        elif key in LAYER_COUNT_KEYS and isinstance(value, int) and not isinstance(value, bool):
            out[where] = value
    return out


@dataclass(frozen=True)
class LayerMap:
    """Block index of every tensor, the stacks found and the towers they form.

    ``params`` maps each tensor name to its 0-based block index within its tower, or
    None outside every stack. ``num_blocks`` is L of the deepest tower (the only one for
    most models); parallel towers such as CLIP's text and vision encoders have their own L.
    """

    params: dict[str, int | None]
    num_blocks: int
    stacks: tuple[Stack, ...]
    towers: tuple[Tower, ...]
    model_type: str | None = None
    _tower_of: Mapping[str, int] | None = None
    _anchors: Mapping[str, tuple[int, int]] | None = None

    # ----------------------------------------------------------------- builders
    @classmethod
    def from_names(
        cls,
        names: Iterable[str],
        config: Mapping[str, Any] | None = None,
        stacks: StackMode = "chain",
    ) -> "LayerMap":
        """Build from tensor names and a config dict; no weights are needed."""
        model_type = (config or {}).get("model_type")
        inferred: Inferred = infer(names, model_type, stacks)
        params = {n: (b[1] if b is not None else None) for n, b in inferred.blocks.items()}
        tower_of = {n: b[0] for n, b in inferred.blocks.items() if b is not None}
        tower_of.update({n: a[0] for n, a in inferred.anchors.items()})
        num_blocks = max((t.num_blocks for t in inferred.towers), default=0)
        return cls(params, num_blocks, inferred.stacks, inferred.towers, model_type, tower_of, inferred.anchors)

    @classmethod
    def from_pretrained(
        cls, path_or_repo_id: str | Path, *, stacks: StackMode = "chain", token: str | bool | None = None
    ) -> "LayerMap":
        """Read only config.json and tensor names (safetensors headers or index), never weights."""
        from hf_lines.io.checkpoint import read_names_and_config

        names, config = read_names_and_config(str(path_or_repo_id), token=token)
        return cls.from_names(names, config, stacks)

    @classmethod
    def from_model(cls, module: Any, *, stacks: StackMode = "chain") -> "LayerMap":
        """Build from an ``nn.Module`` (meta-device modules work: only names are read)."""
        config = getattr(module, "config", None)
        config_dict = config.to_dict() if hasattr(config, "to_dict") else {}
        return cls.from_names(module.state_dict().keys(), config_dict, stacks)

    # ------------------------------------------------------------------ scales
    def tower_blocks(self, name: str) -> int:
        """L of the tower that ``name`` belongs to (0 when the model has no stack)."""
        t = (self._tower_of or {}).get(name)
        return self.towers[t].num_blocks if t is not None else 0

    def scale(self, name: str, alpha: float, beta: float, policy: Policy = "paper") -> float:
        """LiNeS scale of one tensor; non-block tensors get alpha ("paper") or their nearest block's ("depth")."""
        if policy not in POLICIES:
            raise OptionError(f"unknown non-block policy {policy!r}; use one of {POLICIES}")
        if name not in self.params:
            raise KeyError(f"tensor {name!r} is not in this layer map")
        index = self.params[name]
        if index is None:
            anchor = (self._anchors or {}).get(name)
            if policy == "paper" or anchor is None:
                return float(alpha)
            index = anchor[1]
        return block_scale(index, self.tower_blocks(name), alpha, beta)

    def scales(self, alpha: float, beta: float, policy: Policy = "paper") -> dict[str, float]:
        return {n: self.scale(n, alpha, beta, policy) for n in self.params}

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "num_blocks": self.num_blocks,
            "towers": [{"name": t.name, "num_blocks": t.num_blocks} for t in self.towers],
            "stacks": [
                {"prefix": s.prefix, "num_blocks": s.num_blocks, "tower": s.tower, "offset": s.offset}
                for s in self.stacks
            ],
            "params": dict(self.params),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def block_names(self) -> dict[tuple[int, int], list[str]]:
        """(tower, block) -> tensor names, for per-block reports."""
        out: dict[tuple[int, int], list[str]] = {}
        for n, i in self.params.items():
            if i is not None:
                out.setdefault(((self._tower_of or {})[n], i), []).append(n)
        return out
