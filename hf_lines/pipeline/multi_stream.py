"""One read pass, several outputs: every output tensor computed from inputs read once.

``stream_many`` runs ``executor.stream`` over (tensor, output) work items in tensor order,
so the tensors of one name are computed one output after the other while the inputs of
that name are read once and shared. Memory holds the inputs of at most a couple of
names plus the executor's few tensors in flight: bounded by tensors, not by the model or
the number of outputs.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any, Callable, Generic, Sequence, TypeVar

import torch

from hf_lines.pipeline.executor import stream

T = TypeVar("T")


class SharedReads(Generic[T]):
    """``read(name)`` done once per name for ``uses`` consumers, then dropped; thread-safe."""

    def __init__(self, read: Callable[[str], T], uses: int):
        self._read = read
        self._uses = uses
        self._lock = threading.Lock()
        self._entries: dict[str, list[Any]] = {}  # name -> [future, consumers left]

    def acquire(self, name: str) -> T:
        with self._lock:
            entry = self._entries.get(name)
            owner = entry is None
            if owner:
                entry = self._entries[name] = [Future(), self._uses]
        fut: Future = entry[0]
        if owner:
            try:
                fut.set_result(self._read(name))
            except BaseException as e:
                fut.set_exception(e)
                raise
        return fut.result()

    def release(self, name: str) -> None:
        with self._lock:
            entry = self._entries[name]
            entry[1] -= 1
            if entry[1] == 0:
                del self._entries[name]

    @property
    def live(self) -> int:
        """Names whose inputs are held now (for tests of the memory bound)."""
        with self._lock:
            return len(self._entries)


def stream_many(
    order: Sequence[str],
    read: Callable[[str], T],
    compute: Callable[[int, str, T], torch.Tensor],
    writes: Sequence[Callable[[str, torch.Tensor], None]],
    *,
    sizes: dict[str, int] | None = None,
    costs: Callable[[int, str], int] | None = None,
    budget: int | None = None,
    prefetch: int | None = None,
    desc: str = "LiNeS",
    workers: int | None = None,
    progress: bool = True,
) -> None:
    """Write output ``k``'s tensor ``name`` = ``compute(k, name, read(name))`` with ``writes[k]``, for every
    name of ``order`` and every output, reading each name's inputs once.

    Args:
        order: tensor names in the order every writer expects them.
        read: name -> inputs, called once per name (in a worker thread).
        compute: (output index, name, inputs) -> the output tensor.
        writes: one writer per output, called in ``order`` from the calling thread.
        sizes: bytes per name of one output (progress in bytes written).
        costs: (output index, name) -> bytes that work item holds while in flight, for ``budget``
            (``executor.stream``): count a name's shared inputs with one of its outputs.
        budget: bytes the work items in flight may hold together (one always runs).
        prefetch: work items in flight at most.
    """
    n = len(writes)
    shared = SharedReads(read, n)
    items = [(k, name) for name in order for k in range(n)]
    keys = [f"{k}:{name}" for k, name in items]
    item_of = dict(zip(keys, items))

    def run(key: str) -> torch.Tensor:
        k, name = item_of[key]
        inputs = shared.acquire(name)
        try:
            return compute(k, name, inputs)
        finally:
            shared.release(name)

    def write(key: str, tensor: torch.Tensor) -> None:
        k, name = item_of[key]
        writes[k](name, tensor)

    key_sizes = {key: sizes[name] for key, (_, name) in item_of.items()} if sizes else None
    key_costs = {key: costs(k, name) for key, (k, name) in item_of.items()} if costs else None
    stream(keys, run, write, sizes=key_sizes, costs=key_costs, budget=budget, prefetch=prefetch, desc=desc,
           workers=workers, progress=progress)
