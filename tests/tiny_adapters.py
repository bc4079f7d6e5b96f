"""Tiny PEFT adapters built offline with ``get_peft_model`` on the tiny models, with random factors.

peft initialises B to zero (and copies modules_to_save unchanged), which would make every
update vanish; here every trainable adapter tensor is overwritten with seeded noise so
each part of the adapter changes the merged weights.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest
import torch

import tiny_models
from reference import load_folder


def load_base(family: str, base: Path):
    cls = tiny_models.FAMILIES[family][1]
    model = cls.from_pretrained(base)
    model.eval()
    return model


def make_adapter(family: str, base: Path, out: Path, seed: int = 0, **lora_kwargs) -> Path:
    """Save a LoRA adapter of the tiny ``family`` model at ``base`` with random non-zero weights."""
    from peft import LoraConfig, get_peft_model

    if out.exists():
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(load_base(family, base), LoraConfig(**lora_kwargs))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not p.requires_grad:
                    continue
                noise = torch.randn(p.shape, generator=g)
                if "lora_magnitude_vector" in name:
                    p.mul_(1 + 0.1 * noise)  # DoRA magnitudes: near the weight norms they start from
                elif "modules_to_save" in name:
                    p.add_(0.05 * noise * p.std())  # a fine-tuned copy of the base module
                else:
                    p.copy_(0.2 * noise)
        model.save_pretrained(out)
    return out


def peft_merged(family: str, base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """Checkpoint of base + adapter as peft merges it (``merge_and_unload``): the fine-tuned model's weights."""
    from peft import PeftModel

    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(load_base(family, base), adapter).merge_and_unload()
        model.save_pretrained(tmp)  # checkpoint names, as transformers saves them (they can differ from module names)
        return load_folder(Path(tmp))


# name -> (family, LoraConfig kwargs)
CASES = {
    "llama-embedding-modules_to_save-patterns": ("llama", dict(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "embed_tokens", "down_proj"],
        modules_to_save=["lm_head"], rank_pattern={"v_proj": 2}, alpha_pattern={"layers.1.self_attn.q_proj": 3})),
    "qwen2-rslora-lora_bias": ("qwen2", dict(
        r=4, lora_alpha=6, use_rslora=True, lora_bias=True, target_modules=["q_proj", "k_proj", "v_proj"],
        rank_pattern={"model.layers.4.self_attn.k_proj": 8})),
    "gpt2-conv1d-fan_in_fan_out": ("gpt2", dict(
        r=4, lora_alpha=16, fan_in_fan_out=True, target_modules=["c_attn", "c_proj", "c_fc"])),
    "mistral-layers_to_transform": ("mistral", dict(
        r=2, lora_alpha=4, target_modules=["q_proj", "o_proj", "up_proj"], layers_to_transform=[0, 2])),
    "bert-classifier-modules_to_save": ("bert", dict(
        r=4, lora_alpha=4, target_modules=["query", "value"], modules_to_save=["classifier"])),
    # transformers 5 renames ViT's checkpoint tensors on load: the adapter names the live q_proj
    "vit-conv2d-renamed-modules": ("vit", dict(r=2, lora_alpha=2, target_modules=["projection", "q_proj"])),
}


@pytest.fixture(scope="session")
def adapter(family_models, tmp_path_factory):
    """(family, base, adapter folder) for a CASES name (or an ad-hoc spec), built once per session."""
    root = tmp_path_factory.mktemp("adapters")
    cache = {}

    def get(name, family=None, seed=1, **kwargs):
        if name not in cache:
            fam, kw = CASES[name] if family is None else (family, kwargs)
            base, _ = family_models(fam)
            cache[name] = (fam, base, make_adapter(fam, base, root / name, seed=seed, **kw))
        return cache[name]

    return get
