"""The merge-method interface and its registry.

A method turns the base tensor and N fine-tuned tensors into the edited tensor
theta_0 + lambda * tau_MTL. Methods that need numbers over the whole model (a global
TIES threshold, auto alpha) declare it and get a statistics pass first.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch

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
    return cls(**options)


class MergeMethod:
    """Combine task vectors; subclasses set ``name`` and implement ``task_vector``."""

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    needs_statistics: ClassVar[bool] = False
    option_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            raise OptionError(
                f"merge method {self.name!r} has no option(s) {unknown}; its options are {list(self.option_names) or 'none'}"
            )
        self.options = options

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

    def task_vector(
        self, name: str, base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], stats: Any = None
    ) -> torch.Tensor:
        """tau_MTL for one tensor: a new float32 tensor that the caller may modify (``stats``: the run's, if any)."""
        raise NotImplementedError

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
        return {"method": self.name, **self.options}
