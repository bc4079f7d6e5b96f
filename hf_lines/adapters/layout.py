"""Where every tensor of a PEFT LoRA adapter lands in its base model.

peft saves ``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight`` (and
``lora_B.bias`` with ``lora_bias``), ``<module>.lora_embedding_A`` / ``_B`` for embeddings,
``<module>.lora_magnitude_vector`` for DoRA, ``<module>.base_layer.weight`` when it also
saved a targeted embedding's own weight, and ``<module>.weight`` (no ``modules_to_save``
infix) for a module copied whole. Each LoRA module updates the base tensor
``<module>.weight``; each whole copy replaces the base tensor of the same name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from hf_lines.errors import AdapterError
from hf_lines.adapters.delta import ModuleKind, lora_scaling

PREFIX = "base_model.model."

# Key suffix -> role of the tensor in its LoRA module (longest suffixes first).
LORA_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".lora_magnitude_vector.weight", "magnitude"),
    (".lora_magnitude_vector", "magnitude"),
    (".lora_embedding_A", "embedding_a"),
    (".lora_embedding_B", "embedding_b"),
    (".lora_A.weight", "a"),
    (".lora_B.weight", "b"),
    (".lora_B.bias", "b_bias"),
)
BASE_LAYER = ".base_layer."


@dataclass(frozen=True)
class LoraModule:
    """One adapted module: its tensors' keys in the adapter file and its scale."""

    module: str
    weight: str  # the base tensor it updates
    kind: ModuleKind | None  # None: a square 2-D weight, Linear or Conv1D to be decided from the model
    a_key: str
    b_key: str
    rank: int
    alpha: float
    scaling: float
    bias: str | None = None  # base bias tensor updated by lora_B.bias
    b_bias_key: str | None = None
    magnitude_key: str | None = None

    @property
    def is_dora(self) -> bool:
        return self.magnitude_key is not None


@dataclass(frozen=True)
class AdapterLayout:
    """The adapter's LoRA modules by the base weight they update, and its whole-tensor copies by base name."""

    modules: dict[str, LoraModule]
    full: dict[str, str]  # base tensor -> adapter key of a whole copy (modules_to_save, base_layer)
    biases: dict[str, LoraModule]  # base bias tensor -> module whose lora_B.bias updates it


def _strip(key: str) -> str:
    return key.removeprefix(PREFIX)


def parse_layout(
    shapes: dict[str, tuple[int, ...]],
    config: Any,
    locate: Callable[[str], str | None],
    base_shape: Callable[[str], tuple[int, ...]],
    label: str,
) -> AdapterLayout:
    """Map adapter tensors (key -> shape) onto base tensors, checking every shape against the base.

    Args:
        shapes: adapter key -> shape.
        config: the adapter's ``peft.LoraConfig``.
        locate: a tensor name as peft uses it (the live model's) -> the base checkpoint's name, or None.
        base_shape: base checkpoint tensor name -> shape.
        label: the adapter's name for error messages.
    """
    from peft.utils.other import get_pattern_key

    parts: dict[str, dict[str, str]] = {}
    live_full: dict[str, str] = {}
    for key in shapes:
        name = _strip(key)
        for suffix, role in LORA_SUFFIXES:
            if name.endswith(suffix):
                parts.setdefault(name[: -len(suffix)], {})[role] = key
                break
        else:
            if BASE_LAYER in name:
                live_full[name.replace(BASE_LAYER, ".", 1)] = key
            elif any(c.startswith("lora_") for c in name.split(".")):
                raise AdapterError(
                    f"{label}: tensor {key!r} is not plain LoRA (lora_A/lora_B/lora_embedding_A/B, DoRA magnitude); "
                    "this LoRA variant cannot be LiNeS-scaled"
                )
            else:
                live_full[name] = key

    def need(live: str, what: str) -> str:
        name = locate(live)
        if name is None:
            raise AdapterError(
                f"{label}: {what} {live!r} is not a tensor of the base model; was the adapter trained on this base? "
                "(a module tied to another, such as lm_head tied to the input embeddings, or a tensor that "
                "transformers fuses on load, is not supported)"
            )
        return name

    full: dict[str, str] = {}
    for live, key in live_full.items():
        name = need(live, "saved module weight")
        full[name] = key
        if tuple(shapes[key]) != tuple(base_shape(name)):
            raise AdapterError(
                f"{label}: saved weight {key!r} has shape {list(shapes[key])} but the base's {name!r} has "
                f"{list(base_shape(name))}; the adapter was trained with a resized vocabulary: resize the base "
                "the same way (resize_token_embeddings), save it and use that as the base"
            )

    modules: dict[str, LoraModule] = {}
    biases: dict[str, LoraModule] = {}
    rank_keys, alpha_keys = list(config.rank_pattern or {}), list(config.alpha_pattern or {})
    for module, roles in sorted(parts.items()):
        embedding = "embedding_a" in roles or "embedding_b" in roles
        a_key = roles.get("embedding_a" if embedding else "a")
        b_key = roles.get("embedding_b" if embedding else "b")
        if a_key is None or b_key is None:
            raise AdapterError(f"{label}: module {module!r} has only one of its LoRA A/B tensors; re-save the adapter")
        a, b = tuple(shapes[a_key]), tuple(shapes[b_key])
        rank = a[0]
        weight = need(f"{module}.weight", "adapted module weight")
        w = tuple(base_shape(weight))
        kind = _kind(embedding, a, b, w)
        if kind is False or b[1] != rank:
            raise AdapterError(
                f"{label}: LoRA of {module!r} (A {list(a)}, B {list(b)}) does not fit the base weight {list(w)} "
                "(grouped convolutions are not supported); was the adapter trained on this base?"
            )
        expected_rank = (config.rank_pattern or {}).get(get_pattern_key(rank_keys, module), config.r)
        if expected_rank != rank:
            raise AdapterError(
                f"{label}: module {module!r} has rank {rank} but adapter_config.json gives it r={expected_rank}; "
                "the config and weights do not belong together"
            )
        alpha = (config.alpha_pattern or {}).get(get_pattern_key(alpha_keys, module), config.lora_alpha)
        bias = b_bias_key = None
        if "b_bias" in roles:
            bias, b_bias_key = need(f"{module}.bias", "bias updated by lora_bias"), roles["b_bias"]
        m = LoraModule(
            module, weight, kind, a_key, b_key, rank, float(alpha), lora_scaling(alpha, rank, bool(config.use_rslora)),
            bias, b_bias_key, roles.get("magnitude"),
        )
        modules[weight] = m
        if bias:
            biases[bias] = m
    if not modules and not full:
        raise AdapterError(f"{label}: the adapter holds no LoRA tensors")
    clash = sorted(set(full) & set(biases))
    if clash:
        raise AdapterError(f"{label}: {clash[0]!r} is both saved whole and updated by lora_bias")
    return AdapterLayout(modules, full, biases)


def _kind(embedding: bool, a: tuple[int, ...], b: tuple[int, ...], w: tuple[int, ...]) -> ModuleKind | None | bool:
    """The module kind implied by the shapes; None when a square 2-D weight leaves Linear/Conv1D open; False on mismatch."""
    if embedding:
        return "embedding" if w == (a[1], b[0]) else False
    if len(a) > 2:
        ok = len(w) == len(a) and w == (b[0], *a[1:]) and all(d == 1 for d in b[2:])
        return "conv" if ok else False
    linear, conv1d = w == (b[0], a[1]), w == (a[1], b[0])
    if linear and conv1d:
        return None
    return "linear" if linear else "conv1d" if conv1d else False


def module_paths(names: Iterable[str]) -> set[str]:
    """Paths of the modules that own the given parameter names."""
    return {n.rsplit(".", 1)[0] for n in names if "." in n}
