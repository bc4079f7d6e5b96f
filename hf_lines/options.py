"""Run options, checked before a run reads its first byte.

A bad option found only after the weights have streamed wastes the whole run, and a
non-finite or runaway schedule would write a model of inf and NaN with exit code 0. Every
check here raises ``OptionError`` naming the option (Python and CLI spelling), the value,
and what to give instead.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

import torch

from hf_lines.errors import OptionError, OutputExistsError

# |lambda| beyond this is a typo (1e3 for 1e-3) far more often than intent: the paper's sweeps stay
# within [0, 2], and a task vector scaled by 100 already swamps the weights it is added to (in
# float16 it overflows). ``allow_large_lambda`` lifts the bound; finiteness is always required.
MAX_LAMBDA = 100.0
# A shard below this is mostly its JSON header, and a bare "5" counts bytes, not gigabytes: the
# likely meaning of a size this small is a missing unit. (Tiny test models shard at 20KB.)
MIN_SHARD_SIZE = 10_000
ALLOW_LARGE = ("pass --allow-large-lambda (Python: allow_large_lambda=True; recipe: "
               "lines: {allow_large_lambda: true}) if you mean it")


def option_name(option: str) -> str:
    """``max_shard_size (--max-shard-size)``: the Python keyword and the CLI flag, as messages name them."""
    if not option.isidentifier():  # weights[1]: an entry of a list option
        return option
    return f"{option} (--{option.replace('_', '-')})"


def finite_number(value: Any, option: str) -> float:
    """``value`` as a float; OptionError unless it is a real, finite number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(f"{option_name(option)} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise OptionError(f"{option_name(option)} = {value!r} is not a finite number; give a real value such as 0.5")
    return float(value)


def parse_number(value: Any, option: str, example: str = "") -> float:
    """A number from the command line or a list (``"0.5"`` or ``0.5``) as a finite float.

    A NaN or infinite grid value would score or write a model of NaN weights; ``example``
    (e.g. ``"'0,0.5,1'"``) is shown after a value that is not a number at all.
    """
    if isinstance(value, bool):
        raise OptionError(f"{option_name(option)}: {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        hint = f"; e.g. {example}" if example else ""
        raise OptionError(f"{option_name(option)}: {value!r} is not a number{hint}") from None
    return finite_number(number, option)


def check_schedule(alpha: float | str, beta: float, *, allow_large_lambda: bool = False) -> None:
    """Refuse a LiNeS schedule with a non-finite lambda, or one beyond +-MAX_LAMBDA unless allowed.

    lambda(i) = alpha + beta * i / (L - 1) is linear in i, so its extremes are alpha (the first
    block, and every non-block tensor) and alpha + beta (the last block): checking those two
    checks every tensor, whatever L, the policy or the stacks. ``alpha = "auto"`` is checked
    again once the statistics pass has resolved it.
    """
    if alpha != "auto":
        finite_number(alpha, "alpha")
    finite_number(beta, "beta")
    if alpha == "auto":
        return
    for where, lam in (("the first block (alpha)", alpha), ("the last block (alpha + beta)", alpha + beta)):
        if not math.isfinite(lam):
            raise OptionError(f"alpha = {alpha:g} and beta = {beta:g} give lambda = {lam} at {where}, which is not "
                              "a finite number; choose smaller alpha and beta")
        if abs(lam) > MAX_LAMBDA and not allow_large_lambda:
            raise OptionError(
                f"alpha = {alpha:g} and beta = {beta:g} give lambda = {lam:g} at {where}; a |lambda| above "
                f"{MAX_LAMBDA:g} scales the task vector far past any useful edit (and overflows float16 weights): "
                f"check alpha and beta (lambda(i) = alpha + beta * i / (L - 1)), or {ALLOW_LARGE}"
            )


def parse_size(value: Any, option: str, minimum: int | None = 1) -> int:
    """Bytes from ``"2GB"``, ``"500MB"``, ``"10KB"`` or a byte count; OptionError when unreadable or below
    ``minimum`` (None: parse only)."""
    from huggingface_hub.serialization._base import parse_size_to_int

    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise OptionError(f"{option_name(option)} must be a size like 2GB or 500MB, got {value!r}")
    size: int
    if isinstance(value, int):
        size = value
    elif value.strip().lstrip("+-").isdigit():
        size = int(value.strip())
    else:
        try:
            size = parse_size_to_int(value)
        except ValueError:
            raise OptionError(f"{option_name(option)} = {value!r} is not a size; write a number and a unit "
                              "(KB, MB, GB or TB), e.g. 2GB") from None
    if minimum is not None and size < minimum:
        unit = "a size with a unit, e.g. 2GB" if minimum > 1 else "a positive size, e.g. 512MB"
        raise OptionError(f"{option_name(option)} = {value!r} is {size:,} byte{'' if size == 1 else 's'}; it must be at least "
                          f"{_show_bytes(minimum)}: give {unit}")
    return size


def _show_bytes(n: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n} byte" + ("s" if n != 1 else "")


def check_workers(workers: Any) -> None:
    """None (the default pool) or a whole number of threads, at least 1."""
    if workers is None:
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise OptionError(f"{option_name('workers')} = {workers!r}: give a whole number of threads, 1 or more "
                          "(or leave it out: the cores, at most 4)")


def available_devices() -> list[str]:
    """The devices this torch can compute on, as ``--device`` spells them."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        found += [f"xpu:{i}" for i in range(xpu.device_count())]
    return found


def check_device(device: Any) -> None:
    """None (the CPU), ``"auto"`` (accelerate's choice) or a device this torch has, e.g. ``cuda:1``."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return
    here = ", ".join(available_devices())
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise OptionError(f"{option_name('device')} = {device!r} is not a device; use cpu, cuda, cuda:N, mps or "
                          f"auto (available here: {here})") from None
    if dev.type == "cpu":
        return
    module = {"cuda": torch.cuda, "xpu": getattr(torch, "xpu", None)}.get(dev.type)
    if dev.type == "mps":
        present, count = torch.backends.mps.is_available(), 1
    elif module is not None:
        present = module.is_available()
        count = module.device_count() if present else 0
    else:
        raise OptionError(f"{option_name('device')} = {device!r}: hf-lines computes on cpu, cuda, mps or xpu, "
                          f"not {dev.type} (available here: {here})")
    if not present:
        raise OptionError(f"{option_name('device')} = {device!r}, but this torch has no {dev.type} device "
                          f"(available here: {here}); use one of those, or leave --device out for the CPU")
    if dev.index is not None and dev.index >= count:
        raise OptionError(f"{option_name('device')} = {device!r}, but there are {count} {dev.type} device(s) "
                          f"(available here: {here})")


def check_run_options(
    *,
    max_shard_size: Any = None,
    workers: Any = None,
    memory_budget: Any = None,
    device: Any = None,
    write_mode: Any = "auto",
) -> None:
    """Every option of a streaming run that can be wrong, checked together before any work."""
    from hf_lines.io.file_sink import WRITE_MODES

    if max_shard_size is not None:
        parse_size(max_shard_size, "max_shard_size", MIN_SHARD_SIZE)
    check_workers(workers)
    if memory_budget is not None:
        parse_size(memory_budget, "memory_budget")
    check_device(device)
    if write_mode not in WRITE_MODES:
        raise OptionError(f"{option_name('write_mode')} = {write_mode!r}; use one of {', '.join(WRITE_MODES)}")


def check_output_free(out: str | Path, overwrite: bool) -> None:
    """Refuse an output folder that exists when overwriting was not asked for (before hours of work, not after)."""
    path = Path(out).expanduser()
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path.resolve()} already exists; choose another output folder or pass --overwrite")
