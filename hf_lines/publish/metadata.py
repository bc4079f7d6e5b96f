"""Model card metadata: the pipeline tag of an architecture, and the checks the Hub would make.

``check_metadata`` repeats, offline, the type checks of the Hub's /api/validate-yaml (not its
license list, which changes: the Hub checks that on push), so a bad card fails before any upload.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml

from hf_lines.errors import CardError

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

RELATIONS = ("merge", "adapter", "finetune", "quantized")

# Architecture class-name suffix -> Hub pipeline tag; the longest matching suffix wins.
PIPELINE_TAG_BY_SUFFIX: dict[str, str] = {
    "ForCausalLM": "text-generation",
    "LMHeadModel": "text-generation",
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
    "ForMaskedLM": "fill-mask",
    "ForSeq2SeqLM": "text2text-generation",
    "ForImageClassification": "image-classification",
    "ForImageClassificationWithTeacher": "image-classification",
    "ForObjectDetection": "object-detection",
    "ForSemanticSegmentation": "image-segmentation",
    "ForDepthEstimation": "depth-estimation",
    "ForZeroShotImageClassification": "zero-shot-image-classification",
    "ForImageTextToText": "image-text-to-text",
    "ForVision2Seq": "image-text-to-text",
    "ForSpeechSeq2Seq": "automatic-speech-recognition",
    "ForCTC": "automatic-speech-recognition",
    "ForAudioClassification": "audio-classification",
    "ForConditionalGeneration": "text2text-generation",  # refined by model_type below
    "Model": "feature-extraction",  # a bare encoder; refined by model_type below
}
# model_type -> pipeline tag, for suffixes that do not say the task (``...Model``, ``...ForConditionalGeneration``).
PIPELINE_TAG_BY_MODEL_TYPE: dict[str, str] = {
    "clip": "zero-shot-image-classification",
    "siglip": "zero-shot-image-classification",
    "siglip2": "zero-shot-image-classification",
    "align": "zero-shot-image-classification",
    "altclip": "zero-shot-image-classification",
    "chinese_clip": "zero-shot-image-classification",
    "owlvit": "zero-shot-object-detection",
    "owlv2": "zero-shot-object-detection",
    "clap": "zero-shot-audio-classification",
    "whisper": "automatic-speech-recognition",
    "speech_to_text": "automatic-speech-recognition",
    "seamless_m4t": "translation",
    "blip": "image-to-text",
    "blip-2": "image-to-text",
    "pix2struct": "image-to-text",
    "musicgen": "text-to-audio",
}
_AMBIGUOUS_SUFFIXES = ("ForConditionalGeneration", "Model")

# Metadata keys and the types the Hub accepts for them (what /api/validate-yaml checks on types).
_STRING_KEYS = ("license", "license_name", "license_link", "library_name", "pipeline_tag", "model_name", "thumbnail")
_STRING_OR_LIST_KEYS = ("tags", "base_model", "language", "datasets", "metrics")


def pipeline_tag(config: Mapping[str, Any] | None) -> str | None:
    """The Hub pipeline tag of a transformers config, from its architecture name (None when unknown)."""
    config = config or {}
    model_type = config.get("model_type")
    for arch in config.get("architectures") or []:
        suffix = max((s for s in PIPELINE_TAG_BY_SUFFIX if arch.endswith(s)), key=len, default=None)
        if suffix is None:
            continue
        if suffix in _AMBIGUOUS_SUFFIXES:
            if model_type in PIPELINE_TAG_BY_MODEL_TYPE:
                return PIPELINE_TAG_BY_MODEL_TYPE[model_type]
            if suffix == "ForConditionalGeneration" and not config.get("is_encoder_decoder"):
                # decoder-only ...ForConditionalGeneration classes are mostly vision-language models
                return "image-text-to-text" if "vision_config" in config else "text-generation"
        return PIPELINE_TAG_BY_SUFFIX[suffix]
    return None


def check_metadata(metadata: Mapping[str, Any], where: str = "model card metadata") -> None:
    """Raise CardError for values the Hub would refuse (types, relation) or that YAML cannot carry."""
    problems = []
    for key in _STRING_KEYS:
        if metadata.get(key) is not None and not isinstance(metadata[key], str):
            problems.append(f"{key!r} must be a string, got {type(metadata[key]).__name__}")
    for key in _STRING_OR_LIST_KEYS:
        value = metadata.get(key)
        if value is not None and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            problems.append(f"{key!r} must be a string or a list of strings, got {value!r}")
    relation = metadata.get("base_model_relation")
    if relation is not None and relation not in RELATIONS:
        problems.append(f"'base_model_relation' must be one of {list(RELATIONS)}, got {relation!r}")
    try:
        again = yaml.safe_load(yaml.safe_dump(dict(metadata), sort_keys=False, allow_unicode=True))
    except yaml.YAMLError as e:  # safe_dump refuses Paths, tuples, numpy scalars...
        problems.append(f"not plain YAML data (use str, int, float, bool, list and dict only): {e}")
    else:
        if again != dict(metadata):
            problems.append("does not survive a YAML round trip (use str, int, float, bool, list and dict only)")
    if problems:
        raise CardError(f"{where} is invalid: " + "; ".join(problems))


def check_card_fields(card_data: Mapping[str, Any] | None) -> None:
    """Check user-given card fields early, before any weight is written."""
    if card_data is None:
        return
    if not isinstance(card_data, Mapping):
        raise CardError(f"card_data must be a mapping of metadata fields, got {type(card_data).__name__}")
    check_metadata(card_data, "card_data")


def validate_card(card: "ModelCard") -> None:
    """Local validation: the metadata types, and that README.md parses back to the same metadata."""
    from huggingface_hub import ModelCard

    metadata = card.data.to_dict()
    check_metadata(metadata)
    try:
        again = ModelCard(str(card)).data.to_dict()
    except Exception as e:
        raise CardError(f"the rendered model card does not parse back: {e}") from e
    if again != metadata:
        changed = sorted(k for k in set(again) | set(metadata) if again.get(k) != metadata.get(k))
        raise CardError(f"the model card metadata changes when read back (fields {changed}); check the template")


def validate_card_file(path: str | Path) -> None:
    """Validate an existing README.md (before a push) without the network."""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard.load(Path(path))
    except Exception as e:
        raise CardError(f"{path}: the model card metadata cannot be read: {e}") from e
    validate_card(card)
