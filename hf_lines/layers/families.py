"""Architecture knowledge as data: how numbered block stacks are named and ordered.

The general rule in ``infer.py`` reads these tables; adding a family means adding a
row here, not an ``if`` branch there.
"""
from __future__ import annotations

# Names of containers whose numbered children are transformer blocks. A stack is found
# by ``<container>.<N>`` as whole dotted components, leftmost first, so T5's
# ``encoder.block.10.layer.1`` is block 10 and ``layers.3.mlp.experts.7`` is block 3.
CONTAINER_NAMES: tuple[str, ...] = (
    "layers",
    "layer",
    "h",
    "block",
    "blocks",
    "resblocks",
    "decoder_layers",
    "encoder_layers",
    "transformer_blocks",
    "stages",
)

# Model types whose stacks run side by side (two towers that never feed each other),
# so each stack is scaled with its own L.
PARALLEL_TOWER_TYPES: frozenset[str] = frozenset(
    {
        "align",
        "altclip",
        "chinese_clip",
        "clap",
        "clip",
        "clipseg",
        "groupvit",
        "metaclip_2",
        "owlv2",
        "owlvit",
        "siglip",
        "siglip2",
        "x_clip",
    }
)

# Order of chained stacks: a stack's rank is the smallest rank among the words of its
# prefix; stacks that feed later ones (vision/audio towers, encoders) come first.
STACK_RANK_WORDS: dict[str, float] = {
    "vision": 0,
    "visual": 0,
    "image": 0,
    "audio": 0,
    "speech": 0,
    "vision_tower": 0,
    "vision_model": 0,
    "audio_tower": 0,
    "encoder": 1,
    "qformer": 1.5,
    "projector": 1.5,
    "connector": 1.5,
    "decoder": 2,
    "language_model": 2,
    "text_model": 2,
    "lm": 2,
}
DEFAULT_STACK_RANK: float = 1.5

# Non-block tensors whose name (after the module they share with a stack) matches one
# of these run before the stack; every other non-block tensor runs after it.
BEFORE_STACK_PATTERN: str = (
    r"(embed|wte|wpe|patch|position|pos_|token_type|shared|cls_token|class_embedding"
    r"|conv|stem|pre_layrnorm|pre_layernorm|mask_token|input|feature_projection)"
)

# Config keys that state a number of blocks (checked against the stacks found).
LAYER_COUNT_KEYS: tuple[str, ...] = (
    "num_hidden_layers",
    "n_layer",
    "n_layers",
    "num_layers",
    "encoder_layers",
    "decoder_layers",
    "num_decoder_layers",
)
