"""The streaming executor: read inputs, combine, write, one tensor at a time.

Reading and computing for the next few tensors overlap with writing the current one
(torch kernels and file writes release the GIL); memory is bounded by ``prefetch``
tensors per input, never by the model.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from hf_lines.core.threads import intra_op_threads, per_worker
from hf_lines.errors import IncompatibleModelsError, NonFiniteError
from hf_lines.core.methods.arithmetic import is_finite
from hf_lines.io.checkpoint import TensorSource

log = logging.getLogger(__name__)


def check_compatible(base: TensorSource, models: Sequence[TensorSource]) -> None:
    """Refuse inputs that cannot be combined, before anything is written; warn once per model of other float dtypes."""
    base_type = base.config.get("model_type")
    base_names = set(base.names())
    for m in models:
        other_type = m.config.get("model_type")
        if base_type and other_type and base_type != other_type:
            raise IncompatibleModelsError(
                f"{m.label} is a {other_type!r} model but the base {base.label} is {base_type!r}; "
                "all models must be fine-tunes of the same architecture"
            )
        names = set(m.names())
        missing, extra = sorted(base_names - names), sorted(names - base_names)
        if missing or extra:
            raise IncompatibleModelsError(
                f"{m.label} and the base {base.label} hold different tensors "
                f"(missing from it: {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                f"not in the base: {extra[:5]}{'...' if len(extra) > 5 else ''}); "
                "were they fine-tuned from this base with the same architecture?"
            )
        dtypes: dict[tuple[torch.dtype, torch.dtype], int] = {}  # (base, model) float dtypes that differ -> tensors
        for n in base.names():
            a, b = base.info(n).shape, m.info(n).shape
            if a != b:
                raise IncompatibleModelsError(
                    f"tensor {n!r} has shape {list(b)} in {m.label} but {list(a)} in the base {base.label}; "
                    "the models must share one architecture and vocabulary size"
                )
            da, db = base.info(n).dtype, m.info(n).dtype
            if da != db and da.is_floating_point and db.is_floating_point:
                dtypes[(da, db)] = dtypes.get((da, db), 0) + 1
        if dtypes:
            # Not an error: deltas are computed in float32 either way. One line per model, not per tensor.
            pairs = "; ".join(
                f"{k} tensor(s) {_dtype_name(db)} in {m.label} but {_dtype_name(da)} in the base {base.label}"
                for (da, db), k in dtypes.items()
            )
            log.warning("%s has other floating-point dtypes than the base: %s. The output takes the base's dtype "
                        "(unless a dtype is asked for); convert the models to one dtype to silence this",
                        m.label, pairs)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def read_inputs(
    name: str, base: TensorSource, models: Sequence[TensorSource], check: bool = True
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Base and fine-tuned tensors for ``name``, refusing NaN or infinity.

    ``check=False`` leaves the check to the caller: the fused kernels see every value
    anyway and report non-finite inputs for free, so ``check_finite`` runs only then.
    """
    tensors = [base.get(name)] + [m.get(name) for m in models]
    if check:
        check_finite(name, [base, *models], tensors)
    return tensors[0], tensors[1:]


def check_finite(name: str, checkpoints: Sequence[TensorSource], tensors: Sequence[torch.Tensor]) -> None:
    """Raise ``NonFiniteError`` naming the checkpoint whose tensor ``name`` holds NaN or infinity."""
    for ckpt, t in zip(checkpoints, tensors):
        if not is_finite(t):
            raise NonFiniteError(
                f"tensor {name!r} of {ckpt.label} holds NaN or infinite values; "
                "its task vector is undefined: check or re-export that checkpoint"
            )


# Bytes of inputs and outputs that tensors in flight may hold together (one always may run).
DEFAULT_MEMORY_BUDGET = 512 << 20


def compute_device(device: str | torch.device | None) -> torch.device:
    """The device the arithmetic runs on: CPU by default, "auto" lets accelerate choose (a GPU when present)."""
    if device is None:
        return torch.device("cpu")
    if str(device) == "auto":
        from accelerate import PartialState

        return PartialState().device
    return torch.device(device)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def default_prefetch(workers: int) -> int:
    """Tensors in flight: enough that the workers stay busy while a large tensor is written
    (a 23 MB projection takes as long to write as several small ones take to compute);
    the byte budget, not this count, bounds the memory."""
    return 4 * workers


def stream(
    order: Sequence[str],
    compute: Callable[[str], torch.Tensor],
    write: Callable[[str, torch.Tensor], None],
    *,
    sizes: dict[str, int] | None = None,
    costs: dict[str, int] | None = None,
    budget: int | None = None,
    desc: str = "LiNeS",
    workers: int | None = None,
    prefetch: int | None = None,
    progress: bool = True,
) -> None:
    """Compute every tensor of ``order`` (in a small thread pool) and write them in order.

    At most ``prefetch`` tensors are in flight, and while one is, no more start once their
    ``costs`` (bytes of inputs and output) would pass ``budget``: a few huge tensors (an
    embedding read from five models) are then taken one at a time, which bounds memory.
    """
    workers = workers or default_workers()
    prefetch = prefetch or default_prefetch(workers)
    total = sum(sizes.values()) if sizes else len(order)
    bar = tqdm(total=total, desc=desc, unit="B" if sizes else "tensor", unit_scale=True, disable=not progress)
    pending: deque = deque()
    names = deque(order)
    in_flight = 0

    def cost(name: str) -> int:
        return costs[name] if costs else 0

    def fill() -> None:
        nonlocal in_flight
        while names and len(pending) < prefetch:
            if pending and budget is not None and in_flight + cost(names[0]) > budget:
                return
            name = names.popleft()
            in_flight += cost(name)
            pending.append((name, pool.submit(compute, name)))

    with intra_op_threads(per_worker(workers)), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hf-lines") as pool:
        try:
            fill()
            while pending:
                name, fut = pending.popleft()
                tensor = fut.result()
                write(name, tensor)
                del tensor
                in_flight -= cost(name)
                fill()
                bar.update(sizes[name] if sizes else 1)
        finally:
            for _, fut in pending:
                fut.cancel()
            bar.close()


def statistics_pass(
    order: Iterable[str],
    observe: Callable[[str], None],
    *,
    desc: str = "statistics",
    progress: bool = True,
    workers: int | None = 1,
    sizes: dict[str, int] | None = None,
    costs: dict[str, int] | None = None,
    budget: int | None = DEFAULT_MEMORY_BUDGET,
) -> None:
    """One read pass over the inputs for methods that need whole-model numbers.

    It is ``stream`` with nothing to write: with ``workers`` > 1 (None: the default pool
    size) ``observe`` runs on a few tensors at once and must be thread-safe.
    """
    stream(
        list(order),
        observe,
        lambda name, result: None,
        sizes=sizes,
        costs=costs,
        budget=budget,
        desc=desc,
        workers=workers,
        progress=progress,
    )
