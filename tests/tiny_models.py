"""Factory of tiny random transformers models saved offline, and fine-tunes of them."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import transformers as tf

# family -> (config factory, model class, expected stacks {prefix: blocks}, parallel towers?)
FAMILIES: dict[str, tuple[Callable[[], tf.PretrainedConfig], type, dict[str, int]]] = {
    "llama": (
        lambda: tf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                               tie_word_embeddings=False),
        tf.LlamaForCausalLM,
        {"model.layers": 4},
    ),
    "mistral": (
        lambda: tf.MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64),
        tf.MistralForCausalLM,
        {"model.layers": 3},
    ),
    "qwen2": (
        lambda: tf.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=5,
                               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64),
        tf.Qwen2ForCausalLM,
        {"model.layers": 5},
    ),
    "gpt2": (
        lambda: tf.GPT2Config(vocab_size=64, n_embd=32, n_layer=6, n_head=4, n_positions=64),
        tf.GPT2LMHeadModel,
        {"transformer.h": 6},
    ),
    "bert": (
        lambda: tf.BertConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=4, max_position_embeddings=64, num_labels=3),
        tf.BertForSequenceClassification,
        {"bert.encoder.layer": 3},
    ),
    "t5": (
        lambda: tf.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_decoder_layers=2,
                            num_heads=4, decoder_start_token_id=0),
        tf.T5ForConditionalGeneration,
        {"encoder.block": 3, "decoder.block": 2},
    ),
    "bart": (
        lambda: tf.BartConfig(vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=3,
                              encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                              decoder_ffn_dim=64, max_position_embeddings=64),
        tf.BartForConditionalGeneration,
        {"model.encoder.layers": 2, "model.decoder.layers": 3},
    ),
    "vit": (
        lambda: tf.ViTConfig(image_size=16, patch_size=8, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=3, num_attention_heads=4, num_labels=5),
        tf.ViTForImageClassification,
        {"vit.encoder.layer": 3},
    ),
    "clip": (
        lambda: tf.CLIPConfig(
            text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=32),
            vision_config=dict(image_size=16, patch_size=8, hidden_size=32, intermediate_size=64,
                               num_hidden_layers=4, num_attention_heads=4),
            projection_dim=16),
        tf.CLIPModel,
        {"text_model.encoder.layers": 2, "vision_model.encoder.layers": 4},
    ),
    "mixtral": (
        lambda: tf.MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                 num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                 num_experts_per_tok=2, max_position_embeddings=64),
        tf.MixtralForCausalLM,
        {"model.layers": 3},
    ),
}


def build(family: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A tiny random model of ``family``."""
    make_config, cls, _ = FAMILIES[family]
    torch.manual_seed(seed)
    model = cls(make_config()).to(dtype)
    model.eval()
    return model


def save(model, folder: Path, max_shard_size: str | int | None = None) -> Path:
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    return folder


def finetune_like(model, seed: int, scale: float = 0.05):
    """A 'fine-tune': every floating tensor moved by seeded noise proportional to its spread."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            p.add_((noise * scale * (p.float().std() if p.numel() > 1 else 1.0)).to(p.dtype))
    return model


def make_family(
    root: Path, family: str, n_models: int = 1, dtype: torch.dtype = torch.float32, max_shard_size=None
) -> tuple[Path, list[Path]]:
    """Save a base and ``n_models`` fine-tunes of it; returns their folders."""
    base = save(build(family, 0, dtype), root / f"{family}-base", max_shard_size)
    fts = []
    for k in range(n_models):
        m = finetune_like(build(family, 0, dtype), seed=100 + k)
        fts.append(save(m, root / f"{family}-ft{k}", max_shard_size))
    return base, fts
