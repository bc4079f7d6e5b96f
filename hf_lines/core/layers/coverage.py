"""Whole-registry check of the layer map: every transformers model type, built on the meta device.

Run ``python -m hf_lines.core.layers.coverage [--json FILE] [--types a,b]``.

For each model type of ``CONFIG_MAPPING`` that has an ``AutoModel`` class, the default
config is instantiated on the meta device (no memory, no weights) and
``LayerMap.from_model`` is built from it. A model type is *ok* when

1. the map builds and finds at least one numbered stack, and
2. the block counts of the stacks found equal, as a multiset, the block counts that the
   config states (when it states any; a model whose config states none only has to pass 1,
   and is reported as "unstated"). So every stack is accounted for by a stated count and
   every stated count by a stack: no spurious stack (an MLP head's ``layers.N``) and no
   missed one. As a tower's L is the sum of the block counts of the stacks it chains, a
   chained tower's L then equals the sum of their stated counts, and each parallel
   tower's L its own count.

The counts a config states (``stated_counts``), sub-configs included:

- integer keys of ``LAYER_COUNT_KEYS`` (``num_hidden_layers``, ``encoder_layers`` +
  ``decoder_layers``, a vision config's ``depth``...), read by ``config_layer_counts``;
- in a sub-config that states no such integer, the first list key of ``STAGE_LIST_KEYS``
  (``depths``, ``layers_block_type``...): such a list states one stack of ``len`` blocks
  (one block per stage or per layer type), one flat stack of ``sum`` blocks, or one stack
  per stage (its items); any of the three matches;
- the keys that ``EXTRA_COUNT_KEYS`` adds for one model type (a list there counts by its
  length);
- minus the keys that ``NON_STACK_COUNT_KEYS`` lists for the model type (a count of
  recurrent steps, a count for a module the base model does not build...), each with its
  reason. A key of ``SHARED_COUNT_KEYS`` states the size of several identical stacks, and
  one of ``COUNT_OFFSETS`` is off by a constant (Mask2Former's decoder_layers - 1), one of
  ``COUNT_FACTORS`` by a factor (Dory's released configs count attention and MLP apart).
- Stacks of ``UNSTATED_STACKS`` (an architecture constant, HiFi-GAN resblocks...) must be
  found but are left out of the comparison.

Exceptions are reported as "no stack" (nothing found), "mismatch" (with both multisets)
or "error" (the map raised); model types that do not instantiate are counted apart with
their reason.
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import itertools
import json
import signal
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

from hf_lines.core.layers.families import (
    COUNT_FACTORS,
    COUNT_OFFSETS,
    EXTRA_COUNT_KEYS,
    NON_STACK_COUNT_KEYS,
    SHARED_COUNT_KEYS,
    STAGE_LIST_KEYS,
    UNSTATED_STACKS,
)
from hf_lines.core.layers.map import LayerMap, config_layer_counts

# Config arguments that let a default config instantiate offline without optional
# libraries (a HF ResNet backbone instead of timm), or that its defaults leave unset.
CONFIG_OVERRIDES: dict[str, dict[str, Any]] = {
    **{t: {"prediction_length": 24} for t in ("autoformer", "informer", "time_series_transformer")},
    **{t: {"head_dim": 128} for t in ("hunyuan_v1_dense", "hunyuan_v1_moe", "hunyuan_vl_text", "ministral")},
    "esm": {"vocab_size": 33},
    "nemotron": {"num_key_value_heads": 8},
    **{
        t: {"use_timm_backbone": False}
        for t in ("conditional_detr", "dab-detr", "deformable_detr", "detr", "omdet-turbo", "table-transformer")
    },
}

# Outcomes; the first two are ok.
OK, UNSTATED, NO_STACK, MISMATCH, ERROR = "ok", "unstated", "no stack", "mismatch", "error"
PASSING = (OK, UNSTATED)
NO_MODEL_CLASS, NOT_BUILT = "no model class", "not instantiated"


@dataclass
class TypeResult:
    """Outcome for one model type."""

    model_type: str
    status: str
    reason: str = ""
    stacks: dict[str, int] = field(default_factory=dict)
    towers: list[int] = field(default_factory=list)
    stated: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in PASSING


# ----------------------------------------------------------------- stated counts
def stated_counts(model_type: str | None, config: Mapping[str, Any]) -> dict[str, list[tuple[int, ...]]]:
    """Dotted config key -> the alternative multisets of stack sizes that the key states."""
    model_type = model_type or ""
    dropped = NON_STACK_COUNT_KEYS.get(model_type, {})
    shared = SHARED_COUNT_KEYS.get(model_type, {})
    offsets = COUNT_OFFSETS.get(model_type, {})
    factors = COUNT_FACTORS.get(model_type, {})
    ints = dict(config_layer_counts(config))
    for key in EXTRA_COUNT_KEYS.get(model_type, ()):
        value = _lookup(config, key)
        if isinstance(value, list):
            value = len(value)
        if isinstance(value, int) and not isinstance(value, bool):
            ints[key] = value
    out: dict[str, list[tuple[int, ...]]] = {}
    for key, value in ints.items():
        if key not in dropped:
            out[key] = [(value // factors.get(key, 1) + offsets.get(key, 0),) * shared.get(key, 1)]
    scopes_with_int = {k.rpartition(".")[0] for k in out}
    read_scopes: set[str] = set()
    for key, value in sorted(_stage_lists(config), key=lambda kv: STAGE_LIST_KEYS.index(kv[0].rpartition(".")[2])):
        scope = key.rpartition(".")[0]
        if key in dropped or scope in scopes_with_int or scope in read_scopes or not value:
            continue
        read_scopes.add(scope)
        alternatives = {(len(value),)}
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            alternatives |= {(sum(value),), tuple(sorted(value))}
        out[key] = sorted({alt * shared.get(key, 1) for alt in alternatives})
    return out


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _stage_lists(config: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, list]]:
    for key, value in config.items():
        if isinstance(value, Mapping):
            yield from _stage_lists(value, f"{path}{key}.")
        elif key in STAGE_LIST_KEYS and isinstance(value, list):
            yield f"{path}{key}", value


def counts_match(sizes: Iterable[int], stated: Mapping[str, Sequence[tuple[int, ...]]]) -> bool:
    """Whether some choice of one alternative per stated key gives exactly the multiset ``sizes``."""
    want = Counter(sizes)
    for choice in itertools.product(*stated.values()):
        if Counter(n for alt in choice for n in alt) == want:
            return True
    return False


def check_layer_map(model_type: str | None, layer_map: LayerMap, config: Mapping[str, Any]) -> TypeResult:
    """Apply the criteria of this module to one built layer map."""
    stacks = {s.prefix: s.num_blocks for s in layer_map.stacks}
    stated = stated_counts(model_type, config)
    result = TypeResult(
        model_type or "", OK, stacks=stacks, towers=[t.num_blocks for t in layer_map.towers],
        stated={k: v if len(v) > 1 else v[0] for k, v in stated.items()},
    )
    unstated = UNSTATED_STACKS.get(model_type or "", {})
    sized = {p: n for p, n in stacks.items() if not any(fnmatch.fnmatchcase(p, pat) for pat in unstated)}
    missing = [pat for pat in unstated if not any(fnmatch.fnmatchcase(p, pat) for p in stacks)]
    if not stacks:
        result.status, result.reason = NO_STACK, "no numbered block stack in the tensor names"
    elif missing:
        result.status, result.reason = MISMATCH, f"expected stacks not found: {missing}"
    elif not stated:
        result.status, result.reason = UNSTATED, "the config states no block count"
    elif not counts_match(sized.values(), stated):
        result.status = MISMATCH
        result.reason = f"stacks {sorted(sized.values())} vs stated counts {result.stated}"
    return result


# ---------------------------------------------------------------- one model type
class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise _Timeout after ``seconds`` (POSIX main thread only; elsewhere no limit)."""
    usable = seconds > 0 and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise _Timeout(f"took over {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_model_type(model_type: str, timeout: float = 60.0) -> TypeResult:
    """Instantiate ``model_type``'s default config on meta and check its layer map."""
    import torch
    from transformers import AutoModel
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    start = time.perf_counter()
    if model_type not in MODEL_MAPPING_NAMES:
        return TypeResult(model_type, NO_MODEL_CLASS, "no AutoModel class in MODEL_MAPPING")
    try:
        with _time_limit(timeout), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = CONFIG_MAPPING[model_type](**CONFIG_OVERRIDES.get(model_type, {}))
            with torch.device("meta"):
                model = AutoModel.from_config(config)
    except Exception as exc:  # noqa: BLE001 - any failure to build is a skip, with its reason
        return TypeResult(model_type, NOT_BUILT, _one_line(exc), seconds=time.perf_counter() - start)
    try:
        layer_map = LayerMap.from_model(model)
        result = check_layer_map(model_type, layer_map, model.config.to_dict())
    except Exception as exc:  # noqa: BLE001 - reported as an exception of the rule
        result = TypeResult(model_type, ERROR, _one_line(exc))
    result.seconds = time.perf_counter() - start
    return result


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


# ------------------------------------------------------------------- the registry
def registry_types() -> list[str]:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return list(CONFIG_MAPPING.keys())


def run(types: Iterable[str] | None = None, timeout: float = 60.0, progress: bool = False) -> list[TypeResult]:
    """Check every model type (or only ``types``), in registry order."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        results = []
        for model_type in types if types is not None else registry_types():
            results.append(check_model_type(model_type, timeout))
            if progress:
                r = results[-1]
                print(f"  {model_type}: {r.status} ({r.seconds:.2f} s)", file=sys.stderr, flush=True)
        return results
    finally:
        hf_logging.set_verbosity(verbosity)


def summary(results: Sequence[TypeResult]) -> dict[str, Any]:
    """Coverage figure and the exceptions, as plain data."""
    built = [r for r in results if r.status not in (NO_MODEL_CLASS, NOT_BUILT)]
    return {
        "ok": sum(r.ok for r in built),
        "verified": sum(r.status == OK for r in built),
        "unstated": sorted(r.model_type for r in built if r.status == UNSTATED),
        "instantiated": len(built),
        "with_model_class": sum(r.status != NO_MODEL_CLASS for r in results),
        "registry_total": len(results),
        "exceptions": {r.model_type: f"{r.status}: {r.reason}" for r in built if not r.ok},
        "not_instantiated": {r.model_type: r.reason for r in results if r.status == NOT_BUILT},
    }


def report(results: Sequence[TypeResult], seconds: float | None = None) -> str:
    s = summary(results)
    lines = [
        f"layer map coverage: {s['ok']} ok / {s['instantiated']} instantiated / {s['registry_total']} registry total"
        f" ({s['with_model_class']} with an AutoModel class; {s['verified']} ok against stated counts,"
        f" {len(s['unstated'])} whose config states none)"
        + (f" in {seconds:.0f} s" if seconds is not None else ""),
        f"exceptions ({len(s['exceptions'])}):",
        *(f"  {t}: {why}" for t, why in sorted(s["exceptions"].items())),
        f"not instantiated ({len(s['not_instantiated'])}):",
        *(f"  {t}: {why}" for t, why in sorted(s["not_instantiated"].items())),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hf_lines.core.layers.coverage", description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="FILE", help="write every model type's result here")
    parser.add_argument("--types", help="comma-separated model types (default: the whole registry)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per model type")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each model type as it is checked")
    args = parser.parse_args(argv)
    types = [t.strip() for t in args.types.split(",") if t.strip()] if args.types else None
    start = time.perf_counter()
    results = run(types, args.timeout, progress=args.verbose)
    seconds = time.perf_counter() - start
    print(report(results, seconds))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"summary": summary(results), "results": [asdict(r) for r in results]}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
