"""The merge-method interface and its registry.

A method turns the base tensor and N fine-tuned tensors into the edited tensor
theta_0 + lambda * tau_MTL. Every method's tau_MTL is generalized task arithmetic
(``generalized``): the method only says which stages it runs (``stages``) and with which
coefficients (``task_weights``). Methods that need numbers over the whole model (a global
TIES threshold, auto alpha) declare it and get a statistics pass first.

A method object is its configuration, a frozen dataclass in the manner of peft's config
classes: the fields are its options, ``__post_init__`` validates and normalises them,
``to_dict``/``from_dict`` turn them into the plain data of recipes and hf_lines.json and back.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import torch

from hf_lines.core.methods.generalized import Stages, staged_task_vector
from hf_lines.errors import OptionError

if TYPE_CHECKING:
    from hf_lines.core.kernels import KernelStats

METHODS: dict[str, type["MergeMethod"]] = {}


def register_method(cls: type["MergeMethod"]) -> type["MergeMethod"]:
    for name in (cls.name, *cls.aliases):
        METHODS[name] = cls
    return cls


def get_method(name: str, **options: Any) -> "MergeMethod":
    try:
        cls = METHODS[name]
    except KeyError:
        raise OptionError(f"unknown merge method {name!r}; choose one of {sorted(METHODS)}") from None
    return cls.from_dict(options)


def is_number(value: Any) -> bool:
    """An int or float option value (YAML's true/false are bools, which Python counts as ints)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def choose(where: str, value: Any, allowed: Sequence[str], aliases: Mapping[str, str] | None = None) -> str:
    """The canonical name of ``value`` among ``allowed`` (after ``aliases``), else an OptionError naming them.

    Args:
        where: what the message names, e.g. "ties option trim".
        value: the value given.
        allowed: the canonical values.
        aliases: other spellings accepted, mapped to canonical values.
    """
    canonical = (aliases or {}).get(value, value) if isinstance(value, str) else value
    if canonical not in allowed:
        raise OptionError(f"{where} must be one of {list(allowed)}, got {value!r}")
    return canonical


def plain(value: Any) -> Any:
    """An option value as YAML/JSON data: nested option dataclasses as dicts, tuples as lists."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class MergeMethod:
    """Combine task vectors; subclasses set ``name``, declare their options as fields and implement ``stages``.

    Frozen, so that a method is only a configuration: one object can serve any number of
    merges, and what a run learns lives in that run's statistics (``new_statistics``).
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    needs_statistics: ClassVar[bool] = False

    def __post_init__(self) -> None:
        """Validate and normalise the options (raise OptionError); subclasses extend it."""

    def _set(self, option: str, value: Any) -> None:
        """Store a normalised option in ``__post_init__`` (the dataclass is frozen)."""
        object.__setattr__(self, option, value)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The options a recipe may give: the dataclass fields (derived ones, ``init=False``, excluded)."""
        return tuple(f.name for f in fields(cls) if f.init)

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "MergeMethod":
        """The method configured by ``options`` (a recipe's ``method_options``); unknown keys are refused."""
        names = cls.option_names()
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise OptionError(
                f"merge method {cls.name!r} has no option(s) {unknown}; its options are {list(names) or 'none'}"
            )
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        """The options as plain data, in field order: what recipes and hf_lines.json record."""
        return {option: plain(getattr(self, option)) for option in self.option_names()}

    @property
    def options(self) -> dict[str, Any]:
        """The options as plain data (``to_dict``)."""
        return self.to_dict()

    def check_inputs(self, num_models: int) -> None:
        """Refuse a number of fine-tuned models the options do not fit (raise ValueError)."""

    def new_statistics(self, num_models: int) -> Any:
        """Fresh whole-model statistics for one run (None when the method needs none).

        A method object is a configuration: it holds no state of its own, so one object can
        serve any number of merges, one after the other or at once in threads. Everything a
        run learns about its models (TIES' global thresholds, ...) lives in the object this
        returns, which the run owns and hands back to ``observe``, ``finish_statistics``,
        ``task_vector``, ``merge`` and ``fused_merge``.
        """
        return None

    def observe(self, stats: Any, name: str, base: torch.Tensor, models: Sequence[torch.Tensor],
                weights: Sequence[float]) -> bool | None:
        """Statistics pass: called once per floating tensor before any output is written.

        Calls may come from several threads at once: accumulate into ``stats`` under a lock,
        in a way whose result does not depend on the order of the tensors. Return True when
        every input value was seen and found finite (a fused kernel's check), so the caller
        need not check them again.
        """

    def finish_statistics(self, stats: Any) -> bool | None:
        """Called after each statistics pass; return True to ask for one more pass over the same tensors."""

    def task_weights(self, weights: Sequence[float]) -> list[float]:
        """The coefficient of each task vector in the stages (mean divides the given weights by N)."""
        return list(weights)

    def stages(
        self, name: str, base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], stats: Any = None
    ) -> Stages:
        """The generalized task-arithmetic steps of one tensor (``generalized.Stages``), from the options and ``stats``."""
        raise NotImplementedError

    def task_vector(
        self, name: str, base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], stats: Any = None
    ) -> torch.Tensor:
        """tau_MTL for one tensor: a new float32 tensor that the caller may modify (``stats``: the run's, if any)."""
        stages = self.stages(name, base, models, weights, stats)
        return staged_task_vector(name, base, models, self.task_weights(weights), stages)

    def task_vector_l1(
        self, name: str, base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], stats: Any = None
    ) -> float:
        """||tau_MTL||_1 of one tensor in float64, for auto alpha (methods may compute it without a full-size tau)."""
        from hf_lines.core.methods.task_vectors import l1_norm

        return l1_norm(self.task_vector(name, base, models, weights, stats))

    def merge(
        self,
        name: str,
        base: torch.Tensor,
        models: Sequence[torch.Tensor],
        weights: Sequence[float],
        scale: float,
        out: torch.Tensor | None = None,
        stats: Any = None,
    ) -> torch.Tensor:
        """theta_0 + scale * tau_MTL in base's dtype, written into ``out`` (shaped like base) when given."""
        if not base.is_floating_point():
            return base.clone()
        # task_vector hands over a fresh float32 tensor: reuse it for the sum (no second full-size temporary)
        edited = self.task_vector(name, base, models, weights, stats).mul_(float(scale)).add_(base)
        return edited.to(base.dtype) if out is None else out.copy_(edited)

    def fused_merge(
        self,
        name: str,
        base: torch.Tensor,
        models: Sequence[torch.Tensor],
        weights: Sequence[float],
        scale: float,
        out: torch.Tensor | None = None,
        stats: Any = None,
    ) -> "tuple[torch.Tensor, KernelStats] | None":
        """``merge`` in one pass by the fused CPU kernels (``hf_lines.core.kernels``), with the norms and
        finiteness they measured on the way; None where they do not apply (the caller then uses ``merge``).
        """
        return None

    def working_bytes(self, numel: int) -> int:
        """Memory ``merge`` needs besides its inputs and output: the float32 tau_MTL by default."""
        return 4 * numel

    def statistics_record(self, stats: Any) -> dict[str, Any]:
        """Whole-model numbers a run's statistics pass found (e.g. TIES' global thresholds), for the saved record."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Name and options (plain data: they go to YAML and JSON as they are)."""
        return {"method": self.name, **self.to_dict()}
