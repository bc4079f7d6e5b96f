"""The general rule: find numbered block stacks in tensor names and number their blocks."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal

from .families import (
    BEFORE_STACK_PATTERN,
    CONTAINER_NAMES,
    DEFAULT_STACK_RANK,
    PARALLEL_TOWER_TYPES,
    STACK_RANK_WORDS,
)

StackMode = Literal["chain", "separate"]

_BLOCK_RE = re.compile(r"(?:^|\.)(" + "|".join(map(re.escape, CONTAINER_NAMES)) + r")\.(\d+)(?=\.|$)")
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


def find_block(name: str) -> tuple[str, int] | None:
    """(stack prefix, block number) of the leftmost numbered container in ``name``."""
    m = _BLOCK_RE.search(name)
    if m is None:
        return None
    start = m.start(1)
    return name[:start] + m.group(1), int(m.group(2))


def stack_rank(prefix: str) -> float:
    words = set(re.split(r"[._]", prefix)) | set(prefix.split("."))
    ranks = [STACK_RANK_WORDS[w] for w in words if w in STACK_RANK_WORDS]
    return min(ranks) if ranks else DEFAULT_STACK_RANK


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
    found: dict[str, tuple[str, int] | None] = {n: find_block(n) for n in names}
    sizes: dict[str, int] = {}
    for hit in found.values():
        if hit is not None:
            sizes[hit[0]] = max(sizes.get(hit[0], 0), hit[1] + 1)

    ordered = sorted(sizes, key=lambda p: (stack_rank(p), p))
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
