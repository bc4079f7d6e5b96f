"""The general rule: find numbered block stacks in tensor names and number their blocks."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal

from hf_lines.core.layers.families import (
    BEFORE_STACK_PATTERN,
    CONTAINER_NAMES,
    DEFAULT_STACK_RANK,
    NON_BLOCK_PARENT_WORDS,
    NON_BLOCK_SUBTREES,
    PARALLEL_TOWER_TYPES,
    SIBLING_CONTAINERS,
    STACK_RANK_WORDS,
)

StackMode = Literal["chain", "separate"]

_CONTAINERS = sorted({*CONTAINER_NAMES, *SIBLING_CONTAINERS}, key=len, reverse=True)
_BLOCK_RE = re.compile(r"(?:^|\.)(" + "|".join(map(re.escape, _CONTAINERS)) + r")\.(\d+)(?=\.|$)")
_BEFORE_RE = re.compile(BEFORE_STACK_PATTERN)


@dataclass(frozen=True)
class Stack:
    """One numbered container, e.g. ``model.layers``: its blocks sit at ``offset + n`` of its tower."""

    prefix: str
    num_blocks: int
    tower: int
    offset: int


@dataclass(frozen=True)
class Tower:
    """Stacks scaled together with one L: a chain of stacks, or one parallel tower."""

    name: str
    num_blocks: int


@dataclass(frozen=True)
class Inferred:
    blocks: dict[str, tuple[int, int] | None]  # name -> (tower, index in tower)
    anchors: dict[str, tuple[int, int]]  # non-block name -> (tower, nearest block) for the depth policy
    stacks: tuple[Stack, ...]
    towers: tuple[Tower, ...]


def _match(name: str) -> tuple[str, int, str] | None:
    """(stack prefix, block number, rest of the name) of the leftmost numbered container."""
    m = _BLOCK_RE.search(name)
    if m is None:
        return None
    start = m.start(1)
    if _holds_no_blocks(name[:start]):
        return None
    container = SIBLING_CONTAINERS.get(m.group(1), m.group(1))
    return name[:start] + container, int(m.group(2)), name[m.end(2) + 1 :]


def _holds_no_blocks(head: str) -> bool:
    """Whether a container's place says it holds no blocks: see NON_BLOCK_PARENT_WORDS and NON_BLOCK_SUBTREES."""
    parts = [c for c in head.split(".") if c and not c.isdigit()]
    if any(c in NON_BLOCK_SUBTREES for c in parts):
        return True
    if not parts:
        return False
    parent = parts[-1]
    return parent in NON_BLOCK_PARENT_WORDS or parent.rsplit("_", 1)[-1] in NON_BLOCK_PARENT_WORDS


def find_block(name: str) -> tuple[str, int] | None:
    """(stack prefix, block number) of the leftmost numbered container in ``name``.

    Containers owned by a module named as a head, an embedding or a codec part
    (``NON_BLOCK_PARENT_WORDS``), or inside a codec or vocoder attached to the model
    (``NON_BLOCK_SUBTREES``), hold no blocks, nor does anything below them.
    Sibling lists (XLM's ``attentions.N`` and ``ffns.N``) share one prefix.
    """
    hit = _match(name)
    return None if hit is None else hit[:2]


def _natural_key(prefix: str) -> list:
    """Sort key that orders ``bridge.2.blocks`` before ``bridge.10.blocks``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", prefix)]


def _ranks(prefix: str) -> list[float]:
    """Ranks of a prefix's components: a component named whole in STACK_RANK_WORDS takes its
    rank (``cross_modal_text_layers``), any other the smallest rank of its ``_`` words."""
    ranks = []
    for component in prefix.split("."):
        if component in STACK_RANK_WORDS:
            ranks.append(STACK_RANK_WORDS[component])
            continue
        words = [STACK_RANK_WORDS[w] for w in component.split("_") if w in STACK_RANK_WORDS]
        if words:
            ranks.append(min(words))
    return ranks


def _chain_key(prefix: str) -> tuple:
    """Chain order: by rank; among equal ranks, a stack nested in a later-ranked module
    (Mask2Former's pixel decoder encoder, after the Swin encoder) comes later."""
    ranks = _ranks(prefix) or [DEFAULT_STACK_RANK]
    return min(ranks), max(ranks), _natural_key(prefix)


def _common_depth(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("."), b.split(".")):
        if x != y:
            break
        n += 1
    return n


def infer(names: Iterable[str], model_type: str | None = None, stacks: StackMode = "chain") -> Inferred:
    """Number every tensor's block; stacks chain in computation order unless the family runs them in parallel."""
    names = list(names)
    matched = {n: _match(n) for n in names}
    # A list whose members hold their tensors directly (``layers.0.weight``) is a list of
    # plain layers, an MLP head or a conv stem, not a stack of blocks.
    deep = {hit[0] for hit in matched.values() if hit is not None and "." in hit[2]}
    found: dict[str, tuple[str, int] | None] = {
        n: (hit[:2] if hit is not None and hit[0] in deep else None) for n, hit in matched.items()
    }
    sizes: dict[str, int] = {}
    for hit in found.values():
        if hit is not None:
            sizes[hit[0]] = max(sizes.get(hit[0], 0), hit[1] + 1)

    ordered = sorted(sizes, key=_chain_key)
    parallel = stacks == "separate" or (model_type in PARALLEL_TOWER_TYPES)
    stack_list: list[Stack] = []
    towers: list[Tower] = []
    if parallel:
        for i, p in enumerate(ordered):
            stack_list.append(Stack(p, sizes[p], i, 0))
            towers.append(Tower(p, sizes[p]))
    elif ordered:
        offset = 0
        for p in ordered:
            stack_list.append(Stack(p, sizes[p], 0, offset))
            offset += sizes[p]
        towers.append(Tower("+".join(ordered), offset))
    by_prefix = {s.prefix: s for s in stack_list}

    blocks: dict[str, tuple[int, int] | None] = {}
    anchors: dict[str, tuple[int, int]] = {}
    for n in names:
        hit = found[n]
        if hit is not None:
            s = by_prefix[hit[0]]
            blocks[n] = (s.tower, s.offset + hit[1])
            continue
        blocks[n] = None
        if stack_list:
            anchors[n] = _anchor(n, stack_list)
    return Inferred(blocks, anchors, tuple(stack_list), tuple(towers))


def _anchor(name: str, stack_list: list[Stack]) -> tuple[int, int]:
    """Nearest block of a non-block tensor: the first block of the stack it precedes or the last of the one it follows."""
    depths = [_common_depth(name, s.prefix) for s in stack_list]
    best = max(depths)
    ties = [s for s, d in zip(stack_list, depths) if d == best]
    rest = ".".join(name.split(".")[best:])
    if _BEFORE_RE.search(rest):
        s = ties[0]
        return s.tower, s.offset
    s = ties[-1]
    return s.tower, s.offset + s.num_blocks - 1
