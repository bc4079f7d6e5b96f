"""LinesMerger: the public API that ties sources, layer map, method and writer together."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .engine import check_compatible, read_inputs, statistics_pass, stream
from .layers import LayerMap
from .layers.infer import StackMode
from .layers.map import POLICIES, Policy
from .methods import MergeMethod, get_method
from .output import copy_support_files, staged_folder
from .report import BlockNorm, block_norms, tensor_norms
from .sources import Checkpoint, ModelRef, resolve
from .writer import ShardedWriter


@dataclass
class LinesConfig:
    """LiNeS settings: lambda(i) = alpha + beta * i / (L - 1); non-block tensors follow ``policy``."""

    alpha: float
    beta: float
    policy: Policy = "paper"
    stacks: StackMode = "chain"

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown non-block policy {self.policy!r}; use one of {list(POLICIES)}")
        if self.stacks not in ("chain", "separate"):
            raise ValueError(f"unknown stacks mode {self.stacks!r}; use 'chain' or 'separate'")


@dataclass
class Parent:
    """One input model: where it came from and the folder it was read from."""

    ref: ModelRef
    checkpoint: Checkpoint
    weight: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


class LinesMerger:
    """Edit one fine-tune or merge several with LiNeS, streaming tensor by tensor.

    >>> merger = LinesMerger.from_pretrained("base", models=["finetuned"], alpha=0.2, beta=0.8)
    >>> merger.save_pretrained("out")  # doctest: +SKIP
    """

    def __init__(
        self,
        base: Parent,
        models: Sequence[Parent],
        lines: LinesConfig,
        method: MergeMethod,
        layer_map: LayerMap,
    ):
        if not models:
            raise ValueError("give at least one fine-tuned model")
        self.base = base
        self.models = list(models)
        self.lines = lines
        self.method = method
        self.layer_map = layer_map
        self.tensor_norms: dict[str, tuple[float, float]] = {}
        check_compatible(base.checkpoint, [m.checkpoint for m in models])

    # ----------------------------------------------------------------- build
    @classmethod
    def from_pretrained(
        cls,
        base: str | Path,
        models: Sequence[str | Path],
        *,
        alpha: float,
        beta: float,
        method: str = "task_arithmetic",
        weights: Sequence[float] | None = None,
        policy: Policy = "paper",
        stacks: StackMode = "chain",
        token: str | bool | None = None,
        **method_options: Any,
    ) -> "LinesMerger":
        """Open the base and fine-tuned checkpoints (folders or Hub ``repo@revision``); reads headers only."""
        if isinstance(models, (str, Path)):
            models = [models]
        weights = list(weights) if weights is not None else [1.0] * len(models)
        if len(weights) != len(models):
            raise ValueError(f"{len(weights)} weights given for {len(models)} models")
        base_parent = _open(base, token=token)
        parents = [_open(m, token=token, weight=w) for m, w in zip(models, weights)]
        layer_map = LayerMap.from_names(base_parent.checkpoint.names(), base_parent.checkpoint.config, stacks)
        return cls(base_parent, parents, LinesConfig(alpha, beta, policy, stacks), get_method(method, **method_options), layer_map)

    # ----------------------------------------------------------------- query
    @property
    def weights(self) -> list[float]:
        return [m.weight for m in self.models]

    def scales(self) -> dict[str, float]:
        """Tensor name -> lambda applied to its (merged) task vector."""
        return self.layer_map.scales(self.lines.alpha, self.lines.beta, self.lines.policy)

    def block_scales(self) -> list[tuple[str, int, int, float]]:
        """(tower, block, L, lambda) for every block, shallow to deep."""
        from .schedule import block_scale

        return [
            (t.name, i, t.num_blocks, block_scale(i, t.num_blocks, self.lines.alpha, self.lines.beta))
            for t in self.layer_map.towers
            for i in range(t.num_blocks)
        ]

    # ----------------------------------------------------------------- run
    def _prepare(self, progress: bool) -> dict[str, float]:
        base, models = self.base.checkpoint, [m.checkpoint for m in self.models]
        if self.method.needs_statistics:
            statistics_pass(
                base.names(),
                lambda n: self.method.observe(n, *read_inputs(n, base, models), self.weights),
                progress=progress,
            )
            self.method.finish_statistics()
        return self.scales()

    def tensor(self, name: str, scale: float, norms: dict[str, tuple[float, float]] | None = None) -> torch.Tensor:
        """The edited tensor ``name`` (reads only that tensor of each input); records its task-vector norms in ``norms``."""
        base, models = read_inputs(name, self.base.checkpoint, [m.checkpoint for m in self.models])
        out = self.method.merge(name, base, models, self.weights, scale)
        if norms is not None and out.is_floating_point():
            norms[name] = tensor_norms(base, out, scale, lambda: self.method.task_vector(name, base, models, self.weights))
        return out

    def block_norms(self) -> list[BlockNorm]:
        """Per-block ||tau|| before and after scaling, from the last ``save_pretrained``."""
        if not self.tensor_norms:
            raise RuntimeError("no norms yet: call save_pretrained() first")
        return block_norms(self.layer_map, self.tensor_norms, self.scales())

    def state_dict(self, progress: bool = False) -> dict[str, torch.Tensor]:
        """The whole edited state dict in memory: for small models and tests."""
        scales = self._prepare(progress)
        return {n: self.tensor(n, scales[n]) for n in self.base.checkpoint.names()}

    def to_model(self, model_class: Any = None, **kwargs: Any) -> Any:
        """A transformers model holding the edited weights (small models: the state dict is built in memory)."""
        import tempfile

        import transformers

        cls = model_class
        if cls is None:
            arch = (self.base.checkpoint.config.get("architectures") or [None])[0]
            cls = getattr(transformers, arch, None) if arch else None
            cls = cls or transformers.AutoModel
        model = cls.from_pretrained(str(self.base.checkpoint.path), **kwargs)
        edited = self.state_dict()
        own = model.state_dict()
        if set(edited) <= set(own):
            with torch.no_grad():
                for n, t in edited.items():
                    own[n].copy_(t)
            return model
        # transformers renames some checkpoint tensors on load (e.g. fused MoE experts): let it.
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(Path(tmp) / "model", progress=False)
            return cls.from_pretrained(str(Path(tmp) / "model"), **kwargs)

    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        overwrite: bool = False,
        max_shard_size: int | str = "5GB",
        progress: bool = True,
        workers: int | None = None,
    ) -> Path:
        """Write a complete model folder (weights, config, tokenizer); it appears only when finished."""
        base = self.base.checkpoint
        scales = self._prepare(progress)
        infos = {n: base.info(n) for n in base.names()}
        norms: dict[str, tuple[float, float]] = {}
        with staged_folder(save_directory, overwrite) as tmp:
            writer = ShardedWriter(tmp, infos, max_shard_size, metadata={"hf_lines": "LiNeS"})
            try:
                stream(
                    writer.order,
                    lambda n: self.tensor(n, scales[n], norms),
                    writer.write,
                    sizes={n: i.nbytes for n, i in infos.items()},
                    desc=f"LiNeS {self.method.name}",
                    workers=workers,
                    progress=progress,
                )
                writer.close()
            except BaseException:
                writer.abort()
                raise
            copy_support_files(base.path, tmp)
            (tmp / "hf_lines.json").write_text(json.dumps(self.describe(), indent=2) + "\n")
        self.tensor_norms = norms
        return Path(save_directory).expanduser().resolve()

    def describe(self) -> dict[str, Any]:
        """What was done, for the saved record and the model card (no tokens, no absolute secrets)."""
        from . import __version__

        return {
            "hf_lines_version": __version__,
            "base_model": _ref_record(self.base),
            "models": [{**_ref_record(m), "weight": m.weight} for m in self.models],
            "method": self.method.describe(),
            "lines": {
                "alpha": self.lines.alpha,
                "beta": self.lines.beta,
                "policy": self.lines.policy,
                "stacks": self.lines.stacks,
                "towers": [{"name": t.name, "num_blocks": t.num_blocks} for t in self.layer_map.towers],
            },
        }


def _open(spec: str | Path, *, token: str | bool | None, weight: float = 1.0) -> Parent:
    ref = ModelRef.parse(spec)
    path = resolve(spec, token=token)
    return Parent(ref, Checkpoint(path, label=str(spec)), weight)


def _ref_record(p: Parent) -> dict[str, Any]:
    if p.ref.is_hub:
        return {"repo_id": p.ref.repo_id, "revision": p.ref.revision, "path": None}
    return {"repo_id": None, "revision": None, "path": str(p.checkpoint.path)}
