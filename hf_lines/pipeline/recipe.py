"""Merge recipes: a YAML file that says which models to merge, how, and with which LiNeS schedule.

Schema (every key but ``base_model`` and ``models`` is optional)::

    base_model: org/base@v1.0          # folder or Hub repo id[@revision]: theta_0
    models:                            # the fine-tunes of base_model to merge
      - model: ./finetuned-a           # folder or Hub repo id[@revision]
        weight: 1.0                    # w_t, scales the task vector (default 1.0)
        revision: null                 # Hub revision; or write it as repo@revision
      - ./finetuned-b                  # a bare string is {model: ./finetuned-b}
    method: ties                       # see `hf_lines.core.methods.METHODS` (default task_arithmetic)
    method_options:                    # (or `parameters`) the method's options: the fields of its config
      density: 0.2
    lines:                             # LiNeS: lambda(i) = alpha + beta * i / (L - 1)
      alpha: auto                      # number, or auto = (1/N) ||sum tau||_1 / ||tau_MTL||_1
      beta: 0.5                        # 0 (default) = one constant lambda = alpha: no LiNeS
      policy: paper                    # non-block tensors: paper (alpha) | depth
      stacks: chain                    # chain | separate
      allow_large_lambda: false        # true lifts the bound |lambda| <= 100 (alpha, beta must be finite)
    dtype: bfloat16                    # output dtype (default: the base's)
    output:
      max_shard_size: 5GB

``lines: false`` (or leaving ``lines`` out) means no LiNeS: lambda = 1 everywhere, so
``method: soup`` is the plain average of the checkpoints. Local paths are taken relative
to the working directory. A merged folder holds the recipe that made it as
``hf_lines_recipe.yaml``, with local paths made absolute; it never holds a token.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
import yaml

from hf_lines.pipeline.yaml_schema import (YamlDocument, check_mapping, path_like, recipe_number, show_value,
                                           string_value)
from hf_lines.errors import OptionError, RecipeError, writing
from hf_lines.core.layers.map import POLICIES
from hf_lines.options import MIN_SHARD_SIZE, check_schedule, parse_size

if TYPE_CHECKING:
    from hf_lines.pipeline.merger import LinesMerger

RECIPE_FILE = "hf_lines_recipe.yaml"
STACK_MODES = ("chain", "separate")
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "half": "float16"}

_TOP_KEYS = ("base_model", "models", "method", "method_options", "parameters", "lines", "dtype", "output")
_MODEL_KEYS = ("model", "weight", "revision")
_LINES_KEYS = ("alpha", "beta", "policy", "stacks", "allow_large_lambda")
_OUTPUT_KEYS = ("max_shard_size",)


@dataclass
class ModelSpec:
    """One fine-tuned model: where it is and its weight w_t."""

    model: str
    weight: float = 1.0
    revision: str | None = None

    @property
    def spec(self) -> str:
        """What ``LinesMerger.from_pretrained`` takes: ``model`` or ``model@revision``."""
        return f"{self.model}@{self.revision}" if self.revision else self.model

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "weight": self.weight}
        if self.revision:
            out["revision"] = self.revision
        return out


@dataclass
class LinesSpec:
    """The LiNeS schedule; beta = 0 is one constant lambda = alpha."""

    alpha: float | str = 1.0
    beta: float = 0.0
    policy: str = "paper"
    stacks: str = "chain"
    allow_large_lambda: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"alpha": self.alpha, "beta": self.beta, "policy": self.policy, "stacks": self.stacks}
        if self.allow_large_lambda:  # written only when set: recipes without it stay as they were
            out["allow_large_lambda"] = True
        return out


@dataclass
class OutputSpec:
    max_shard_size: int | str = "5GB"

    def to_dict(self) -> dict[str, Any]:
        return {"max_shard_size": self.max_shard_size}


@dataclass
class Recipe(YamlDocument):
    """A validated merge recipe; ``Recipe.load(path)``, ``Recipe.from_dict(d)``, ``to_yaml()``."""

    base_model: str
    models: list[ModelSpec]
    method: str = "task_arithmetic"
    method_options: dict[str, Any] = field(default_factory=dict)
    lines: LinesSpec | None = None
    dtype: str | None = None
    output: OutputSpec = field(default_factory=OutputSpec)

    # ------------------------------------------------------------------ read
    @classmethod
    def load(cls, path: str | Path, *, allow_large_lambda: bool = False) -> "Recipe":
        """Read and validate a YAML recipe file."""
        path = Path(path).expanduser()
        try:
            text = path.read_text()
        except OSError as e:
            raise RecipeError(f"cannot read the recipe {path}: {e.strerror or e}") from e
        return cls.from_yaml(text, source=str(path), allow_large_lambda=allow_large_lambda)

    @classmethod
    def from_yaml(cls, text: str, source: str = "recipe", *, allow_large_lambda: bool = False) -> "Recipe":
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise RecipeError(f"{source}: not valid YAML ({e})") from e
        if data is None:
            raise RecipeError(f"{source}: the recipe is empty; it needs at least base_model and models")
        return cls.from_dict(data, allow_large_lambda=allow_large_lambda)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, allow_large_lambda: bool = False) -> "Recipe":
        """Validate a recipe mapping; errors name the key path, e.g. ``recipe.models[1].weight``.

        ``allow_large_lambda=True`` acts as ``lines: {allow_large_lambda: true}`` (and sets it).
        """
        check_mapping(data, "recipe", _TOP_KEYS)
        if "method_options" in data and "parameters" in data:
            raise RecipeError("recipe: give method_options or parameters (the same thing), not both")
        if "base_model" not in data or data["base_model"] in (None, ""):
            raise RecipeError(
                "recipe.base_model: required: the pre-trained model the fine-tunes started from "
                "(a folder or Hub repo id[@revision])"
            )
        base = path_like(data["base_model"], "recipe.base_model")
        models = _models(data.get("models"))
        method = string_value(data.get("method", "task_arithmetic"), "recipe.method")
        options_key = "parameters" if "parameters" in data else "method_options"
        options = data.get(options_key) or {}
        if not isinstance(options, Mapping):
            raise RecipeError(f"recipe.{options_key}: expected a mapping of option: value, got {show_value(options)}")
        _check_method(method, dict(options), f"recipe.{options_key}")
        recipe = cls(
            base_model=base,
            models=models,
            method=method,
            method_options=dict(options),
            lines=_lines(data.get("lines"), allow_large_lambda),
            dtype=_dtype(data.get("dtype")),
            output=_output(data.get("output")),
        )
        return recipe

    @classmethod
    def coerce(cls, value: "Recipe | Mapping[str, Any] | str | Path", *, allow_large_lambda: bool = False) -> "Recipe":
        """A Recipe from a Recipe, a mapping, or a path to a YAML file."""
        if isinstance(value, Recipe):
            if allow_large_lambda and value.lines is not None:
                value = replace(value, lines=replace(value.lines, allow_large_lambda=True))
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value, allow_large_lambda=allow_large_lambda)
        if isinstance(value, (str, Path)):
            return cls.load(value, allow_large_lambda=allow_large_lambda)
        raise RecipeError(f"expected a recipe file, mapping or Recipe, got {show_value(value)}")

    @classmethod
    def from_merger(cls, merger: "LinesMerger", max_shard_size: int | str | None = None) -> "Recipe":
        """The recipe that reproduces ``merger`` (local paths absolute, Hub models as repo@revision)."""
        lines = merger.lines
        alpha = "auto" if getattr(merger, "alpha_setting", None) == "auto" else float(lines.alpha)
        dtype = getattr(merger, "dtype", None)
        shard = max_shard_size or getattr(merger, "output_options", {}).get("max_shard_size", "5GB")
        return cls(
            base_model=_parent_spec(merger.base),
            models=[ModelSpec(_parent_spec(m), float(m.weight)) for m in merger.models],
            method=merger.method.name,
            method_options=merger.method.to_dict(),
            lines=LinesSpec(alpha, float(lines.beta), lines.policy, lines.stacks,
                            bool(getattr(lines, "allow_large_lambda", False))),
            dtype=str(dtype).removeprefix("torch.") if dtype is not None else None,
            output=OutputSpec(shard),
        )

    # ----------------------------------------------------------------- write
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "base_model": self.base_model,
            "models": [m.to_dict() for m in self.models],
            "method": self.method,
            "method_options": dict(self.method_options),
            "lines": self.lines.to_dict() if self.lines is not None else False,
        }
        if self.dtype is not None:
            out["dtype"] = self.dtype
        out["output"] = self.output.to_dict()
        return out


    # ------------------------------------------------------------------ use
    def merger_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``LinesMerger.from_pretrained`` for this recipe (base and models excluded)."""
        lines = self.lines or LinesSpec()
        return {
            "weights": [m.weight for m in self.models],
            "method": self.method,
            "alpha": lines.alpha,
            "beta": lines.beta,
            "policy": lines.policy,
            "stacks": lines.stacks,
            "allow_large_lambda": lines.allow_large_lambda,
            "dtype": self.dtype,
            **self.method_options,
        }


# ---------------------------------------------------------------------- validation
def _models(value: Any) -> list[ModelSpec]:
    if value is None:
        raise RecipeError("recipe.models: required: a list of the fine-tuned models to merge")
    if not isinstance(value, list) or not value:
        raise RecipeError(f"recipe.models: expected a non-empty list, got {show_value(value)}")
    out = []
    for i, item in enumerate(value):
        where = f"recipe.models[{i}]"
        if isinstance(item, (str, Path)):
            item = {"model": item}
        check_mapping(item, where, _MODEL_KEYS)
        if "model" not in item:
            raise RecipeError(f"{where}.model: required: a folder or Hub repo id[@revision]")
        model = path_like(item["model"], f"{where}.model")
        weight = recipe_number(item.get("weight", 1.0), f"{where}.weight")
        revision = item.get("revision")
        if revision is not None:
            revision = string_value(str(revision) if isinstance(revision, int) else revision, f"{where}.revision")
            if "@" in model:
                raise RecipeError(f"{where}: the revision is given twice, in model ({model!r}) and in revision")
        out.append(ModelSpec(model, weight, revision))
    return out


def _check_method(method: str, options: dict[str, Any], where: str) -> None:
    """Validate the options through the method's config dataclass (its fields are the schema)."""
    from hf_lines.core.methods import METHODS

    if method not in METHODS:
        raise RecipeError(f"recipe.method: unknown merge method {method!r}; choose one of {', '.join(sorted(METHODS))}")
    try:
        METHODS[method].from_dict(options)
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{where}: {e}") from e


def _lines(value: Any, allow_large_lambda: bool = False) -> LinesSpec | None:
    if value is None or value is False:
        return None
    if value is True:
        raise RecipeError("recipe.lines: give the schedule, e.g. {alpha: auto, beta: 0.5}, or false for no LiNeS")
    check_mapping(value, "recipe.lines", _LINES_KEYS)
    alpha = value.get("alpha", 1.0)
    if alpha != "auto":
        if isinstance(alpha, str):
            raise RecipeError(f"recipe.lines.alpha: expected a number or 'auto', got {show_value(alpha)}")
        alpha = recipe_number(alpha, "recipe.lines.alpha")
    beta = recipe_number(value.get("beta", 0.0), "recipe.lines.beta")
    policy = value.get("policy", "paper")
    if policy not in POLICIES:
        raise RecipeError(f"recipe.lines.policy: expected one of {', '.join(POLICIES)}, got {show_value(policy)}")
    stacks = value.get("stacks", "chain")
    if stacks not in STACK_MODES:
        raise RecipeError(f"recipe.lines.stacks: expected one of {', '.join(STACK_MODES)}, got {show_value(stacks)}")
    allow = value.get("allow_large_lambda", False)
    if not isinstance(allow, bool):
        raise RecipeError(f"recipe.lines.allow_large_lambda: expected true or false, got {show_value(allow)}")
    allow = allow or allow_large_lambda
    try:
        check_schedule(alpha, beta, allow_large_lambda=allow)
    except OptionError as e:
        raise RecipeError(f"recipe.lines: {e}") from None
    return LinesSpec(alpha, beta, policy, stacks, allow)


def _dtype(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.removeprefix("torch.") not in DTYPES:
        raise RecipeError(f"recipe.dtype: expected one of {', '.join(sorted(set(DTYPES.values())))}, got {show_value(value)}")
    return DTYPES[value.removeprefix("torch.")]


def _output(value: Any) -> OutputSpec:
    if value is None:
        return OutputSpec()
    check_mapping(value, "recipe.output", _OUTPUT_KEYS)
    size = value.get("max_shard_size", "5GB")
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise RecipeError(f"recipe.output.max_shard_size: expected a size like 5GB or a byte count, got {show_value(size)}")
    try:
        parse_size(size, "max_shard_size", MIN_SHARD_SIZE)
    except OptionError as e:
        raise RecipeError(f"recipe.output.{e}") from None
    return OutputSpec(size)


def _parent_spec(parent: Any) -> str:
    ref = parent.ref
    if ref.is_hub:
        return f"{ref.repo_id}@{ref.revision}" if ref.revision else ref.repo_id
    return str(Path(parent.checkpoint.path).expanduser().resolve())


# ---------------------------------------------------------------------- output
def write_output_recipe(merger: "LinesMerger", folder: Path, max_shard_size: int | str) -> Path:
    """Save the recipe that reproduces ``merger``'s output in ``folder``; fix the config's dtype if overridden."""
    from hf_lines.version import __version__

    header = f"Made by hf-lines {__version__}; `hf-lines merge {RECIPE_FILE} -o OUT` makes it again."
    if getattr(merger, "auto_alpha", None) is not None:
        header += f"\nalpha: auto resolved to {merger.lines.alpha!r}."
    path = Recipe.from_merger(merger, max_shard_size).save(folder / RECIPE_FILE, header)
    config = folder / "config.json"
    if merger.dtype is not None and config.exists():
        data = json.loads(config.read_text())
        keys = [k for k in ("dtype", "torch_dtype") if k in data] or ["dtype"]
        data.update({k: str(merger.dtype).removeprefix("torch.") for k in keys})
        with writing(config):
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def output_dtype(dtype: "torch.dtype | str | None") -> "torch.dtype | None":
    """A torch dtype from a name (float32, bfloat16, float16, or an alias such as bf16); None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = DTYPES.get(str(dtype).removeprefix("torch."))
    if name is None:
        raise OptionError(f"unknown output dtype {dtype!r}; use one of {sorted(set(DTYPES.values()))}")
    return getattr(torch, name)
