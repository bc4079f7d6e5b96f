"""Soup recipes: a YAML file that says which policies to interpolate, at which weights, with which schedule.

Schema (``sft`` and ``policies`` are required; ``lambdas`` and ``weights`` exclude each other)::

    sft: ./llama-7b-alpaca             # folder or Hub repo id[@revision]: theta_SFT (full model or LoRA adapter)
    sft_base: null                     # the base under an adapter SFT model (default: its adapter_config)
    policies: [./ppo-helpful, ./ppo-harmless]   # full models or LoRA adapters over theta_SFT
    lambdas: [0.0, 0.1, 0.2]           # two policies: weights (lam, 1 - lam); or "0:1:11"
    weights: [[0.2, 0.3, 0.5]]         # any number of policies: one weight vector per output
    lines: {alpha: 0.5, beta: 0.5, policy: paper, stacks: chain}   # or false: plain rewarded soup
                                       # (allow_large_lambda: true lifts the bound |lambda| <= 100)
    include_plain: false               # with lines: also write the plain soup of every weight vector
    output_format: auto                # auto | adapter | model
    max_shard_size: 5GB

Every output folder holds the recipe of that one output as ``hf_lines_soup.yaml``;
``hf-lines soup --recipe hf_lines_soup.yaml -o OUT`` makes it again.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping

import yaml

from hf_lines.errors import OptionError, RecipeError
from hf_lines.options import MIN_SHARD_SIZE, check_schedule, parse_size
from hf_lines.pipeline.yaml_schema import YamlDocument, check_mapping, path_like, recipe_number, show_value
from hf_lines.soups.weights import parse_lambdas, parse_weights

SOUP_RECIPE_FILE = "hf_lines_soup.yaml"
_KEYS = ("sft", "sft_base", "policies", "lambdas", "weights", "lines", "include_plain", "output_format", "max_shard_size")
_LINES_KEYS = ("alpha", "beta", "policy", "stacks", "allow_large_lambda")


@dataclass
class SoupRecipe(YamlDocument):
    """A validated soup recipe: ``SoupRecipe.load(path)``, ``from_dict``, ``to_yaml``."""

    flow_style: ClassVar[bool | None] = None  # weight vectors on one line each
    sft: str
    policies: list[str]
    lambdas: list[float] | None = None
    weights: list[list[float]] | None = None
    lines: dict[str, Any] | None = None
    sft_base: str | None = None
    include_plain: bool = False
    output_format: str = "auto"
    max_shard_size: int | str = "5GB"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, *, allow_large_lambda: bool = False) -> "SoupRecipe":
        path = Path(path).expanduser()
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as e:
            raise RecipeError(f"cannot read the soup recipe {path}: {e.strerror or e}") from e
        except yaml.YAMLError as e:
            raise RecipeError(f"{path}: not valid YAML ({e})") from e
        return cls.from_dict(data, allow_large_lambda=allow_large_lambda)

    @classmethod
    def coerce(cls, value: "SoupRecipe | Mapping[str, Any] | str | Path", *,
               allow_large_lambda: bool = False) -> "SoupRecipe":
        if isinstance(value, SoupRecipe):
            if allow_large_lambda and value.lines:
                value = replace(value, lines={**value.lines, "allow_large_lambda": True})
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value, allow_large_lambda=allow_large_lambda)
        return cls.load(value, allow_large_lambda=allow_large_lambda)

    @classmethod
    def from_dict(cls, data: Any, *, allow_large_lambda: bool = False) -> "SoupRecipe":
        """Validate; errors name the key, e.g. ``soup.lines.beta: expected a number``.

        ``allow_large_lambda=True`` acts as ``lines: {allow_large_lambda: true}`` (and sets it).
        """
        check_mapping(data, "soup", _KEYS)
        for key in ("sft", "policies"):
            if data.get(key) in (None, "", []):
                raise RecipeError(f"soup.{key}: required")
        sft = path_like(data["sft"], "soup.sft")
        policies = data["policies"]
        if not isinstance(policies, list):
            raise RecipeError(f"soup.policies: expected a list of folders or Hub ids, got {show_value(policies)}")
        policies = [path_like(p, f"soup.policies[{i}]") for i, p in enumerate(policies)]
        if ("lambdas" in data) == ("weights" in data):
            raise RecipeError("soup: give either lambdas (two policies) or weights (one vector per output)")
        lambdas = weights = None
        try:
            if "lambdas" in data:
                raw = data["lambdas"]
                lambdas = parse_lambdas(raw if isinstance(raw, str) else [recipe_number(x, "soup.lambdas") for x in raw])
            else:
                raw = data["weights"]
                weights = [list(v) for v in parse_weights(raw if isinstance(raw, str) else raw, len(policies))]
        except (ValueError, TypeError) as e:
            raise RecipeError(f"soup.{'lambdas' if 'lambdas' in data else 'weights'}: {e}") from e
        lines = data.get("lines")
        if lines in (None, False):
            lines = None
        else:
            check_mapping(lines, "soup.lines", _LINES_KEYS)
            if "alpha" not in lines or "beta" not in lines:
                raise RecipeError("soup.lines: give both alpha and beta (or lines: false for the plain soup)")
            allow = lines.get("allow_large_lambda", False)
            if not isinstance(allow, bool):
                raise RecipeError(f"soup.lines.allow_large_lambda: expected true or false, got {show_value(allow)}")
            allow = allow or allow_large_lambda
            lines = {"alpha": recipe_number(lines["alpha"], "soup.lines.alpha"), "beta": recipe_number(lines["beta"], "soup.lines.beta"),
                     "policy": lines.get("policy", "paper"), "stacks": lines.get("stacks", "chain"),
                     **({"allow_large_lambda": True} if allow else {})}
            try:
                check_schedule(lines["alpha"], lines["beta"], allow_large_lambda=allow)
            except OptionError as e:
                raise RecipeError(f"soup.lines: {e}") from None
        include_plain = data.get("include_plain", False)
        if not isinstance(include_plain, bool):
            raise RecipeError(f"soup.include_plain: expected true or false, got {show_value(include_plain)}")
        fmt = data.get("output_format", "auto")
        if fmt not in ("auto", "adapter", "model"):
            raise RecipeError(f"soup.output_format: expected auto, adapter or model, got {show_value(fmt)}")
        sft_base = data.get("sft_base")
        shard = data.get("max_shard_size", "5GB")
        try:
            parse_size(shard, "max_shard_size", MIN_SHARD_SIZE)
        except OptionError as e:
            raise RecipeError(f"soup.{e}") from None
        return cls(sft, policies, lambdas, weights, lines, path_like(sft_base, "soup.sft_base") if sft_base else None,
                   include_plain, fmt, shard)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sft": self.sft}
        if self.sft_base:
            out["sft_base"] = self.sft_base
        out["policies"] = list(self.policies)
        if self.lambdas is not None:
            out["lambdas"] = list(self.lambdas)
        else:
            out["weights"] = [list(w) for w in self.weights or []]
        out["lines"] = dict(self.lines) if self.lines else False
        out["include_plain"] = self.include_plain
        out["output_format"] = self.output_format
        out["max_shard_size"] = self.max_shard_size
        return out

