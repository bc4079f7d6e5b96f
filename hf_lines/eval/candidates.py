"""One model object whose weights become theta_0 + lambda(layer) * tau_MTL for each grid point.

A sweep must not write every candidate to disk. The model is loaded once from the base
folder; then each grid point overwrites its parameters in place:

* ``memory`` mode computes tau_MTL once (the merge method runs once, its statistics
  included) and keeps theta_0 and tau_MTL in memory: a grid point costs one fused
  ``theta_0 + lambda * tau`` per tensor. Extra memory: the model once more in its dtype
  plus once in float32.
* ``stream`` mode keeps nothing: each grid point reads the inputs tensor by tensor (the
  safetensors files are memory-mapped, so repeated points come from the page cache) and
  runs the method again, as ``save_pretrained`` would, but into the loaded model. Method
  statistics (TIES thresholds, auto alpha) are still computed once.
* ``auto`` picks ``memory`` when that extra memory fits in a third of the available RAM.

When the loaded model's parameter names differ from the checkpoint's (transformers
renames a few families' tensors on load), each point is written to a temporary folder
and loaded from there instead: correct, but slow; a warning says so.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from hf_lines.errors import OptionError
from hf_lines.pipeline.executor import read_inputs
from hf_lines.pipeline.merger import LinesMerger
from hf_lines.pipeline.plan import Plan

log = logging.getLogger(__name__)
MODES = ("auto", "memory", "stream")


class CandidateModels:
    """Set one loaded model to the base, a fine-tune, or any (alpha, beta) edit of the merger's tau_MTL."""

    def __init__(self, merger: LinesMerger, *, model_class: Any = None, mode: str = "auto", device: str | None = None,
                 load_kwargs: dict[str, Any] | None = None):
        if mode not in MODES:
            raise OptionError(f"unknown sweep mode {mode!r}; use one of {list(MODES)}")
        self.merger = merger
        self.base = merger.base.checkpoint
        self.model_class = resolve_model_class(model_class, self.base.config)
        self.load_kwargs = dict(load_kwargs or {})
        self.model = self.model_class.from_pretrained(str(self.base.path), **self.load_kwargs)
        if device is not None:
            self.model.to(device)
        self.model.eval()
        own = self.model.state_dict()
        names = self.base.names()
        self.targets = {n: own[n] for n in names if n in own and own[n].is_floating_point()}
        self.via_disk = any(n not in own for n in names)
        if self.via_disk:
            log.warning("the loaded %s renames checkpoint tensors (e.g. %s): every grid point goes through a "
                        "temporary folder, which is slow", type(self.model).__name__,
                        next(n for n in names if n not in own))
        self.mode = mode if mode != "auto" else ("memory" if self._fits_in_memory() else "stream")
        self._theta0: dict[str, torch.Tensor] | None = None
        self._tau: dict[str, torch.Tensor] | None = None
        self.plan: Plan | None = None  # the merge with its statistics, once prepared
        self.state = "base"

    # ------------------------------------------------------------------ setup
    def _fits_in_memory(self) -> bool:
        need = sum(self.base.info(n).nbytes + 4 * _numel(self.base.info(n).shape) for n in self.targets)
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return True
        return need < avail / 3

    def prepare(self, progress: bool = False) -> None:
        """Run the method's statistics (and auto alpha) once; in memory mode compute tau_MTL once."""
        if self.plan is None:
            self.plan = self.merger.plan(progress)  # statistics once, shared by every point
        if self.mode != "memory" or self._tau is not None or self.via_disk:
            return
        output = self.plan.outputs[0]
        theta0, tau = {}, {}
        for n in self.targets:
            base, models = read_inputs(n, self.plan.base, self.plan.models)
            theta0[n] = base
            tau[n] = output.method.task_vector(n, base, models, output.weights, output.statistics).float().reshape(base.shape)
        self._theta0, self._tau = theta0, tau

    @property
    def auto_alpha(self) -> float | None:
        """alpha = "auto" resolved (the paper's (1/N) ||sum tau||_1 / ||tau_MTL||_1), once the statistics ran."""
        a = self.merger.auto_alpha
        return None if a is None else float(a.value)

    # ------------------------------------------------------------------ points
    def set_edit(self, alpha: float, beta: float) -> Any:
        """The model holding theta_0 + lambda(layer; alpha, beta) * tau_MTL."""
        self.prepare()
        scales = self.merger.layer_map.scales(alpha, beta, self.merger.lines.policy)
        if self.via_disk:
            return self._via_disk(alpha, beta)
        with torch.no_grad():
            if self._tau is not None:
                for n, target in self.targets.items():
                    target.copy_(torch.add(self._theta0[n].float(), self._tau[n], alpha=scales[n]))
            else:
                for n, target in self.targets.items():
                    target.copy_(self.plan.tensor(0, n, scale=scales[n]))
        self.state = f"edit({alpha:g}, {beta:g})"
        return self.model

    def set_base(self) -> Any:
        """The model holding theta_0 (the zero-shot reference)."""
        return self._set_from(self.base, "base")

    def set_finetuned(self, index: int) -> Any:
        """The model holding fine-tune ``index`` as it is (a task's fine-tuned reference)."""
        return self._set_from(self.merger.models[index].checkpoint, f"model {index}")

    def _set_from(self, checkpoint: Any, state: str) -> Any:
        if self.via_disk:
            self.model = self.model_class.from_pretrained(str(checkpoint.path), **self.load_kwargs).eval()
            return self.model
        with torch.no_grad():
            for n, target in self.targets.items():
                target.copy_(checkpoint.get(n))
        self.state = state
        return self.model

    def _via_disk(self, alpha: float, beta: float) -> Any:
        from dataclasses import replace

        m = self.merger
        m.lines = replace(m.lines, alpha=alpha, beta=beta)
        with tempfile.TemporaryDirectory() as tmp:
            out = m.save_pretrained(Path(tmp) / "point", progress=False)
            self.model = self.model_class.from_pretrained(str(out), **self.load_kwargs).eval()
        return self.model


def resolve_model_class(model_class: Any, config: dict[str, Any]) -> Any:
    """A transformers class: the one given (class or name), else the config's first architecture, else AutoModel."""
    import transformers

    if model_class is not None and not isinstance(model_class, str):
        return model_class
    name = model_class or (config.get("architectures") or [None])[0]
    cls = getattr(transformers, name, None) if name else None
    if model_class is not None and cls is None:
        raise OptionError(f"transformers has no class {model_class!r}")
    return cls or transformers.AutoModel


def _numel(shape: Any) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
