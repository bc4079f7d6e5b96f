"""Architecture knowledge as data: how numbered block stacks are named and ordered.

The general rule in ``infer.py`` reads these tables; adding a family means adding a
row here, not an ``if`` branch there. The last tables say how configs state block
counts; ``coverage.py`` checks the rule against them over the whole transformers
registry.
"""
from __future__ import annotations

# Names of containers whose numbered children are transformer blocks. A stack is found
# by ``<container>.<N>`` as whole dotted components, leftmost first, so T5's
# ``encoder.block.10.layer.1`` is block 10 and ``layers.3.mlp.experts.7`` is block 3.
CONTAINER_NAMES: tuple[str, ...] = (
    "layers",
    "layer",
    "h",
    "block",
    "blocks",
    "resblocks",
    "decoder_layers",
    "encoder_layers",
    "transformer_blocks",
    "stages",
    "encoders",  # Phi-4-multimodal's audio conformer
    "conformer",  # Gemma 3n audio
    "conformer_layers",  # FastSpeech2-Conformer
    "transformer_layers",  # LightGlue
    "mixers",  # PatchTSMixer
    "self_attends",  # Perceiver
    "spatial_layers",  # VideoPrism: a spatial then a temporal stack
    "temporal_layers",
    "x_layers",  # LXMERT: language (layer), vision (r_layers), cross-modal (x_layers)
    "r_layers",
    "cross_modal_text_layers",  # BridgeTower's co-attention layers
    "cross_modal_image_layers",
    "attentions",  # XLM / FlauBERT, with its sibling lists below
    "convnext",  # WavTokenizer's Vocos backbone: ConvNeXt blocks
)

# Parallel lists that together make one stack: XLM's block N is ``attentions.N``,
# ``ffns.N``, ``layer_norm1.N`` and ``layer_norm2.N``. Each maps to the container whose
# name the stack's prefix takes.
SIBLING_CONTAINERS: dict[str, str] = {
    "ffns": "attentions",
    "layer_norm1": "attentions",
    "layer_norm2": "attentions",
    "layer_norm15": "attentions",
    "encoder_attn": "attentions",
}

# A numbered container whose owning module (its nearest named parent) is one of these
# words, or ends with ``_`` and one of them, holds no blocks: MLP heads (DETR's
# ``bbox_embed.layers.N``, SAM's ``iou_prediction_head.layers.N``), conv subsampling,
# positional convs, FPNs and postnets, codec parts (residual quantizer codebooks, SEANet
# and DAC conv lists) and memory conv lists. Lists of plain layers (``layers.0.weight``)
# are dropped by a structural rule in infer.py, so this list only needs the rest.
NON_BLOCK_PARENT_WORDS: frozenset[str] = frozenset(
    {
        "head",
        "heads",
        "mlp",
        "mlps",
        "embed",
        "embedder",
        "subsampling",
        "fpn",
        "postnet",
        "quantizer",
        "seanet",
        "dac_encoder",
        "downsampler",
        "fuser",
    }
)

# Modules attached to a model that are not in its block chain: a speech or image
# tokenizer (Bark's EnCodec, CSM's Mimi, Janus's VQGAN, Apertus 1.5's frozen audio and
# image tokenizers) or a vocoder. Nothing under a component named so is a block.
NON_BLOCK_SUBTREES: frozenset[str] = frozenset(
    {"codec_model", "vqmodel", "vocoder", "audio_tokenizer", "vision_tokenizer"}
)

# Model types whose stacks run side by side (two towers that never feed each other),
# so each stack is scaled with its own L.
PARALLEL_TOWER_TYPES: frozenset[str] = frozenset(
    {
        "aimv2",
        "align",
        "altclip",
        "blip",
        "chinese_clip",
        "clap",
        "clip",
        "clipseg",
        "clvp",
        "depth_pro",  # image and patch encoders
        "groupvit",
        "metaclip_2",
        "owlv2",
        "owlvit",
        "pe_audio",
        "pe_audio_video",
        "pe_video",
        "siglip",
        "siglip2",
        "tipsv2",
        "vision-text-dual-encoder",
        "xclip",
    }
)

# Order of chained stacks: a stack's rank is the smallest rank among the components of
# its prefix (a component named here whole, else its ``_`` words); stacks that feed later
# ones (vision/audio towers, encoders) come first. Ties go by the largest rank, then by name.
STACK_RANK_WORDS: dict[str, float] = {
    "vision": 0,
    "visual": 0,
    "image": 0,
    "audio": 0,
    "speech": 0,
    "spatial_layers": 0,
    "patcher": 0,  # BLT's entropy model runs before its local encoder
    "initial_char_encoder": 0,  # CANINE
    "vision_tower": 0,
    "vision_model": 0,
    "audio_tower": 0,
    "image_tower": 0,
    "video_tower": 0,
    "encoder": 1,
    "temporal_layers": 1,
    "qformer": 1.5,
    "projector": 1.5,
    "connector": 1.5,
    "decoder": 2,
    "language_model": 2,
    "text_model": 2,
    "lm": 2,
    "global_transformer": 1.5,  # Mllama: after the local vision transformer
    "multimodal_model": 3,  # FLAVA fuses the image and text towers
    "dit": 3,  # PI0's action expert reads the language model
    "final_char_encoder": 3,
    "cross_modal_text_layers": 3,
    "cross_modal_image_layers": 3,
}
DEFAULT_STACK_RANK: float = 1.5

# Non-block tensors whose name (after the module they share with a stack) matches one
# of these run before the stack; every other non-block tensor runs after it.
BEFORE_STACK_PATTERN: str = (
    r"(embed|wte|wpe|patch|position|pos_|token_type|shared|cls_token|class_embedding"
    r"|conv|stem|pre_layrnorm|pre_layernorm|mask_token|input|feature_projection)"
)

# ----------------------------------------------------------- stated block counts
# Config keys that state a number of blocks (checked against the stacks found).
LAYER_COUNT_KEYS: tuple[str, ...] = (
    "num_hidden_layers",
    "n_layer",
    "n_layers",
    "num_layers",
    "depth",  # Qwen2-VL / GLM-4V style vision configs
    "encoder_layers",
    "decoder_layers",
    "num_encoder_layers",
    "num_decoder_layers",
    "encoder_num_hidden_layers",
    "decoder_num_hidden_layers",
    "decoder_num_layers",  # OmDet-Turbo
    "speech_encoder_layers",  # SeamlessM4T
    "t2u_encoder_layers",
    "t2u_decoder_layers",
    "num_global_layers",  # Mllama's global vision transformer
    "pred_num_hidden_layers",  # V-JEPA 2 predictor
    "mit_num_hidden_layers",  # X-CLIP multi-frame integration transformer
    "l_layers",  # LXMERT language, cross-modal and vision stacks
    "x_layers",
    "r_layers",
    "num_spatial_layers",  # VideoPrism
    "num_temporal_layers",
    "num_stages",  # ConvNeXt: the stages are its numbered stack
    "num_encoder_blocks",  # SegFormer / PVT / GLPN stages
    "resampler_depth",  # Idefics perceiver resampler
    "perceiver_resampler_num_layers",
    "memory_attention_num_layers",  # SAM 2 video
    "text_encoder_num_layers",  # OneFormer
    "query_dec_layers",
    "num_layers_per_stack",  # HRM
    "conf_num_hidden_layers",  # Gemma 3n audio conformer
)

# List-valued keys that state block counts, read in a sub-config that states no integer
# count (where they would only repeat it). A list of per-stage depths states one stack
# of len(list) stages, one flat stack of sum(list) blocks, or one stack per stage; a list
# of per-layer types states len(list) blocks. Only the first of these keys present in a
# sub-config is read.
STAGE_LIST_KEYS: tuple[str, ...] = (
    "depths",
    "depth",  # CvT
    "blocks_per_stage",  # Hiera in SAM 2
    "stage_num_blocks",
    "layers_block_type",  # Nemotron-H
    "layer_types",
)

# Keys that state a stack size in one family only, by model type (a list: its length).
EXTRA_COUNT_KEYS: dict[str, tuple[str, ...]] = {
    "efficientloftr": ("num_attention_layers", "stage_num_blocks"),  # a list counts by its length
    "kosmos-2": ("text_config.layers",),
    "kosmos-2.5": ("text_config.layers",),
    "perceiver": ("num_self_attends_per_block",),
    "phi4_multimodal": ("audio_config.num_blocks",),
    "seamless_m4t": ("num_adapter_layers",),
    "seamless_m4t_v2": ("num_adapter_layers",),
}

_NOT_BUILT = "a module that the base model (AutoModel) does not build"
_CODEC = "the attached codec is not in the block chain (NON_BLOCK_SUBTREES)"
_TOKENIZER = "the speech tokenizer's conv stages (``stage.N``) stay out of the block chain"

# Counts that configs state but that are not the size of a numbered stack in the
# model's tensor names, by model type: key -> why.
NON_STACK_COUNT_KEYS: dict[str, dict[str, str]] = {
    "apertus1p5": {"audio_config.decoder_num_layers": _CODEC + " (WavTokenizer audio tokenizer)"},
    "clap": {"num_hidden_layers": "text plus audio stage counts, for initialisation"},
    "csm": {"codec_config.num_hidden_layers": _CODEC},
    "depth_pro": {"fov_model_config.num_hidden_layers": _NOT_BUILT + " (field-of-view encoder)"},
    "efficientnet": {
        "num_hidden_layers": "a fixed 64 for the hidden-state list; the blocks are num_block_repeats "
        "scaled by depth_coefficient",
    },
    "fastspeech2_conformer": {
        "encoder_config.layers": "repeats encoder_layers",
        "decoder_config.layers": "repeats decoder_layers",
    },
    "gradium_phonon_tts": {"flow_head_config.num_hidden_layers": _NOT_BUILT + " (flow head)"},
    "groupvit": {"vision_config.num_hidden_layers": "sum of the stage depths; the stack is the stages"},
    "hrm_text": {
        "num_hidden_layers": "attention calls of the recurrent forward "
        "(num_layers_per_stack * H_cycles * (L_cycles + 1)), for the cache",
    },
    "idefics": {"perceiver_config.resampler_depth": _NOT_BUILT + " (use_resampler is off)"},
    "janus": {
        "vision_config.depth": "depth of the aligner MLP",
        "vq_config.num_hidden_layers": "depth of the generation aligner MLP",
    },
    "kyutai_speech_to_text": {"codec_config.num_hidden_layers": _NOT_BUILT + " (Mimi codec)"},
    "maskformer": {
        "decoder_config.encoder_layers": "MaskFormer builds only the DETR decoder",
        "num_hidden_layers": "repeats decoder_config.decoder_layers",
    },
    "mobilevitv2": {"n_attn_blocks": "attention blocks inside the last three of five stages"},
    "moshi": {
        "audio_encoder_config.num_hidden_layers": _NOT_BUILT + " (Mimi codec)",
        "depth_decoder_config.num_hidden_layers": _NOT_BUILT + " (depth decoder)",
    },
    "nemotron3_5_asr": {"num_decoder_layers": "LSTM layers of the prediction network (no numbered stack)"},
    "nemotron_asr_streaming": {"num_decoder_layers": "LSTM layers of the prediction network (no numbered stack)"},
    "oneformer": {"text_encoder_num_layers": _NOT_BUILT + " (text mapper, training only)"},
    "parakeet_rnnt": {"num_decoder_layers": "LSTM layers of the prediction network (no numbered stack)"},
    "parakeet_tdt": {"num_decoder_layers": "LSTM layers of the prediction network (no numbered stack)"},
    "pocket_tts": {"flow_head_config.num_hidden_layers": _NOT_BUILT + " (flow head)"},
    "pp_ocrv5_mobile_rec": {"depth": _NOT_BUILT + " (SVTR neck of the recognition head)"},
    "pp_ocrv5_server_rec": {"depth": _NOT_BUILT + " (SVTR neck of the recognition head)"},
    "pp_ocrv6_small_rec": {"depth": _NOT_BUILT + " (SVTR neck of the recognition head)"},
    "sam3_video": {
        "tracker_config.vision_config.backbone_config.num_hidden_layers": "the tracker shares the detector's "
        "vision encoder",
    },
    "vibevoice": {
        "diffusion_head_config.num_hidden_layers": "the diffusion head is a head, not blocks (NON_BLOCK_PARENT_WORDS)",
        "audio_config.depths": _TOKENIZER,
        "semantic_model_config.depths": _TOKENIZER,
    },
    "vibevoice_asr": {
        "acoustic_tokenizer_encoder_config.depths": _TOKENIZER,
        "semantic_tokenizer_encoder_config.depths": _TOKENIZER,
    },
    "videomae": {"decoder_num_hidden_layers": _NOT_BUILT + " (pre-training decoder)"},
    "vit_mae": {"decoder_num_hidden_layers": _NOT_BUILT + " (pre-training decoder)"},
    "wavtokenizer_encoder": {"decoder_num_layers": _NOT_BUILT + " (Vocos decoder)"},
}

# Stated counts that are a multiple of the stack they size, by model type: key -> factor.
COUNT_FACTORS: dict[str, dict[str, int]] = {
    # released config.json files count attention and MLP as separate layers; DoryConfig halves it on load
    "dory": {"num_hidden_layers": 2},
}

# Keys that state the size of several identical stacks, by model type: key -> how many.
SHARED_COUNT_KEYS: dict[str, dict[str, int]] = {
    "bridgetower": {"num_hidden_layers": 2},  # cross-modal text and image layers
    "hrm_text": {"num_layers_per_stack": 2},  # H_module and L_module
    "mimi": {"num_hidden_layers": 2},  # encoder and decoder transformers
    "pocket_tts_audio_tokenizer": {"num_hidden_layers": 2},
    "video_llava": {"vision_config.num_hidden_layers": 2},  # image and video towers
}

# Stated counts off by a constant from the stack they size, by model type: key -> offset.
COUNT_OFFSETS: dict[str, dict[str, int]] = {
    "mask2former": {"decoder_layers": -1},  # the first of decoder_layers is the query init
    "oneformer": {"decoder_layers": -1},
}

# Stacks whose size no config key states, by model type: stack prefix (fnmatch
# pattern) -> why. The check requires them to be found but does not size them.
UNSTATED_STACKS: dict[str, dict[str, str]] = {
    "canine": {
        "initial_char_encoder.layer": "a fixed single-layer character encoder",
        "final_char_encoder.layer": "a fixed single-layer character encoder",
    },
    "neucodec": {"acoustic_encoder.block": "DAC conv blocks, one per downsampling ratio"},
    "xcodec": {
        "acoustic_encoder.block": "DAC conv blocks, one per downsampling ratio",
        "acoustic_decoder.block": "DAC conv blocks, one per upsampling ratio",
    },
    "xcodec2": {"acoustic_encoder.block": "DAC conv blocks, one per downsampling ratio"},
    "wavtokenizer": {"encoder_model.encoder.layers": "SEANet conv encoder (as EnCodec's), sized by its ratios"},
    "uvdoc": {"backbone.resnet.resnet_down.*.layers": "ResNet stages sized by resnet_configs"},
    "vits": {"decoder.resblocks": "HiFi-GAN: len(upsample_rates) * len(resblock_kernel_sizes)"},
}
