"""LiNeS scaling schedules as pure functions of depth.

lambda(i) = alpha + beta * i / (L - 1) for block i (0-based) of L blocks: shallow
blocks stay near the pre-trained weights, deep blocks keep the task update.
"""
from __future__ import annotations


def block_scale(index: int, num_blocks: int, alpha: float, beta: float) -> float:
    """Scale of block ``index`` out of ``num_blocks``; a single block gets alpha + beta."""
    if num_blocks < 1:
        raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
    if not 0 <= index < num_blocks:
        raise ValueError(f"block index {index} is outside 0..{num_blocks - 1}")
    if num_blocks == 1:
        # The paper's formula is undefined for L = 1; the deepest block keeps alpha + beta.
        return float(alpha + beta)
    return float(alpha + beta * index / (num_blocks - 1))


def block_scales(num_blocks: int, alpha: float, beta: float) -> list[float]:
    """All block scales, shallow to deep."""
    return [block_scale(i, num_blocks, alpha, beta) for i in range(num_blocks)]


def single_task(gamma: float) -> tuple[float, float]:
    """The paper's single-task form: alpha = gamma, beta = 1 - gamma (the last block keeps tau)."""
    return float(gamma), float(1.0 - gamma)
