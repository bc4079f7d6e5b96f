"""``RewardedSoup``: rewarded soups of policies fine-tuned from one SFT model, with or without LiNeS.

theta(w) = theta_SFT + lambda(l) * sum_k w_k (theta_k - theta_SFT), for each weight vector w
of a sweep (two policies: w = (lam, 1 - lam)); lambda(l) = alpha + beta * l / (L - 1) with
LiNeS, 1 for the plain rewarded soup.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from hf_lines.errors import OptionError, OutputExistsError, writing
from hf_lines.core.layers import LayerMap
from hf_lines.core.layers.infer import StackMode
from hf_lines.core.layers.map import Policy
from hf_lines.core.lines import LinesConfig
from hf_lines.options import check_run_options, check_schedule
from hf_lines.io.support_files import copy_support_files
from hf_lines.io.staging import OutputLock, absolute, check_not_input, input_paths, staged_output
from hf_lines.pipeline.executor import DEFAULT_MEMORY_BUDGET
from hf_lines.pipeline.plan import Plan, execute
from hf_lines.soups.cards import FORMULA, soup_recipe, write_output_files
from hf_lines.soups.disk import DEFAULT_RESERVE, Passes, check_passes, free_bytes, plan_groups
from hf_lines.soups.index import SoupIndex
from hf_lines.soups.inputs import SoupInputs, open_inputs
from hf_lines.soups.lora import adapter_output_blocker, soup_adapter
from hf_lines.soups.outputs import SoupOutput, plan_outputs
from hf_lines.soups.recipe import SOUP_RECIPE_FILE, SoupRecipe
from hf_lines.soups.weights import parse_lambdas, parse_weights, weights_for_lambdas

log = logging.getLogger(__name__)
OUTPUT_FORMATS = ("auto", "adapter", "model")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class RewardedSoup:
    """A sweep of rewarded soups over one SFT model and its policies.

    >>> soup = RewardedSoup.from_pretrained("sft", ["ppo-helpful", "ppo-harmless"], alpha=0.5, beta=0.5)
    >>> soup.save_pretrained("soups", lambdas="0:1:11")  # doctest: +SKIP
    """

    def __init__(self, inputs: SoupInputs, lines: LinesConfig | None, layer_map: LayerMap):
        self.inputs = inputs
        self.lines = lines  # None: the plain rewarded soup (lambda = 1)
        self.layer_map = layer_map
        self.defaults: dict[str, Any] = {}  # sweep settings from a recipe
        self.index: SoupIndex | None = None  # the last save_pretrained's index

    # ----------------------------------------------------------------- build
    @classmethod
    def from_pretrained(
        cls,
        sft: str | Path,
        policies: Sequence[str | Path],
        *,
        alpha: float | None = None,
        beta: float | None = None,
        policy: Policy = "paper",
        stacks: StackMode = "chain",
        sft_base: str | Path | None = None,
        token: str | bool | None = None,
        allow_large_lambda: bool = False,
    ) -> "RewardedSoup":
        """Open the SFT model and the policies (folders or Hub ``repo@revision``); reads headers only.

        ``sft`` is a full model, or a LoRA adapter on ``sft_base`` (default: its adapter_config's
        base). Each policy is a full model or a LoRA adapter over theta_SFT. ``alpha`` and ``beta``
        turn LiNeS on (give both); without them the soup is the plain rewarded soup.
        ``allow_large_lambda`` lifts the bound on |lambda| (``hf_lines.options.MAX_LAMBDA``).
        """
        if (alpha is None) != (beta is None):
            raise OptionError("give both alpha and beta for the LiNeS soup, or neither for the plain rewarded soup")
        if alpha == "auto":
            raise OptionError("alpha='auto' is for multi-task merges; give a number for a rewarded soup")
        lines = (LinesConfig(alpha, beta, policy, stacks, allow_large_lambda)  # type: ignore[arg-type]
                 if alpha is not None else None)
        inputs = open_inputs(sft, policies, sft_base=sft_base, token=token)
        reader = inputs.weights_reader
        layer_map = LayerMap.from_names(reader.names(), reader.config, stacks)
        return cls(inputs, lines, layer_map)

    @classmethod
    def from_recipe(cls, recipe: "SoupRecipe | dict[str, Any] | str | Path", *, token: str | bool | None = None,
                    allow_large_lambda: bool = False) -> "RewardedSoup":
        """Build from a soup recipe (``hf_lines.soups.recipe``); its sweep becomes the default of ``save_pretrained``.

        ``allow_large_lambda=True`` (CLI ``--allow-large-lambda``) acts as the recipe's
        ``lines: {allow_large_lambda: true}``.
        """
        spec = SoupRecipe.coerce(recipe, allow_large_lambda=allow_large_lambda)
        lines = spec.lines or {}
        soup = cls.from_pretrained(spec.sft, spec.policies, alpha=lines.get("alpha"), beta=lines.get("beta"),
                                   policy=lines.get("policy", "paper"), stacks=lines.get("stacks", "chain"),
                                   sft_base=spec.sft_base, token=token,
                                   allow_large_lambda=bool(lines.get("allow_large_lambda", False)))
        soup.defaults = {"lambdas": spec.lambdas, "weights": spec.weights, "include_plain": spec.include_plain,
                         "output": spec.output_format, "max_shard_size": spec.max_shard_size}
        return soup

    # ----------------------------------------------------------------- plan
    @property
    def num_policies(self) -> int:
        return len(self.inputs.policies)

    def weight_vectors(self, lambdas: Any = None, weights: Any = None) -> list[tuple[float, ...]]:
        """The sweep's weight vectors from ``lambdas`` (``"0:1:11"``, a list, ...) or explicit ``weights``."""
        if lambdas is None and weights is None:
            lambdas, weights = self.defaults.get("lambdas"), self.defaults.get("weights")
        if (lambdas is None) == (weights is None):
            raise OptionError("give lambdas (one or two policies) or weights (one vector per output), not both")
        if weights is not None:
            return parse_weights(weights, self.num_policies)
        return weights_for_lambdas(parse_lambdas(lambdas), self.num_policies)

    def outputs(self, lambdas: Any = None, weights: Any = None, include_plain: bool | None = None) -> list[SoupOutput]:
        """The outputs a sweep writes: the main variant (LiNeS if configured), plus the plain baseline if asked."""
        if include_plain is None:
            include_plain = bool(self.defaults.get("include_plain", False))
        return plan_outputs(self.weight_vectors(lambdas, weights), self.lines, include_plain)

    def output_format(self, requested: str = "auto") -> str:
        """``adapter`` when every policy (and an adapter SFT) is plain LoRA and ``requested`` allows it, else ``model``."""
        if requested not in OUTPUT_FORMATS:
            raise OptionError(f"unknown output format {requested!r}; use one of {list(OUTPUT_FORMATS)}")
        if requested != "auto":
            return requested
        blocker = adapter_output_blocker(self.inputs)
        if blocker is not None:
            log.info("%s: writing full models", blocker)
            return "model"
        return "adapter"

    def load_on(self) -> str:
        """The model an adapter output is loaded on: theta_SFT's folder, or the base under an SFT adapter."""
        return str(Path(self.inputs.weights_reader.path).expanduser().resolve())

    def tokenizer_source(self) -> str:
        """The folder the policies' tokenizer comes from (the SFT's, else the base's)."""
        candidates = [self.inputs.sft.folder] + ([self.inputs.base.folder] if self.inputs.base else [])
        for folder in candidates:
            if any((folder / f).is_file() for f in TOKENIZER_FILES):
                return str(folder.expanduser().resolve())
        return self.load_on()

    # ----------------------------------------------------------------- in memory
    def state_dict(self, lam: float | None = None, *, weights: Sequence[float] | None = None,
                   lines: bool = True) -> dict[str, torch.Tensor]:
        """theta(w) in memory (small models, tests); ``lines=False`` gives the plain soup."""
        w = tuple(weights) if weights is not None else weights_for_lambdas([lam], self.num_policies)[0]  # type: ignore[list-item]
        plan = self.plan(plan_outputs([w], self.lines if lines else None, False))
        return {name: plan.tensor(0, name) for name in plan.names()}

    def plan(self, outs: Sequence[SoupOutput]) -> Plan:
        """The run that writes ``outs``: theta_SFT and the policies in, one task-arithmetic output each."""
        inputs = self.inputs
        return Plan(inputs.sft.checkpoint, tuple(p.checkpoint for p in inputs.policies),
                    tuple(o.plan_output(self.layer_map) for o in outs))

    # ----------------------------------------------------------------- write
    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        lambdas: Any = None,
        weights: Any = None,
        include_plain: bool | None = None,
        output: str | None = None,
        overwrite: bool = False,
        max_shard_size: int | str | None = None,
        workers: int | None = None,
        progress: bool = True,
        passes: Passes = "auto",
        keep: bool = True,
        on_output: Callable[[dict[str, Any]], None] | None = None,
        disk_reserve: int = DEFAULT_RESERVE,
        norms: bool = True,
        card_template: str | Path | None = None,
        card_data: dict[str, Any] | None = None,
    ) -> SoupIndex:
        """Write one output folder per weight vector (and variant) into ``save_directory``, plus ``soup.json``.

        Adapter outputs (LoRA policies) are exact concatenated-rank adapters, written in
        milliseconds. Full outputs are streamed: every output of a group from one read pass
        over the inputs; all outputs form one group when the free disk holds them
        (``passes='auto'``). ``on_output(entry)`` is called as each output appears (entry:
        its ``soup.json`` record plus ``path``); with ``keep=False`` the output is deleted
        right after, so a sweep larger than the disk runs in groups that fit.
        """
        from hf_lines.publish.card import check_card_fields, check_card_template

        check_card_fields(card_data)
        outs = self.outputs(lambdas, weights, include_plain)
        fmt = self.output_format(output or self.defaults.get("output", "auto"))
        if max_shard_size is None:  # 0 is a (bad) size, not "use the default"
            max_shard_size = self.defaults.get("max_shard_size") or "5GB"
        # every option that can be wrong fails here, before a tensor is read or a folder is made
        check_run_options(max_shard_size=max_shard_size, workers=workers)
        check_passes(passes)
        if self.lines is not None:
            check_schedule(self.lines.alpha, self.lines.beta, allow_large_lambda=self.lines.allow_large_lambda)
        check_card_template(card_template, lambda folder: write_output_files(
            self, outs[0], folder, fmt, max_shard_size=max_shard_size, template=card_template, card_data=card_data,
            plot=False))
        outdir = absolute(save_directory)
        inputs = self.input_paths(card_template)
        check_not_input(outdir, inputs)
        with OutputLock(outdir):  # one sweep at a time writes soup.json and the outputs of a folder
            return self._save(outdir, outs, fmt, max_shard_size, inputs, overwrite=overwrite, workers=workers,
                              progress=progress, passes=passes, keep=keep, on_output=on_output,
                              disk_reserve=disk_reserve, norms=norms, card_template=card_template,
                              card_data=card_data)

    def input_paths(self, *extra: str | Path | None) -> list[Path]:
        """Every folder and file the sweep reads: no output may be, hold or lie inside one of them."""
        inputs = self.inputs
        return input_paths(inputs.sft.checkpoint, inputs.base.checkpoint if inputs.base else None,
                           *(p.checkpoint for p in inputs.policies), *extra)

    def _save(self, outdir: Path, outs: list[SoupOutput], fmt: str, max_shard_size: int | str, inputs: list[Path], *,
              overwrite: bool, workers: int | None, progress: bool, passes: Passes, keep: bool,
              on_output: Callable[[dict[str, Any]], None] | None, disk_reserve: int, norms: bool,
              card_template: str | Path | None, card_data: dict[str, Any] | None) -> SoupIndex:
        existing = [o.name for o in outs if (outdir / o.name).exists()]
        if existing and not overwrite:
            raise OutputExistsError(f"{outdir} already holds {', '.join(existing)}; choose another folder or pass --overwrite")
        index = SoupIndex.load(outdir) if (outdir / "soup.json").is_file() else SoupIndex(outdir)
        self.index = index
        info = self.index_info(fmt)
        outdir.mkdir(parents=True, exist_ok=True)
        sweep = soup_recipe(self, [o for o in outs if o.variant == outs[0].variant], fmt, max_shard_size)
        sweep.include_plain = any(o.variant != outs[0].variant for o in outs)
        sweep.save(outdir / SOUP_RECIPE_FILE, "The whole sweep; each output folder holds its own hf_lines_soup.yaml.")

        def finished(group: Sequence[SoupOutput]) -> None:
            entries = [self._entry(o, fmt, outdir, keep) for o in group]
            index.update(info, entries)
            index.save()
            for e in entries:
                if on_output is not None:
                    on_output({**e, "path": str(outdir / e["name"])})
                if not keep:
                    shutil.rmtree(outdir / e["name"], ignore_errors=True)

        files = dict(max_shard_size=max_shard_size, template=card_template, card_data=card_data)
        if fmt == "adapter":
            for o in outs:
                self._write_adapter(o, outdir / o.name, overwrite, files, inputs)
                finished([o])
            return index
        size = sum(i.nbytes for i in self.inputs.infos().values())
        groups = plan_groups(len(outs), size, free_bytes(outdir), keep=keep, passes=passes, reserve=disk_reserve)
        if len(groups) > 1:
            log.info("%d outputs of %.2f GB: %d read passes of up to %d outputs (free disk)",
                     len(outs), size / 1e9, len(groups), len(groups[0]))
        for group in groups:
            chosen = [outs[i] for i in group]
            with contextlib.ExitStack() as stack:
                tmps = [stack.enter_context(staged_output(outdir / o.name, overwrite=overwrite, inputs=inputs))
                        for o in chosen]
                found = execute(self.plan(chosen), tmps, max_shard_size=max_shard_size, workers=workers,
                                memory_budget=DEFAULT_MEMORY_BUDGET, norms=norms, progress=progress,
                                desc=f"rewarded soup x{len(chosen)}")
                for o, tmp, nrm in zip(chosen, tmps, found):
                    self._copy_support(tmp)
                    write_output_files(self, o, tmp, fmt, norms=nrm, **files)
            finished(chosen)
        return index

    def _write_adapter(self, out: SoupOutput, target: Path, overwrite: bool, files: dict[str, Any],
                       inputs: list[Path]) -> None:
        from safetensors.torch import save_file

        tensors, config = soup_adapter(self.inputs, out.weights, out.scales(self.layer_map))
        sft_adapter = self.inputs.sft_adapter
        policies = self.inputs.policy_adapters() or []
        support = sft_adapter.path if sft_adapter is not None else policies[0].path
        keep_config = sft_adapter is None and len(policies) == 1  # one adapter: its config byte for byte
        with staged_output(target, overwrite=overwrite, inputs=inputs) as tmp:
            copy_support_files(support, tmp)  # tokenizer files an adapter may carry, and its adapter_config.json
            if not keep_config:
                config.save_pretrained(str(tmp))
            # One metadata key: safetensors writes metadata from a hash map, so two keys come out in either order
            # and the same adapter would not always be the same bytes. hf_lines.json says who made it.
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "adapter_model.safetensors"),
                      metadata={"format": "pt"})
            # Drop the factors before the card: matplotlib can leave the calling frames in a reference cycle
            # (a caught ImportError's traceback), which would keep every output's tensors until the next gc.
            del tensors
            write_output_files(self, out, tmp, "adapter", **files)

    def _copy_support(self, tmp: Path) -> None:
        """Config, tokenizer and generation config of theta_SFT (an SFT adapter's tokenizer files win)."""
        with writing(tmp):
            copy_support_files(Path(self.inputs.weights_reader.path), tmp)
        if self.inputs.base is not None:
            with writing(tmp):
                copied = copy_support_files(self.inputs.sft.folder, tmp)
            for name in ("adapter_config.json",):  # a full model folder must not look like an adapter
                if name in copied:
                    (tmp / name).unlink()

    def _entry(self, out: SoupOutput, fmt: str, outdir: Path, keep: bool) -> dict[str, Any]:
        folder = outdir / out.name
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else None
        return {**out.summary(), "format": fmt, "bytes": size, "kept": keep}

    def index_info(self, fmt: str) -> dict[str, Any]:
        """The sweep-wide part of ``soup.json``."""
        from hf_lines.version import __version__

        inputs = self.inputs
        return {
            "hf_lines_version": __version__,
            "kind": "rewarded_soup",
            "formula": FORMULA,
            "sft": {"spec": inputs.sft.spec, **inputs.sft.record()},
            "sft_base": {"spec": inputs.base.spec, **inputs.base.record()} if inputs.base is not None else None,
            "policies": [{"spec": p.spec, "adapter": p.is_adapter, **p.record()} for p in inputs.policies],
            "lines": ({"alpha": self.lines.alpha, "beta": self.lines.beta, "policy": self.lines.policy,
                       "stacks": self.lines.stacks} if self.lines is not None else None),
            "format": fmt,
            "load_on": self.load_on() if fmt == "adapter" else None,
            "tokenizer": self.tokenizer_source(),
        }

    def __repr__(self) -> str:
        kind = f"LiNeS alpha={self.lines.alpha:g} beta={self.lines.beta:g}" if self.lines else "plain"
        return f"RewardedSoup({self.inputs.sft.spec!r}, {self.num_policies} policies, {kind})"
