"""DARE (Yu et al. 2023, "Language Models are Super Mario"): drop delta entries at random, rescale the rest.

Each task vector keeps an entry with probability ``1 - drop_rate`` and is divided by
``1 - drop_rate`` so its expectation is unchanged. The random stream of every
``DARE_CHUNK`` elements of a tensor comes from its own generator, seeded from
``(seed, task index, tensor name, chunk index)``: the result depends on nothing else,
not on the order tensors are processed in, the number of worker threads, the block size
used for arithmetic, or whether the tensor is read once or twice (TIES' statistics pass).

The methods take it as the option ``dare: {drop_rate: 0.9, seed: 0}``; ``dare_linear``
(task arithmetic) and ``dare_ties`` turn it on by default.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch

from hf_lines.errors import OptionError

# Elements drawn from one generator. Fixed forever: changing it changes every DARE result.
DARE_CHUNK = 1 << 16


@dataclass(frozen=True)
class DareOptions:
    """DARE settings.

    Args:
        drop_rate: probability of dropping each task-vector entry, in [0, 1).
        seed: base seed; the same seed gives the same masks on any machine and thread count.
    """

    drop_rate: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.drop_rate, bool) or not isinstance(self.drop_rate, (int, float)):
            raise OptionError(f"dare.drop_rate must be a number in [0, 1), got {self.drop_rate!r}")
        if not 0.0 <= float(self.drop_rate) < 1.0:
            raise OptionError(f"dare.drop_rate must be in [0, 1), got {self.drop_rate}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise OptionError(f"dare.seed must be an integer, got {self.seed!r}")
        object.__setattr__(self, "drop_rate", float(self.drop_rate))

    @classmethod
    def coerce(cls, value: Any) -> "DareOptions | None":
        """None/False: no DARE; True: defaults; a mapping {drop_rate, seed} or a DareOptions."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise OptionError(f"dare must be a mapping like {{drop_rate: 0.9, seed: 0}}, true or false; got {value!r}")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "DareOptions":
        """DareOptions from ``{drop_rate, seed}`` (either may be left out); unknown keys are refused."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise OptionError(f"dare has no option(s) {unknown}; its options are {names}")
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        """``{drop_rate, seed}`` as plain data."""
        return asdict(self)


def dare_generator(seed: int, task: int, name: str, chunk: int) -> torch.Generator:
    """A CPU generator for one chunk of one task's tensor, seeded by a stable hash of its coordinates.

    Args:
        seed: the user's DARE seed.
        task: index of the fine-tuned model in the input list.
        name: tensor name.
        chunk: index of the ``DARE_CHUNK``-element slice of the flattened tensor.
    """
    key = f"{seed}\0{task}\0{name}\0{chunk}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))


def random_keep_mask(numel: int, drop_rate: float, generator: torch.Generator) -> torch.Tensor:
    """Boolean mask keeping each entry with probability 1 - drop_rate.

    Args:
        numel: number of entries.
        drop_rate: probability of dropping an entry.
        generator: the chunk's generator (see ``dare_generator``).
    """
    return torch.rand(numel, generator=generator) >= drop_rate


def dare_rescale(tau: torch.Tensor, keep: torch.Tensor, drop_rate: float) -> torch.Tensor:
    """tau * keep / (1 - drop_rate), in place on the float32 ``tau``.

    Args:
        tau: float32 task-vector entries (modified in place and returned).
        keep: boolean mask of the same shape.
        drop_rate: the drop probability the mask was drawn with.
    """
    return tau.mul_(keep).div_(1.0 - drop_rate)


def apply_dare(tau: torch.Tensor, start: int, name: str, task: int, options: DareOptions) -> torch.Tensor:
    """DARE on ``tau`` = entries ``start .. start+len`` of the flattened tensor ``name`` of model ``task``.

    Args:
        tau: 1-D float32 slice, modified in place and returned.
        start: its offset in the flattened tensor; must be a multiple of ``DARE_CHUNK``.
        name: tensor name.
        task: index of the fine-tuned model.
        options: drop rate and seed.
    """
    if start % DARE_CHUNK:
        raise ValueError(f"DARE slices must start at a multiple of {DARE_CHUNK}, got {start}")
    if options.drop_rate == 0.0:
        return tau
    for offset in range(0, tau.numel(), DARE_CHUNK):
        piece = tau[offset : offset + DARE_CHUNK]
        g = dare_generator(options.seed, task, name, (start + offset) // DARE_CHUNK)
        dare_rescale(piece, random_keep_mask(piece.numel(), options.drop_rate, g), options.drop_rate)
    return tau

