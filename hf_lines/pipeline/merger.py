"""LinesMerger: the public API. It opens the inputs, resolves the schedule and compiles to a one-output ``Plan``
(``hf_lines.pipeline.plan``), which the executor streams and the output modules write and describe."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from hf_lines.core.layers import LayerMap
from hf_lines.core.layers.infer import StackMode
from hf_lines.core.layers.map import Policy
from hf_lines.core.lines import LinesConfig
from hf_lines.core.methods import MergeMethod, get_method
from hf_lines.core.norms import BlockNorm, block_norms
from hf_lines.errors import OptionError
from hf_lines.io.file_sink import WriteMode
from hf_lines.io.staging import input_paths
from hf_lines.options import check_run_options, check_schedule, finite_number
from hf_lines.pipeline.executor import DEFAULT_MEMORY_BUDGET, check_compatible, check_finite, read_inputs
from hf_lines.pipeline.guards import check_auto_alpha
from hf_lines.pipeline.inputs import Parent, open_parent, parent_record
from hf_lines.pipeline.plan import Plan, PlanOutput
from hf_lines.pipeline.recipe import output_dtype
from hf_lines.pipeline.statistics import AutoAlpha, run_statistics

if TYPE_CHECKING:
    from hf_lines.pipeline.recipe import Recipe


class LinesMerger:
    """Edit one fine-tune or merge several with LiNeS, streaming tensor by tensor.

    >>> merger = LinesMerger.from_pretrained("base", models=["finetuned"], alpha=0.2, beta=0.8)
    >>> merger.save_pretrained("out")  # doctest: +SKIP
    """

    def __init__(
        self,
        base: Parent,
        models: Sequence[Parent],
        lines: LinesConfig | None,
        method: MergeMethod,
        layer_map: LayerMap,
        dtype: torch.dtype | str | None = None,
    ):
        if not models:
            raise OptionError("give at least one fine-tuned model")
        self.base = base
        self.models = list(models)
        self.lines = lines or LinesConfig()  # None: no LiNeS, lambda = 1
        self.alpha_setting = "auto" if self.lines.alpha == "auto" else "explicit"
        self.auto_alpha: AutoAlpha | None = None  # the numbers behind a resolved alpha = "auto"
        self.statistics: Any = None  # this merger's method statistics (``MergeMethod.new_statistics``)
        self._statistics_done = False
        self.dtype = output_dtype(dtype)
        self.output_options: dict[str, Any] = {}  # from a recipe: max_shard_size
        method.check_inputs(len(self.models))
        check_auto_alpha(self.lines.alpha, method.name, len(self.models))
        self.method = method
        self.layer_map = layer_map
        self.tensor_norms: dict[str, tuple[float, float]] = {}
        self.saved_to: Path | None = None  # the last save_pretrained output, for push_to_hub
        check_compatible(base.checkpoint, [m.checkpoint for m in models])

    # ----------------------------------------------------------------- build
    @classmethod
    def from_pretrained(
        cls,
        base: str | Path,
        models: Sequence[str | Path],
        *,
        alpha: float | str = 1.0,
        beta: float = 0.0,
        method: str = "task_arithmetic",
        weights: Sequence[float] | None = None,
        policy: Policy = "paper",
        stacks: StackMode = "chain",
        dtype: torch.dtype | str | None = None,
        token: str | bool | None = None,
        allow_large_lambda: bool = False,
        **method_options: Any,
    ) -> "LinesMerger":
        """Open the base and fine-tuned checkpoints (folders or Hub ``repo@revision``); reads headers only.

        ``method`` names a merge method (``hf_lines.core.methods.METHODS``: task_arithmetic, mean,
        ties, dare_linear, dare_ties, consensus, soup, wise_ft, ...) and ``method_options`` are
        its options. ``alpha="auto"`` is the paper's (1/N) ||sum tau||_1 / ||tau_MTL||_1;
        ``beta=0`` (default) means no LiNeS, one constant lambda = alpha. ``dtype`` overrides
        the output dtype (default: the base's). ``allow_large_lambda`` lifts the bound on |lambda|
        (``hf_lines.options.MAX_LAMBDA``).
        """
        if isinstance(models, (str, Path)):
            models = [models]
        weights = list(weights) if weights is not None else [1.0] * len(models)
        if len(weights) != len(models):
            raise OptionError(f"{len(weights)} weights given for {len(models)} models")
        weights = [finite_number(w, f"weights[{i}]") for i, w in enumerate(weights)]
        # schedule and method options are checked before any file is opened
        lines = LinesConfig(alpha, beta, policy, stacks, allow_large_lambda)
        merge_method = get_method(method, **method_options)
        base_parent = open_parent(base, token=token)
        parents = [open_parent(m, token=token, weight=w, base=base_parent) for m, w in zip(models, weights)]
        layer_map = LayerMap.from_names(base_parent.checkpoint.names(), base_parent.checkpoint.config, stacks)
        return cls(base_parent, parents, lines, merge_method, layer_map, dtype=dtype)

    @classmethod
    def from_recipe(cls, recipe: "Recipe | dict[str, Any] | str | Path", *, token: str | bool | None = None,
                    allow_large_lambda: bool = False) -> "LinesMerger":
        """Build from a recipe: a YAML file path, a mapping or a ``Recipe`` (schema in ``hf_lines.pipeline.recipe``).

        ``allow_large_lambda=True`` (CLI ``--allow-large-lambda``) acts as the recipe's
        ``lines: {allow_large_lambda: true}`` and is recorded in the output's recipe.
        """
        from hf_lines.pipeline.recipe import Recipe

        spec = Recipe.coerce(recipe, allow_large_lambda=allow_large_lambda)
        merger = cls.from_pretrained(spec.base_model, [m.spec for m in spec.models], token=token, **spec.merger_kwargs())
        merger.output_options = spec.output.to_dict()
        return merger

    def recipe(self, max_shard_size: int | str | None = None) -> str:
        """The YAML recipe that reproduces this merge (``Recipe.from_merger`` gives it as a dataclass)."""
        from hf_lines.pipeline.recipe import Recipe

        return Recipe.from_merger(self, max_shard_size).to_yaml()

    # ----------------------------------------------------------------- query
    @property
    def weights(self) -> list[float]:
        return [m.weight for m in self.models]

    def scales(self) -> dict[str, float]:
        """Tensor name -> lambda applied to its (merged) task vector (alpha = "auto" is resolved first: a read pass)."""
        self._resolve_alpha()
        return self.layer_map.scales(self.lines.alpha, self.lines.beta, self.lines.policy)

    def block_scales(self) -> list[tuple[str, int, int, float]]:
        """(tower, block, L, lambda) for every block, shallow to deep."""
        from hf_lines.core.schedule import block_scale

        self._resolve_alpha()
        return [
            (t.name, i, t.num_blocks, block_scale(i, t.num_blocks, self.lines.alpha, self.lines.beta))
            for t in self.layer_map.towers
            for i in range(t.num_blocks)
        ]

    # ----------------------------------------------------------------- run
    def _resolve_alpha(self) -> None:
        if self.lines.alpha == "auto":
            self.compute_statistics(progress=False)

    def compute_statistics(self, progress: bool = False, workers: int | None = None) -> None:
        """The method's whole-model statistics and auto alpha, once for these inputs (see ``hf_lines.pipeline.statistics``).

        They go to ``self.statistics`` and ``self.auto_alpha``, never into the method object,
        which other merges may share.
        """
        if self._statistics_done:
            return
        base, models = self.base.checkpoint, [m.checkpoint for m in self.models]
        self.statistics = self.method.new_statistics(len(models))
        auto = run_statistics(
            base.names(),
            lambda n: read_inputs(n, base, models, check=False),
            self.method,
            self.weights,
            stats=self.statistics,
            auto_alpha=self.lines.alpha == "auto",
            progress=progress,
            workers=workers,
            sizes={n: base.info(n).nbytes for n in base.names()},
            check=lambda n, b, ms: check_finite(n, [base, *models], [b, *ms]),
        )
        if auto is not None:
            self.auto_alpha = auto
            try:  # the resolved schedule must pass the same checks as a given one, before any weight is written
                self.lines = replace(self.lines, alpha=auto.value)
            except OptionError as e:
                raise OptionError(f"alpha = 'auto' resolved to {auto.value!r} from the task vectors: {e}") from None
        self._statistics_done = True

    def output(self) -> PlanOutput:
        """This merge as one output of a plan (its statistics, once computed, included)."""
        return PlanOutput(self.method, tuple(self.weights), dtype=self.dtype, statistics=self.statistics)

    def plan(self, progress: bool = False, workers: int | None = None) -> Plan:
        """The run ``save_pretrained`` streams: the statistics pass (if the method or auto alpha needs it) first."""
        self.compute_statistics(progress, workers)
        return self._plan_of(replace(self.output(), scales=self.scales()))

    def _plan_of(self, output: PlanOutput) -> Plan:
        return Plan(self.base.checkpoint, tuple(m.checkpoint for m in self.models), (output,))

    def tensor(self, name: str, scale: float, norms: dict[str, tuple[float, float]] | None = None,
               device: torch.device | None = None) -> torch.Tensor:
        """The edited tensor ``name`` at lambda ``scale`` (reads only that tensor of each input), on the CPU.

        Its task-vector norms go into ``norms``; ``device`` is where the arithmetic runs.
        """
        return self._plan_of(self.output()).tensor(0, name, norms=norms, device=device, scale=scale)

    def block_norms(self) -> list[BlockNorm]:
        """Per-block ||tau|| before and after scaling, from the last ``save_pretrained``."""
        if not self.tensor_norms:
            raise RuntimeError("no norms yet: call save_pretrained() first")
        return block_norms(self.layer_map, self.tensor_norms, self.scales())

    def state_dict(self, progress: bool = False) -> dict[str, torch.Tensor]:
        """The whole edited state dict in memory: for small models and tests."""
        self.compute_statistics(progress)
        scales = self.scales()
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
        max_shard_size: int | str | None = None,
        progress: bool = True,
        workers: int | None = None,
        memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
        device: str | torch.device | None = None,
        write_mode: WriteMode = "auto",
        output: str = "model",
        card_template: str | Path | None = None,
        card_data: dict[str, Any] | None = None,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        **push_options: Any,
    ) -> Path:
        """Write a complete model folder (weights, config, tokenizer); it appears only when finished.

        ``output="adapter"`` writes a PEFT LoRA adapter instead (inputs: LoRA adapters, linear
        method); ``"auto"`` picks it when that is possible (see ``hf_lines.adapters``).

        The folder gets a model card (README.md + lines_schedule.png, see ``hf_lines.publish.card``):
        ``card_template`` is a Jinja template path, ``card_data`` extra or overriding metadata.
        ``push_to_hub=True`` then uploads it to ``repo_id``; ``push_options`` are those of ``push_to_hub``.
        ``memory_budget`` (bytes) caps the inputs and outputs of the tensors in flight (one tensor
        always runs, whatever its size); ``workers`` is the number of compute threads;
        ``device`` is where the arithmetic runs ("cuda", "auto" for accelerate's choice; default CPU).
        ``write_mode`` is how weights files are written (see ``hf_lines.io.file_sink``): "auto" uses
        direct I/O where the filesystem allows it, "buffered" the page cache.
        """
        from hf_lines.pipeline.adapter_output import resolve_output_format, save_merger_adapter
        from hf_lines.pipeline.model_output import save_merger_model
        from hf_lines.publish.card import check_card_fields
        from hf_lines.publish.hub import check_push_options, check_push_request

        check_card_fields(card_data)  # bad card fields, options or repo id fail now, not after hours of streaming
        check_push_options(push_options)
        if push_to_hub:
            check_push_request(repo_id)
        # and so does every other option, before the first byte of a tensor is read
        if max_shard_size is None:  # 0 is a (bad) size, not "use the default"
            max_shard_size = self.output_options.get("max_shard_size") or "5GB"
        check_run_options(max_shard_size=max_shard_size, workers=workers, memory_budget=memory_budget, device=device,
                          write_mode=write_mode)
        check_schedule(self.lines.alpha, self.lines.beta, allow_large_lambda=self.lines.allow_large_lambda)
        if resolve_output_format(self, output) == "adapter":
            out = save_merger_adapter(self, save_directory, overwrite=overwrite, progress=progress,
                                      card_template=card_template, card_data=card_data,
                                      model_name=repo_id if push_to_hub else None)
            return self._finish_save(out, repo_id if push_to_hub else None, push_options)
        out = save_merger_model(self, save_directory, overwrite=overwrite, max_shard_size=max_shard_size,
                                progress=progress, workers=workers, memory_budget=memory_budget, device=device,
                                write_mode=write_mode, card_template=card_template, card_data=card_data,
                                model_name=repo_id if push_to_hub else Path(save_directory).name)
        return self._finish_save(out, repo_id if push_to_hub else None, push_options)

    def input_paths(self, *extra: str | Path | None) -> list[Path]:
        """Every folder and file this merge reads: an output may not be, hold or lie inside any of them."""
        return input_paths(self.base.checkpoint, *[m.checkpoint for m in self.models], *extra)

    def _finish_save(self, out: Path, repo_id: str | None, push_options: dict[str, Any]) -> Path:
        self.saved_to = out
        if repo_id is not None:
            self.push_to_hub(repo_id, save_directory=out, **push_options)
        return out

    def push_to_hub(
        self,
        repo_id: str,
        *,
        save_directory: str | Path | None = None,
        private: bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        commit_message: str | None = None,
        token: str | bool | None = None,
        **save_options: Any,
    ) -> Any:
        """Upload the output folder to the Hub model repo ``repo_id`` (created if needed) in one commit.

        The folder is ``save_directory``, else the last ``save_pretrained`` output; when it does not exist
        yet the model is saved there first (default ``./<repo name>``, with ``save_options``), so a complete
        local copy always exists and is kept if the upload fails: PushError then gives the ``hf-lines push``
        command that retries. The token comes from ``token``, ``HF_TOKEN`` or the login cache and is never
        written to any file or log. Returns huggingface_hub's ``CommitInfo`` (``commit_url``, ``pr_url``).
        """
        from hf_lines.publish.hub import check_push_request, push_folder

        check_push_request(repo_id)
        folder = Path(save_directory).expanduser() if save_directory is not None else getattr(self, "saved_to", None)
        if folder is None or not folder.exists():
            folder = self.save_pretrained(folder or Path(repo_id.split("/")[-1]), **save_options)
        message = commit_message or (
            f"Upload LiNeS {self.method.name} (alpha={self.lines.alpha:g}, beta={self.lines.beta:g}) made with hf-lines"
        )
        return push_folder(folder, repo_id, private=private, revision=revision, create_pr=create_pr,
                           commit_message=message, token=token)

    def describe(self) -> dict[str, Any]:
        """What was done, for the saved record and the model card (no tokens, no absolute secrets)."""
        from hf_lines.version import __version__

        return {
            "hf_lines_version": __version__,
            "base_model": parent_record(self.base),
            "models": [{**parent_record(m), "weight": m.weight} for m in self.models],
            "method": self.method.describe(),
            **({"method_statistics": record} if (record := self.method.statistics_record(self.statistics)) else {}),
            **({"dtype": str(self.dtype).removeprefix("torch.")} if self.dtype is not None else {}),
            "lines": {
                "alpha": self.lines.alpha,  # the resolved value once alpha = "auto" has been computed
                "alpha_setting": self.alpha_setting,
                **({"auto_alpha": self.auto_alpha.as_dict()} if self.auto_alpha is not None else {}),
                "beta": self.lines.beta,
                "policy": self.lines.policy,
                "stacks": self.lines.stacks,
                **({"allow_large_lambda": True} if self.lines.allow_large_lambda else {}),
                "towers": [{"name": t.name, "num_blocks": t.num_blocks} for t in self.layer_map.towers],
            },
        }
