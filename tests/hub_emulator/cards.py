"""Model card metadata as the Hub reads and checks it: the YAML front matter of README.md.

Used by /api/validate-yaml (ModelCard.validate, create_commit) and by repo info's `cardData`.
"""
from __future__ import annotations

import re
from typing import Any

_YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
_EMPTY = "Empty or missing yaml metadata in repo card (https://huggingface.co/docs/hub/model-cards#model-card-metadata)"

# License ids the Hub accepts in card metadata (https://huggingface.co/docs/hub/repositories-licenses).
KNOWN_LICENSES = frozenset(
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
    bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc
    cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
    cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0
    cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0
    eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research
    lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openmdw-1.0 openrail++ osl-3.0 postgresql
    ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license fair-noncommercial-research-license llama2
    llama3 llama3.1 llama3.2 llama3.3 llama4 gemma unknown other""".split()
)


def card_metadata(readme: str) -> dict:
    """The front matter as a dict; {} when it is missing or not a YAML mapping (repo info shows no card)."""
    import yaml

    match = _YAML_BLOCK.search(readme)
    try:
        data = yaml.safe_load(match.group(2)) if match else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def validate_card_metadata(content: str) -> tuple[list[str], list[str]]:
    """The checks behind /api/validate-yaml: (errors, warnings) for a README's YAML front matter."""
    import yaml

    match = _YAML_BLOCK.search(content)
    if match is None:
        return [], [_EMPTY]
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as exc:
        return [f"Invalid YAML in README.md metadata: {exc}"], []
    if data is None:
        return [], [_EMPTY]
    if not isinstance(data, dict):
        return [f"README.md metadata must be a YAML mapping of key: value pairs, got {type(data).__name__}"], []

    errors: list[str] = []

    def is_str_list(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    license_ = data.get("license")
    if license_ is not None:
        if not isinstance(license_, str):
            errors.append(f'"license" must be a string, got {type(license_).__name__}')
        elif license_ not in KNOWN_LICENSES:
            errors.append(f'"license" must be one of the licenses supported by the Hub (or "other"), got "{license_}"')
    for key in ("license_name", "license_link", "pipeline_tag", "library_name", "model_name", "thumbnail"):
        if data.get(key) is not None and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string, got {type(data[key]).__name__}')
    for key in ("tags", "language", "datasets", "metrics", "base_model"):
        value = data.get(key)
        if value is not None and not (isinstance(value, str) or is_str_list(value)):
            errors.append(f'"{key}" must be a string or a list of strings')
    relation = data.get("base_model_relation")
    if relation is not None and relation not in ("adapter", "merge", "quantized", "finetune"):
        errors.append('"base_model_relation" must be one of "adapter", "merge", "quantized", "finetune"')
    model_index = data.get("model-index")
    if model_index is not None:
        if not isinstance(model_index, list) or not all(
            isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("results"), list)
            for m in model_index
        ):
            errors.append('"model-index" must be a list of {name: str, results: list} entries')
    return errors, []
