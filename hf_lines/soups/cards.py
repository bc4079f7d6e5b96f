"""What each output folder of a sweep records: ``hf_lines.json``, its recipes and its model card."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from hf_lines.errors import writing
from hf_lines.pipeline.recipe import RECIPE_FILE, LinesSpec, ModelSpec, OutputSpec, Recipe
from hf_lines.core.norms import block_norms
from hf_lines.soups.outputs import SoupOutput
from hf_lines.soups.recipe import SOUP_RECIPE_FILE, SoupRecipe

if TYPE_CHECKING:
    from hf_lines.soups.soup import RewardedSoup

FORMULA = "theta = theta_SFT + lambda(l) * sum_k w_k (theta_k - theta_SFT)"
SOUP_TAGS = ["rewarded-soup"]


def output_record(soup: "RewardedSoup", out: SoupOutput, fmt: str) -> dict[str, Any]:
    """The ``describe()``-style record of one output (what ``hf_lines.json`` holds)."""
    from hf_lines.version import __version__

    inputs = soup.inputs
    record: dict[str, Any] = {
        "hf_lines_version": __version__,
        "kind": "rewarded_soup",
        "base_model": inputs.sft.record(),
        "models": [{**p.record(), "weight": w} for p, w in zip(inputs.policies, out.weights)],
        "method": {"method": "task_arithmetic", "dare": None},
        "lines": {
            "alpha": out.lines.alpha, "beta": out.lines.beta, "policy": out.lines.policy, "stacks": out.lines.stacks,
            **({"allow_large_lambda": True} if out.lines.allow_large_lambda else {}),
            "towers": [{"name": t.name, "num_blocks": t.num_blocks} for t in soup.layer_map.towers],
        },
        "soup": {"variant": out.variant, "lambda": out.lam, "weights": list(out.weights), "formula": FORMULA},
        "output": fmt,
    }
    if inputs.base is not None:
        record["sft_base"] = inputs.base.record()
    if fmt == "adapter":
        record["load_on"] = soup.load_on()
    return record


def soup_recipe(soup: "RewardedSoup", outs: Sequence[SoupOutput], fmt: str, max_shard_size: int | str) -> SoupRecipe:
    """The soup recipe that makes ``outs`` again (one variant: ``include_plain`` is false)."""
    inputs = soup.inputs
    lines = outs[0].lines
    two = len(inputs.policies) <= 2
    return SoupRecipe(
        sft=inputs.sft.spec_for_recipe(),
        policies=[p.spec_for_recipe() for p in inputs.policies],
        lambdas=[o.lam for o in outs] if two else None,  # type: ignore[misc]
        weights=None if two else [list(o.weights) for o in outs],
        lines=None if outs[0].variant == "plain" else {"alpha": lines.alpha, "beta": lines.beta,
                                                        "policy": lines.policy, "stacks": lines.stacks,
                                                        **({"allow_large_lambda": True}
                                                           if lines.allow_large_lambda else {})},
        sft_base=inputs.base.spec_for_recipe() if inputs.base is not None else None,
        output_format=fmt,
        max_shard_size=max_shard_size,
    )


def merge_recipe(soup: "RewardedSoup", out: SoupOutput, max_shard_size: int | str) -> Recipe | None:
    """The ``hf-lines merge`` recipe of one output: task arithmetic of the policies over theta_SFT.

    None under an SFT adapter, which a merge recipe cannot name as its base.
    """
    inputs = soup.inputs
    if inputs.base is not None:
        return None
    lines = out.lines
    return Recipe(
        base_model=inputs.sft.spec_for_recipe(),
        models=[ModelSpec(p.spec_for_recipe(), float(w)) for p, w in zip(inputs.policies, out.weights)],
        method="task_arithmetic",
        lines=None if out.variant == "plain" else LinesSpec(float(lines.alpha), float(lines.beta), lines.policy, lines.stacks,
                                                             lines.allow_large_lambda),
        output=OutputSpec(max_shard_size),
    )


def soup_command(soup: "RewardedSoup", out: SoupOutput, fmt: str, outdir: str = "soup") -> str:
    """The ``hf-lines soup`` command that writes this output again (as ``OUTDIR/<name>``)."""
    inputs = soup.inputs
    parts = ["hf-lines", "soup", inputs.sft.spec_for_recipe(), *(p.spec_for_recipe() for p in inputs.policies)]
    if len(out.weights) <= 2:
        parts += ["--lambdas", f"{out.lam!r}"]
    else:
        parts += ["--weights", ",".join(repr(w) for w in out.weights)]
    if out.variant == "lines":
        parts += ["--alpha", repr(out.lines.alpha), "--beta", repr(out.lines.beta)]
        if out.lines.policy != "paper":
            parts += ["--policy", out.lines.policy]
        if out.lines.stacks != "chain":
            parts += ["--stacks", out.lines.stacks]
        if out.lines.allow_large_lambda:
            parts.append("--allow-large-lambda")
    if inputs.base is not None:
        parts += ["--sft-base", inputs.base.spec_for_recipe()]
    parts += ["--output-format", fmt, "-o", outdir]
    return " ".join(shlex.quote(p) for p in parts)


def soup_python(soup: "RewardedSoup", out: SoupOutput, fmt: str) -> str:
    inputs = soup.inputs
    args = [repr(inputs.sft.spec_for_recipe()), repr([p.spec_for_recipe() for p in inputs.policies])]
    if out.variant == "lines":
        args += [f"alpha={out.lines.alpha!r}", f"beta={out.lines.beta!r}"]
        if out.lines.allow_large_lambda:
            args.append("allow_large_lambda=True")
    if inputs.base is not None:
        args.append(f"sft_base={inputs.base.spec_for_recipe()!r}")
    sweep = f"lambdas=[{out.lam!r}]" if len(out.weights) <= 2 else f"weights=[{list(out.weights)!r}]"
    return ("from hf_lines import RewardedSoup\n\n"
            "soup = RewardedSoup.from_pretrained(\n    " + ",\n    ".join(args) + ",\n)\n"
            f"soup.save_pretrained('soup', {sweep}, output={fmt!r})")


def write_output_files(
    soup: "RewardedSoup",
    out: SoupOutput,
    folder: Path,
    fmt: str,
    *,
    norms: Mapping[str, tuple[float, float]] | None = None,
    max_shard_size: int | str = "5GB",
    template: str | Path | None = None,
    card_data: Mapping[str, Any] | None = None,
    plot: bool = True,
) -> None:
    """``hf_lines.json``, ``hf_lines_soup.yaml``, ``hf_lines_recipe.yaml`` (when a merge recipe can say it) and
    the model card (with its plot unless ``plot=False``), in the (staged) output folder."""
    from hf_lines.version import __version__
    from hf_lines.publish.card import write_card

    record = output_record(soup, out, fmt)
    with writing(folder / "hf_lines.json"):
        (folder / "hf_lines.json").write_text(json.dumps(record, indent=2) + "\n")
    header = f"Made by hf-lines {__version__}; `hf-lines soup --recipe {SOUP_RECIPE_FILE} -o OUTDIR` makes it again."
    soup_recipe(soup, [out], fmt, max_shard_size).save(folder / SOUP_RECIPE_FILE, header)
    merge = merge_recipe(soup, out, max_shard_size)
    merge_yaml = None
    if merge is not None:
        merge_yaml = merge.to_yaml(f"Made by hf-lines {__version__}; `hf-lines merge {RECIPE_FILE} -o OUT` makes it again.")
        with writing(folder / RECIPE_FILE):
            (folder / RECIPE_FILE).write_text(merge_yaml)
    inputs = soup.inputs
    user = dict(card_data or {})
    extra_tags = user.pop("tags", None) or []
    data: dict[str, Any] = {"tags": [*SOUP_TAGS, *([extra_tags] if isinstance(extra_tags, str) else extra_tags)], **user}
    if inputs.base is not None and inputs.base.ref.is_hub and "base_model" not in data and fmt == "adapter":
        data["base_model"] = inputs.base.ref.repo_id  # the stacked adapter loads on the base, not on the SFT adapter
    rows = block_norms(soup.layer_map, dict(norms), out.scales(soup.layer_map)) if norms else ()
    recipe = {"cli": soup_command(soup, out, fmt), "python": soup_python(soup, out, fmt), "yaml": merge_yaml}
    if merge_yaml:
        recipe["yaml_cli"] = f"hf-lines merge {RECIPE_FILE} -o {shlex.quote(out.name)}"
    write_card(
        folder, record, rows,
        relation="adapter" if fmt == "adapter" else "merge",
        config=inputs.weights_reader.config,
        parent_folders=[inputs.sft.folder, *(p.folder for p in inputs.policies)],
        recipe=recipe, template=template, card_data=data, model_name=out.name, plot=plot,
    )
