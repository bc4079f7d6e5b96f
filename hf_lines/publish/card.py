"""Model cards: every output folder gets a README.md and a schedule plot, rendered from a Jinja
template through huggingface_hub's ``ModelCard``, with metadata the Hub can index.

``write_card`` works from a ``describe()``-style record, so full-model outputs (``LinesMerger``)
and adapter outputs share it; ``write_merger_card`` gathers a merger's inputs and calls it.
Nothing here calls the network: parents are identified from what is already on disk.
"""
from __future__ import annotations

import json
import re
import shlex
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from hf_lines.publish.metadata import RELATIONS, check_card_fields, check_metadata, pipeline_tag, validate_card
from hf_lines.errors import CardError, writing
from hf_lines.publish.provenance import FINGERPRINT_COVERS, ParentInfo, card_license, parent_info

if TYPE_CHECKING:
    from huggingface_hub import ModelCard, ModelCardData

    from hf_lines.pipeline.merger import LinesMerger
    from hf_lines.core.norms import BlockNorm

CARD_NAME = "README.md"
PLOT_NAME = "lines_schedule.png"
RECIPE_FILE = "hf_lines_recipe.yaml"  # what recipe.py writes beside an output
TEMPLATE_NAME = "lines_model_card.md.jinja"
# The canonical templates ship inside the package; the top-level model_cards/ folder holds the same files
# for users to read and copy (tests/test_card.py keeps them identical).
TEMPLATES_DIR = Path(__file__).parent / "templates"

ARXIV_ID = "2410.17146"
BIBTEX = """@inproceedings{wang2025lines,
  title     = {{LiNeS}: Post-training Layer Scaling Prevents Forgetting and Enhances Model Merging},
  author    = {Wang, Ke and Dimitriadis, Nikolaos and Favero, Alessandro and Ortiz-Jimenez, Guillermo
               and Fleuret, Fran{\\c{c}}ois and Frossard, Pascal},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2025},
  url       = {https://arxiv.org/abs/2410.17146}
}"""

# ------------------------------------------------------------------------------------------- body
def table_rows(record: Mapping[str, Any], block_norms: Sequence["BlockNorm"] = ()) -> list[dict[str, Any]]:
    """Per-block rows (tower, block, L, scale, before, after), shallow to deep, then the non-block rows."""
    from hf_lines.core.schedule import block_scale

    lines = record["lines"]
    norms = {(n.tower, n.block): n for n in block_norms}
    rows = []
    for tower in lines.get("towers", []):
        name, count = tower["name"], tower["num_blocks"]
        for i in range(count):
            n = norms.pop((name, i), None)
            rows.append({"tower": name, "block": i, "L": count, "scale": block_scale(i, count, lines["alpha"], lines["beta"]),
                         "before": n.before if n else None, "after": n.after if n else None})
    for n in norms.values():  # the non-block groups (and anything a record left out)
        rows.append({"tower": n.tower, "block": n.block, "L": None, "scale": n.scale, "before": n.before, "after": n.after})
    return rows


def recipe_for(
    record: Mapping[str, Any], parents: Sequence[ParentInfo], output_name: str, relation: str = "merge"
) -> dict[str, str | None]:
    """How to reproduce the output: the ``hf-lines scale`` command when it can express it, and Python."""
    lines, method = record["lines"], _options(record["method"])
    name = record["method"]["method"]
    base, models = parents[0], list(parents[1:])
    flags = f"--alpha {lines['alpha']!r} --beta {lines['beta']!r}"
    if lines.get("policy", "paper") != "paper":
        flags += f" --policy {lines['policy']}"
    if lines.get("stacks", "chain") != "chain":
        flags += f" --stacks {lines['stacks']}"
    if lines.get("allow_large_lambda"):
        flags += " --allow-large-lambda"
    if relation == "adapter":
        flags += " --output-format adapter"
    cli = None
    if name == "task_arithmetic" and not method and len(models) == 1 and (models[0].weight or 1.0) == 1.0:
        cli = (f"hf-lines scale {shlex.quote(base.pinned)} {shlex.quote(models[0].pinned)} "
               f"-o {shlex.quote(output_name)} {flags}")
    args = [repr(base.pinned), f"models={[m.pinned for m in models]!r}",
            f"alpha={'auto' if lines.get('alpha_setting') == 'auto' else lines['alpha']!r}", f"beta={lines['beta']!r}"]
    if name != "task_arithmetic":
        args.append(f"method={name!r}")
    if any((m.weight or 1.0) != 1.0 for m in models):
        args.append(f"weights={[m.weight for m in models]!r}")
    for key, default in (("policy", "paper"), ("stacks", "chain"), ("allow_large_lambda", False)):
        if lines.get(key, default) != default:
            args.append(f"{key}={lines[key]!r}")
    args += [f"{k}={v!r}" for k, v in method.items()]
    python = ("from hf_lines import LinesMerger\n\n"
              "merger = LinesMerger.from_pretrained(\n    " + ",\n    ".join(args) + ",\n)\n"
              f"merger.save_pretrained({output_name!r}{', output=' + repr('adapter') if relation == 'adapter' else ''})")
    return {"cli": cli, "python": python, "yaml": None}


def _options(method: Mapping[str, Any]) -> dict[str, Any]:
    """A method's options without its name and without unset (None) options."""
    return {k: v for k, v in method.items() if k != "method" and v is not None}


def _summary(record: Mapping[str, Any], parents: Sequence[ParentInfo], relation: str) -> str:
    lines = record["lines"]
    base, models = parents[0], parents[1:]
    ramp = (f"lambda rises linearly from alpha = {lines['alpha']:g} at the first block to alpha + beta = "
            f"{lines['alpha'] + lines['beta']:g} at the last, so shallow layers stay close to the pre-trained "
            "weights (less forgetting of general abilities) while deep layers keep the task update")
    if relation == "adapter":
        return (f"This adapter is `{models[0].name if models else 'the adapter'}` with LiNeS applied to its update "
                f"of `{base.name}`: the low-rank update of block i is scaled by lambda(i); {ramp}.")
    if len(models) == 1:
        return (f"This model is `{models[0].name}` edited with LiNeS: its task vector tau = theta_ft - theta_0 "
                f"relative to the pre-trained `{base.name}` is scaled block by block and added back to the base; {ramp}.")
    method = record["method"]["method"]
    return (f"This model merges {len(models)} fine-tunes of `{base.name}`: their task vectors are combined with "
            f"`{method}` into tau_MTL, which LiNeS scales block by block before adding it to the base; {ramp}.")


def _limitations(relation: str, n_models: int) -> list[str]:
    out = [
        "LiNeS only rescales existing weight updates; it adds no knowledge. Evaluate the result on the target "
        "task(s) and on control tasks before use.",
        "alpha and beta are the values given to hf-lines; the paper tunes them on held-out validation data.",
        "The model inherits the biases, limitations and license terms of every parent listed above; the "
        "license in the metadata is the base model's.",
        "Config, tokenizer and other support files are copied from the base model.",
    ]
    if n_models > 1:
        out.append("Merging reduces, but does not remove, interference between tasks; the parents must be "
                   "fine-tunes of the same base model.")
    if relation == "adapter":
        out.append("The adapter must be loaded on the same base model (and revision) it was trained on.")
    return out


def _lines_metadata(record: Mapping[str, Any], parents: Sequence[ParentInfo], relation: str) -> dict[str, Any]:
    """The card's ``lines:`` metadata block: the schedule, the method and where every parent came from."""
    from hf_lines.version import __version__

    lines = record["lines"]
    block = {
        "alpha": lines["alpha"], "beta": lines["beta"],
        "alpha_setting": "auto" if lines.get("alpha_setting") == "auto" else None,
        "policy": lines.get("policy", "paper"),
        "stacks": lines.get("stacks", "chain"),
        "towers": [{"name": t["name"], "L": t["num_blocks"]} for t in lines.get("towers", [])],
        "method": record["method"]["method"], "options": _options(record["method"]),
        "weights": [p.weight for p in parents[1:]] if relation != "adapter" else None,
        "hf_lines_version": record.get("hf_lines_version", __version__),
        "parents": [p.metadata() for p in parents],
    }
    return {k: v for k, v in block.items() if v is not None}


def _card_data(
    parents: Sequence[ParentInfo],
    relation: str,
    *,
    library_name: str | None,
    config: Mapping[str, Any] | None,
    lines_meta: dict[str, Any],
    license_folder: str | Path | None,
    card_data: Mapping[str, Any] | None,
) -> "ModelCardData":
    from huggingface_hub import ModelCardData

    # The Hub refuses a base_model that is not a Hub id (a local path fails validate-yaml), so parents
    # known only by a path are named under lines.parents, with their fingerprints.
    hub_ids = list(dict.fromkeys(p.hub_id for p in parents if p.hub_id))
    base_model = parents[0].hub_id if relation == "adapter" else hub_ids or None
    user = dict(card_data or {})
    extra_tags = user.pop("tags", None) or []
    kind = {"merge": "merge", "adapter": "lora"}.get(relation, relation)
    tags = ["lines", kind, lines_meta["method"], *([extra_tags] if isinstance(extra_tags, str) else extra_tags)]
    metadata: dict[str, Any] = {
        "base_model": base_model,
        "base_model_relation": relation if base_model else None,
        "library_name": library_name or ("peft" if relation == "adapter" else "transformers"),
        "tags": list(dict.fromkeys(tags)),
        **card_license(license_folder),
        "pipeline_tag": pipeline_tag(config),
        "lines": lines_meta,
        **user,
    }
    data = ModelCardData(**{k: v for k, v in metadata.items() if v is not None})
    check_metadata(data.to_dict())
    return data


# ------------------------------------------------------------------------------------------- writer
def template_path(template: str | Path | None) -> Path:
    """The template file to render: a path, a file name of the packaged templates, or the default."""
    if template is None:
        return TEMPLATES_DIR / TEMPLATE_NAME
    path = Path(template).expanduser()
    if path.is_file():
        return path
    if (TEMPLATES_DIR / str(template)).is_file():
        return TEMPLATES_DIR / str(template)
    raise CardError(f"card template {template} (card_template, --card-template) not found or not a file; "
                    "pass a path to a .md.jinja file (see model_cards/)")


def check_card_template(template: str | Path | None, render: Callable[[Path], Any] | None = None) -> None:
    """Refuse a card template (``--card-template``) that is missing, unreadable or broken: now, not after the weights.

    ``render(folder)`` renders the run's own card into a scratch folder (no plot, a few
    milliseconds), so a template that parses but fails on the real context (an unknown
    attribute, a filter on the wrong type) fails here too. The default template is not checked.
    """
    if template is None:
        return
    import jinja2

    path = template_path(template)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CardError(f"card template {path} cannot be read ({e}); pass --card-template a readable UTF-8 "
                        ".md.jinja file") from e
    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as e:
        raise CardError(f"card template {path}, line {e.lineno}: {e.message}; fix the template "
                        "or leave out --card-template for the default card") from e
    if render is not None:
        with tempfile.TemporaryDirectory(prefix="hf-lines-card-") as scratch:
            render(Path(scratch))


def preview_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` as a card can show it before the run: alpha = 'auto', known only after the
    statistics pass, stands in as 1.0."""
    lines = dict(record["lines"])
    if not isinstance(lines.get("alpha"), (int, float)):
        lines["alpha"] = 1.0
    return {**record, "lines": lines}


def write_card(
    folder: str | Path,
    record: Mapping[str, Any],
    block_norms: Sequence["BlockNorm"] = (),
    *,
    relation: str = "merge",
    library_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    parent_folders: Sequence[str | Path | None] = (),
    recipe: Mapping[str, str | None] | None = None,
    recipe_yaml: str | None = None,
    template: str | Path | None = None,
    card_data: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    plot: bool = True,
) -> "ModelCard":
    """Render and save ``folder/README.md`` (and ``lines_schedule.png``); returns the card.

    ``record`` is a ``describe()`` record: ``base_model`` and ``models`` entries ({repo_id, revision,
    path, weight}, or bare specs), ``method`` and ``lines``. ``block_norms`` fill the norm columns
    and the plot's lower panel. ``parent_folders`` are the local folders of [base, *models], read for
    Hub commits, fingerprints and licenses. ``relation`` is ``merge`` for full models and ``adapter``
    for PEFT adapters (``library_name`` then defaults to ``peft``). ``recipe`` ({cli, python, yaml})
    replaces the reproduction commands built from the record; ``recipe_yaml`` (the content of
    ``hf_lines_recipe.yaml`` saved in ``folder``) adds the recipe. ``card_data`` adds or overrides
    metadata fields (its ``tags`` are appended). ``model_name`` titles the card (default: the
    output folder's name, also inside a staged folder). Raises CardError for metadata the Hub would
    refuse or a template that does not render.
    """
    import jinja2
    from huggingface_hub import ModelCard

    if relation not in RELATIONS:
        raise CardError(f"relation must be one of {list(RELATIONS)}, got {relation!r}")
    check_card_fields(card_data)
    folder = Path(folder)
    entries = [record["base_model"], *record.get("models", [])]
    folders = list(parent_folders) + [None] * (len(entries) - len(parent_folders))
    roles = ["base"] + ["adapter" if relation == "adapter" else "fine-tuned"] * (len(entries) - 1)
    parents = [parent_info(role, e, f) for role, e, f in zip(roles, entries, folders)]
    lines = record["lines"]
    if config is None and parents[0].path and (Path(parents[0].path) / "config.json").is_file():
        config = json.loads((Path(parents[0].path) / "config.json").read_text())
    lines_meta = _lines_metadata(record, parents, relation)
    data = _card_data(parents, relation, library_name=library_name, config=config, lines_meta=lines_meta,
                      license_folder=folders[0] or parents[0].path, card_data=card_data)

    rows = table_rows(record, block_norms)
    plot_file = None
    if plot and any(r["block"] is not None for r in rows):
        from hf_lines.publish.plot import plot_schedule

        with writing(folder / PLOT_NAME):
            plot_schedule(folder / PLOT_NAME, rows, alpha=lines["alpha"], beta=lines["beta"])
        plot_file = PLOT_NAME
    # staged_output() writes into ".NAME.tmp-PID-XXXX" beside the output: the card names the output
    staged = re.fullmatch(r"\.(.+)\.tmp-[^.]+", folder.name)
    name = model_name or (staged.group(1) if staged else folder.name)
    recipe = dict(recipe or recipe_for(record, parents, name, relation))
    if recipe_yaml:
        recipe["yaml"] = recipe_yaml
        recipe.setdefault("yaml_cli", f"hf-lines merge {RECIPE_FILE} -o {shlex.quote(name)}")
    path = template_path(template)
    try:
        card = ModelCard.from_template(
            data,
            template_path=str(path),
            model_name=name,
            relation=relation,
            summary=_summary(record, parents, relation),
            parents=parents,
            fingerprint_covers=FINGERPRINT_COVERS,
            lines=lines_meta,
            method=lines_meta["method"],
            method_options=lines_meta["options"],
            rows=rows,
            has_norms=any(r["before"] is not None for r in rows),
            several_towers=len(lines.get("towers", [])) > 1,
            plot_file=plot_file,
            recipe=recipe,
            limitations=_limitations(relation, len(parents) - 1),
            arxiv_id=ARXIV_ID,
            bibtex=BIBTEX,
            version=lines_meta["hf_lines_version"],
            record=record,
        )
    except jinja2.TemplateError as e:
        raise CardError(f"card template {path} cannot be rendered: {e}") from e
    except ValueError as e:  # ModelCard refuses front matter that is not a YAML mapping
        raise CardError(f"card template {path} renders invalid front matter: {e}") from e
    except Exception as e:  # a template's own expression failing on the context (1 + 'a', a missing key)
        raise CardError(f"card template {path} fails while rendering: {type(e).__name__}: {e}") from e
    if not card.data.to_dict():  # a template without a `{{ card_data }}` front matter: keep the metadata anyway
        card.data = data
    validate_card(card)
    with writing(folder / CARD_NAME):
        card.save(folder / CARD_NAME)
    return card


def write_merger_card(
    merger: "LinesMerger",
    folder: str | Path,
    *,
    model_name: str | None = None,
    template: str | Path | None = None,
    card_data: Mapping[str, Any] | None = None,
    preview: bool = False,
) -> "ModelCard":
    """The card of a ``LinesMerger`` output (called by ``save_pretrained`` inside the staged folder).

    ``preview``: the card as it can be rendered before the run (no plot; see ``preview_record``).
    """
    recipe_file = Path(folder) / RECIPE_FILE  # recipe.py saves it beside the output before the card
    recipe_yaml = recipe_file.read_text() if recipe_file.is_file() else None
    parents = [merger.base, *merger.models]
    return write_card(
        folder,
        preview_record(merger.describe()) if preview else merger.describe(),
        merger.block_norms() if merger.tensor_norms else (),
        relation="merge",
        config=merger.base.checkpoint.config,
        parent_folders=[p.checkpoint.path for p in parents],
        recipe_yaml=recipe_yaml,
        template=template,
        card_data=card_data,
        model_name=model_name,
        plot=not preview,
    )
