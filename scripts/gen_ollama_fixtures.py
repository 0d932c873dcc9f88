#!/usr/bin/env python3
"""Write GGUF files laid out as Ollama wrote llama3.2-vision ("mllama"), from an HF checkpoint.

Ollama's three on-disk variants (spec: scripts/ollama_fixtures.md, which cites the Ollama source
line behind every rule applied here):

  era 1   Ollama 0.4 - 0.6: two blobs, a text model (patched llama.cpp `mllama` names and keys)
          and a vision "projector" (`llama/mllama.cpp` names: ln1/ln2, attn_out, ffn_down = fc1,
          ffn_up = fc2).
  era 2a  Ollama 0.7.0 (convert/convert_mllama.go @ 23125648b): one blob; vision global gates raw,
          cross-attention and vision q/k rows not permuted.
  era 2b  Ollama 0.7.1+ (@ adff143bc): one blob; every vision gate pre-activated, q/k rows of
          self-attention, cross-attention (not their q_norm/k_norm) and vision attention permuted
          like llama.cpp's convert_hf_to_gguf `permute`.

Tensor data ("--dtype", repeatable):
  f32    every tensor F32 (exact tests: undoing the conventions gives the checkpoint's values).
  f16    Ollama's own float layout: the converter's F16 for tensors of 2+ dims, F32 for 1-dim
         tensors and (era 2) the three tile-position tables.
  quant  text matrices are the blocks of one of our GGUFs (`quantize -t q8_0`, q4_0, ... any of
         our files: its types are kept), rows permuted as whole block-rows where Ollama permutes
         rows; everything else as in f16 (Ollama never quantized vision/projector tensors).
         Give the source with --quant-gguf FILE, or --quant TYPE to run our `quantize` binary.

Examples:

    python3 scripts/gen_ollama_fixtures.py                       # repo fixture models, f32
    python3 scripts/gen_ollama_fixtures.py --model tests/fixtures/models/base/model \\
        --dtype f32 --dtype f16 --quant q8_0 --manifest-root /tmp/ollama-fx/store
    python3 scripts/gen_ollama_fixtures.py --model /work/shared/fixtures/tiny-mllama/model \\
        --quant-gguf /tmp/tiny-q8_0.gguf --out /tmp/ollama-fx

Output (default --out /tmp/ollama-fx), per model and data variant:

    <out>/<model>/<variant>/era1/text.gguf, era1/projector.gguf
    <out>/<model>/<variant>/era2a/sha256-<hex>        (named by its own digest, as in Ollama's store)
    <out>/<model>/<variant>/era2b/model.gguf
    <out>/index.json                                   (every file: era, digest, size, counts)

With --manifest-root DIR also an Ollama model store:
    DIR/manifests/registry.ollama.ai/library/llama3.2-vision/<tag>   (tags: latest, <era>-<variant>)
    DIR/blobs/sha256-<hex>                                           (GGUFs hard-linked when possible)

Not written unless asked: `tokenizer.chat_template` (Ollama's converters copied the HF Jinja
template into the blobs: --chat-template-kv; the store's template layer always has Ollama's Go
template). Era-1 cross-attention q/k row order is not confirmed (--era1-cross-qk, default ggml).

Every file is read back with gguf.GGUFReader and checked: the conventions are undone and the
values compared with the checkpoint (f32: bit-exact; f16: against the f16 rounding; quant: block
bytes equal to the source GGUF's), counts and key sets as documented.

Needs numpy and gguf (gguf-py); torch is used only if installed, to reproduce llama.cpp's
float32 rope_freqs computation for era 1 bit for bit (numpy otherwise: may differ in the last bit).
"""
import argparse
import hashlib
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import gguf
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType as QT, GGUFValueType as VT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ERAS = ("era1", "era2a", "era2b")
MODEL_NAME = "llama3.2-vision"

# Ollama's Go template for llama3.2-vision (library layer sha256:715415638c9c…, 269 bytes; see the
# spec for the evidence). The server prepends "<|image|>" to a message's content itself.
OLLAMA_TEMPLATE = (
    "{{- range $index, $_ := .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n"
    "\n"
    "{{ .Content }}\n"
    "{{- if gt (len (slice $.Messages $index)) 1 }}<|eot_id|>\n"
    '{{- else if ne .Role "assistant" }}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n'
    "\n"
    "{{ end }}\n"
    "{{- end }}"
)
OLLAMA_TEMPLATE_SHA256 = "715415638c9c4c0cb2b78783da041b97bd1205f8b9f9494bd7e5a850cb443602"
# The params layer (json.Encoder output, trailing newline): sha256:fefc914e46e6…, 32 bytes.
OLLAMA_PARAMS = '{"temperature":0.6,"top_p":0.9}\n'
OLLAMA_PARAMS_SHA256 = "fefc914e46e6024467471837a48a24251db2c6f3f58395943da7bf9dc6f70fb6"
# The real license layer (sha256:0b4284c1f870…, 7.7 kB) is the Llama 3.2 Community License text;
# the fixture stores a short stand-in with the same media type.
LICENSE_STANDIN = (
    "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT\n\n"
    "(Test-fixture stand-in for Ollama's license layer; the real layer holds the full license text.)\n"
)

# Ollama's tokenizer.ggml.pre detection: sha256 of the Split pre-tokenizer regexes
# (convert/tokenizer.go @ adff143bc).
PRE_DIGESTS = {
    "d98f9631be1e9607a9848c26c1f9eac1aa9fc21ac6ba82a2fc0741af9780a48f": "llama-bpe",
    "03df5c5863ad70781dcfdef491ead25140f895fe8010964be0daefe27be32b02": "deepseek-llm",
    "21cde974d587f0d54dc8d56b183cc1e6239600172035c68fbd6d4b9f8da0576e": "deepseek-coder",
    "1ff7f41064896984db5d1bb6ff64fa4bc29007d08c1b439e505b7392777a319e": "qwen2",
}

# Conventions of each era (see the spec's table). "ggml" = rows RoPE-permuted per head.
CONVENTIONS = {
    "era1": {"self_qk": "ggml", "cross_qk": "ggml", "vision_qk": "ggml", "global_gates": "tanh"},
    "era2a": {"self_qk": "ggml", "cross_qk": "hf", "vision_qk": "hf", "global_gates": "raw"},
    "era2b": {"self_qk": "ggml", "cross_qk": "ggml", "vision_qk": "ggml", "global_gates": "tanh"},
}

# Text matrices: the tensors a quant variant takes from our GGUF (Ollama quantizes exactly these).
TEXT_MATRIX_RE = re.compile(
    r"^(token_embd\.weight|output\.weight|blk\.\d+\.(attn_[qkv]|attn_output|ffn_gate|ffn_up|ffn_down"
    r"|cross_attn_[qkvo]_proj)\.weight)$"
)
F32_ALWAYS_ERA2 = {  # convert/reader.go @ adff143bc, tensorBase.Kind()
    "v.tile_position_embd.weight",
    "v.pre_tile_position_embd.weight",
    "v.post_tile_position_embd.weight",
}
# llama.cpp / Ollama file types (general.file_type) by our GGUF's value -> FileType.String()
FILE_TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
                   10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
                   15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


def die(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


# ------------------------------------------------------------------------------------------------
# Checkpoint
# ------------------------------------------------------------------------------------------------

class Checkpoint:
    """An HF MllamaForConditionalGeneration directory, read without torch.

    `order` is the order Ollama's converter sees the tensors in: shard files sorted by name
    (Go fs.Glob), keys sorted bytewise inside each shard (convert/reader_safetensors.go)."""

    def __init__(self, d):
        self.dir = d
        self.config = json.load(open(os.path.join(d, "config.json")))
        self.text = self.config["text_config"]
        self.vision = self.config["vision_config"]
        self.tensors = {}
        self.src_dtype = {}
        self.order = []
        shards = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
        if not shards:
            die(f"{d}: no *.safetensors")
        for f in shards:
            with open(os.path.join(d, f), "rb") as fh:
                n = struct.unpack("<Q", fh.read(8))[0]
                hdr = json.loads(fh.read(n))
                blob = fh.read()
            for k in sorted(hdr, key=lambda s: s.encode()):
                if k == "__metadata__":
                    continue
                m = hdr[k]
                a, b = m["data_offsets"]
                raw = blob[a:b]
                shape = tuple(m["shape"])
                if m["dtype"] == "BF16":
                    u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
                    v = u.view(np.float32)
                elif m["dtype"] == "F16":
                    v = np.frombuffer(raw, dtype="<f2").astype(np.float32)
                elif m["dtype"] == "F32":
                    v = np.frombuffer(raw, dtype="<f4").astype(np.float32)
                else:
                    die(f"{f}: tensor {k} has unsupported dtype {m['dtype']}")
                self.tensors[k] = v.reshape(shape)
                self.src_dtype[k] = m["dtype"]
                self.order.append(k)

    def t(self, name):
        return self.tensors[name]

    # text dimensions
    @property
    def n_heads(self):
        return self.text["num_attention_heads"]

    @property
    def n_kv_heads(self):
        return self.text.get("num_key_value_heads") or self.n_heads

    @property
    def v_heads(self):
        return self.vision["attention_heads"]


# ------------------------------------------------------------------------------------------------
# Names
# ------------------------------------------------------------------------------------------------

_TEXT_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "cross_attn.q_proj.weight": "cross_attn_q_proj.weight",
    "cross_attn.k_proj.weight": "cross_attn_k_proj.weight",
    "cross_attn.v_proj.weight": "cross_attn_v_proj.weight",
    "cross_attn.o_proj.weight": "cross_attn_o_proj.weight",
    "cross_attn.q_norm.weight": "cross_attn_q_norm.weight",
    "cross_attn.k_norm.weight": "cross_attn_k_norm.weight",
    "cross_attn_attn_gate": "cross_attn_attn_gate",
    "cross_attn_mlp_gate": "cross_attn_mlp_gate",
}
_TEXT_TOP = {
    "language_model.model.embed_tokens.weight": "token_embd.weight",
    "language_model.model.norm.weight": "output_norm.weight",
    "language_model.lm_head.weight": "output.weight",
}
_VISION_TOP = {
    "vision_model.patch_embedding.weight": "v.patch_embd.weight",
    "vision_model.class_embedding": "v.class_embd",
    "vision_model.gated_positional_embedding.embedding": "v.position_embd.weight",
    "vision_model.gated_positional_embedding.gate": "v.position_embd.gate",
    "vision_model.gated_positional_embedding.tile_embedding.weight": "v.tile_position_embd.weight",
    "vision_model.pre_tile_positional_embedding.embedding.weight": "v.pre_tile_position_embd.weight",
    "vision_model.pre_tile_positional_embedding.gate": "v.pre_tile_position_embd.gate",
    "vision_model.post_tile_positional_embedding.embedding.weight": "v.post_tile_position_embd.weight",
    "vision_model.post_tile_positional_embedding.gate": "v.post_tile_position_embd.gate",
    "vision_model.layernorm_pre.weight": "v.pre_ln.weight",
    "vision_model.layernorm_pre.bias": "v.pre_ln.bias",
    "vision_model.layernorm_post.weight": "v.post_ln.weight",
    "vision_model.layernorm_post.bias": "v.post_ln.bias",
    "multi_modal_projector.weight": "mm.0.weight",
    "multi_modal_projector.bias": "mm.0.bias",
}
# vision layer suffixes: era 2 (convert_mllama.go Replacements) and era 1 (llama/mllama.cpp loads)
_VISION_LAYER = {
    "self_attn.q_proj.weight": ("attn_q.weight", "attn_q.weight"),
    "self_attn.k_proj.weight": ("attn_k.weight", "attn_k.weight"),
    "self_attn.v_proj.weight": ("attn_v.weight", "attn_v.weight"),
    "self_attn.o_proj.weight": ("attn_output.weight", "attn_out.weight"),
    "input_layernorm.weight": ("attn_norm.weight", "ln1.weight"),
    "input_layernorm.bias": ("attn_norm.bias", "ln1.bias"),
    "post_attention_layernorm.weight": ("ffn_norm.weight", "ln2.weight"),
    "post_attention_layernorm.bias": ("ffn_norm.bias", "ln2.bias"),
    "mlp.fc1.weight": ("ffn_up.weight", "ffn_down.weight"),
    "mlp.fc1.bias": ("ffn_up.bias", "ffn_down.bias"),
    "mlp.fc2.weight": ("ffn_down.weight", "ffn_up.weight"),
    "mlp.fc2.bias": ("ffn_down.bias", "ffn_up.bias"),
    "gate_attn": ("attn_gate", "attn_gate"),
    "gate_ffn": ("ffn_gate", "ffn_gate"),
}
_LAYER_RE = re.compile(r"^language_model\.model\.layers\.(\d+)\.(.+)$")
_VLAYER_RE = re.compile(r"^vision_model\.(global_transformer|transformer)\.layers\.(\d+)\.(.+)$")


def gguf_name(hf, era):
    """(GGUF name, part) of an HF tensor for `era`; part is "text" or "vision"."""
    if hf in _TEXT_TOP:
        return _TEXT_TOP[hf], "text"
    m = _LAYER_RE.match(hf)
    if m:
        if m.group(2) not in _TEXT_LAYER:
            die(f"unknown text tensor {hf}")
        return f"blk.{m.group(1)}.{_TEXT_LAYER[m.group(2)]}", "text"
    if hf in _VISION_TOP:
        return _VISION_TOP[hf], "vision"
    m = _VLAYER_RE.match(hf)
    if m:
        prefix = "v.global.blk" if m.group(1) == "global_transformer" else "v.blk"
        if m.group(3) not in _VISION_LAYER:
            die(f"unknown vision tensor {hf}")
        suffix = _VISION_LAYER[m.group(3)][1 if era == "era1" else 0]
        return f"{prefix}.{m.group(2)}.{suffix}", "vision"
    die(f"unknown checkpoint tensor {hf}")


# ------------------------------------------------------------------------------------------------
# Transforms
# ------------------------------------------------------------------------------------------------

def rope_perm(n_rows, n_heads):
    """Source row of every output row of llama.cpp's `permute` (convert_hf_to_gguf.py) and
    Ollama's repack (convert_llama.go): per head of hd = n_rows / n_heads rows, output row
    2i + j is input row j*hd/2 + i (HF rotate-half pairs (i, i+hd/2) become adjacent rows)."""
    hd = n_rows // n_heads
    assert hd * n_heads == n_rows and hd % 2 == 0, (n_rows, n_heads)
    r = np.arange(n_rows)
    head, k = r // hd, r % hd
    return head * hd + (k % 2) * (hd // 2) + k // 2


def permute_rows(a, n_heads):
    return a[rope_perm(a.shape[0], n_heads)]


def unpermute_rows(a, n_heads):
    out = np.empty_like(a)
    out[rope_perm(a.shape[0], n_heads)] = a
    return out


def tanh32(g):
    """tanh in float64 rounded to float32 (Ollama: pdevine/tensor Tanh on float32 data)."""
    return np.tanh(g.astype(np.float64)).astype(np.float32)


def rope_factors_ollama(ck):
    """rope_freqs.weight as convert/convert_llama.go (llamaModel.KV, @ adff143bc) computes it:
    float64 wavelength, float32 arithmetic for the smooth band."""
    rs = ck.text.get("rope_scaling") or {}
    if (rs.get("rope_type") or rs.get("type")) != "llama3":
        return None
    f32 = np.float32
    dim = ck.text["hidden_size"] // ck.n_heads
    factor = f32(rs.get("factor") or 8.0)
    low = f32(rs.get("low_freq_factor") or 1.0)
    high = f32(rs.get("high_freq_factor") or 4.0)
    original = int(rs.get("original_max_position_embeddings") or 8192)
    lam_low = f32(original) / low
    lam_high = f32(original) / high
    theta = float(f32(ck.text["rope_theta"]))
    out = []
    for i in range(0, dim, 2):
        lam = 2 * math.pi * math.pow(theta, i / dim)
        if lam < float(lam_high):
            out.append(f32(1.0))
        elif lam > float(lam_low):
            out.append(factor)
        else:
            smooth = (f32(original) / f32(lam) - low) / (high - low)
            out.append(f32(1.0) / ((f32(1.0) - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def rope_factors_llamacpp(ck):
    """rope_freqs.weight as llama.cpp's convert_hf_to_gguf.py (LlamaModel.generate_extra_tensors)
    computes it: all float32 (torch), original context from the *top-level* hparams (default 8192)."""
    rs = ck.text.get("rope_scaling") or {}
    if (rs.get("rope_type") or rs.get("type")) != "llama3":
        return None, None
    base = ck.text.get("rope_theta", 10000.0)
    dim = ck.text["hidden_size"] // ck.n_heads
    factor = rs.get("factor", 8.0)
    low = rs.get("low_freq_factor", 1.0)
    high = rs.get("high_freq_factor", 4.0)
    old = ck.text.get("original_max_position_embeddings", 8192)
    low_wl, high_wl = old / low, old / high
    try:
        import torch
        freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        out = []
        for freq in freqs:
            wl = 2 * math.pi / freq
            if wl < high_wl:
                out.append(1)
            elif wl > low_wl:
                out.append(factor)
            else:
                s = (old / wl - low) / (high - low)
                out.append(1 / ((1 - s) / factor + s))
        return torch.tensor(out, dtype=torch.float32).numpy(), "torch"
    except ImportError:
        f32 = np.float32
        freqs = (f32(1.0) / (f32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / f32(dim))))
        out = []
        for freq in freqs.astype(np.float32):
            wl = f32(2 * math.pi) / freq
            if wl < high_wl:
                out.append(f32(1))
            elif wl > low_wl:
                out.append(f32(factor))
            else:
                s = (f32(old) / wl - f32(low)) / f32(high - low)
                out.append(f32(1) / ((f32(1) - s) / f32(factor) + s))
        return np.array(out, dtype=np.float32), "numpy"


def go_stable_sort(items, cmp):
    """Go's slices.SortStableFunc (insertion sort on blocks of 20, then SymMerge), reimplemented:
    Ollama's WriteGGUF comparator is not a strict weak order, so the result depends on the
    algorithm and only this one reproduces Ollama's tensor order."""
    data = list(items)
    n = len(data)

    def insertion(a, b):
        for i in range(a + 1, b):
            j = i
            while j > a and cmp(data[j], data[j - 1]) < 0:
                data[j], data[j - 1] = data[j - 1], data[j]
                j -= 1

    def swap_range(a, b, k):
        for i in range(k):
            data[a + i], data[b + i] = data[b + i], data[a + i]

    def rotate(a, m, b):
        i, j = m - a, b - m
        while i != j:
            if i > j:
                swap_range(m - i, m, j)
                i -= j
            else:
                swap_range(m - i, m + j - i, i)
                j -= i
        swap_range(m - i, m, i)

    def sym_merge(a, m, b):
        if m - a == 1:
            i, j = m, b
            while i < j:
                h = (i + j) >> 1
                if cmp(data[h], data[a]) < 0:
                    i = h + 1
                else:
                    j = h
            for k in range(a, i - 1):
                data[k], data[k + 1] = data[k + 1], data[k]
            return
        if b - m == 1:
            i, j = a, m
            while i < j:
                h = (i + j) >> 1
                if not cmp(data[m], data[h]) < 0:
                    i = h + 1
                else:
                    j = h
            for k in range(m, i, -1):
                data[k], data[k - 1] = data[k - 1], data[k]
            return
        mid = (a + b) >> 1
        nn = mid + m
        if m > mid:
            start, r = nn - b, mid
        else:
            start, r = a, m
        p = nn - 1
        while start < r:
            c = (start + r) >> 1
            if not cmp(data[p - c], data[c]) < 0:
                start = c + 1
            else:
                r = c
        end = nn - start
        if start < m < end:
            rotate(start, m, end)
        if a < start < mid:
            sym_merge(a, start, mid)
        if mid < end < b:
            sym_merge(mid, end, b)

    bs = 20
    a, b = 0, bs
    while b <= n:
        insertion(a, b)
        a, b = b, b + bs
    insertion(a, n)
    while bs < n:
        a, b = 0, 2 * bs
        while b <= n:
            sym_merge(a, a + bs, b)
            a, b = b, b + 2 * bs
        if a + bs < n:
            sym_merge(a, a + bs, n)
        bs *= 2
    return data


_BLK_RE = re.compile(r"^blk\.(\d+)\.")


def tensor_block(name):
    """fs/ggml Tensor.block(): fmt.Sscanf(name, "blk.%d.") or -1."""
    m = _BLK_RE.match(name)
    return int(m.group(1)) if m else -1


def ollama_tensor_cmp(a, b):
    """The comparator of fs/ggml/gguf.go WriteGGUF (@ adff143bc)."""
    i, j = tensor_block(a), tensor_block(b)
    if i < 0 and j > 0:
        return 1
    if i > 0 and j < 0:
        return -1
    return (i > j) - (i < j)


def llamacpp_weight_order(names):
    """llama.cpp's weights_map order (weight_name_comparer: layer number, then name), which
    llama-quantize writes in."""
    return sorted(names, key=lambda n: (tensor_block(n), n.encode()))


# ------------------------------------------------------------------------------------------------
# Tokenizer metadata
# ------------------------------------------------------------------------------------------------

class Vocab:
    def __init__(self, d, vocab_size):
        tj = json.load(open(os.path.join(d, "tokenizer.json")))
        self.tc = json.load(open(os.path.join(d, "tokenizer_config.json")))
        gen_path = os.path.join(d, "generation_config.json")
        self.gen = json.load(open(gen_path)) if os.path.exists(gen_path) else {}
        toks = {v: (k, False, False) for k, v in tj["model"]["vocab"].items()}  # id -> (content, added, special)
        for t in tj.get("added_tokens", []):
            toks[t["id"]] = (t["content"], True, bool(t.get("special")))
        # convert/tokenizer.go looks special tokens up among tokenizer.json's added_tokens only
        self.added_by_content = {t["content"]: t["id"] for t in tj.get("added_tokens", [])}
        ids = sorted(toks)
        # convert/tokenizer.go parseVocabularyFromTokenizer: sorted ids, score = id,
        # type control (3) if special, user-defined (4) if added, normal (1) otherwise.
        self.tokens = [toks[i][0] for i in ids]
        self.scores = [float(i) for i in ids]
        self.types = [3 if toks[i][2] else (4 if toks[i][1] else 1) for i in ids]
        # convert.go ConvertModel: pad with [PAD%d] (score -1, user-defined) up to vocab_size.
        for i in range(max(0, vocab_size - len(self.tokens))):
            self.tokens.append(f"[PAD{i}]")
            self.scores.append(-1.0)
            self.types.append(4)
        # llama.cpp get_vocab_base: ids without a token are [PAD{id}] / UNUSED (5).
        n = max(ids) + 1
        self.lc_tokens, self.lc_types = [], []
        for i in range(n):
            if i not in toks:
                self.lc_tokens.append(f"[PAD{i}]")
                self.lc_types.append(5)
            else:
                c, added, special = toks[i]
                self.lc_tokens.append(c)
                self.lc_types.append(3 if special else (4 if added else 1))
        merges = tj["model"].get("merges", [])
        self.merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
        h = hashlib.sha256()
        pts = (tj.get("pre_tokenizer") or {}).get("pretokenizers") or []
        for pt in pts:
            if pt.get("type") == "Split" and (pt.get("pattern") or {}).get("Regex"):
                h.update(pt["pattern"]["Regex"].encode())
        self.pre_go = PRE_DIGESTS.get(h.hexdigest(), "default")
        self.chat_template = self.tc.get("chat_template") if isinstance(self.tc.get("chat_template"), str) else None

    def special(self, typ):
        """(content, id, add) of a special token from tokenizer_config.json, or None."""
        v = self.tc.get(f"{typ}_token")
        if isinstance(v, dict):
            v = v.get("content")
        if not isinstance(v, str) or v not in self.added_by_content:
            return None
        add = self.tc.get(f"add_{typ}_token")
        return v, self.added_by_content[v], bool(add) if isinstance(add, bool) else False


# ------------------------------------------------------------------------------------------------
# Building a file
# ------------------------------------------------------------------------------------------------

class OutTensor:
    def __init__(self, name, data, qtype=None, hf=None, note=""):
        self.name = name
        self.data = data        # np.float32 / np.float16 array (PyTorch order) or uint8 block rows
        self.qtype = qtype      # GGMLQuantizationType for raw blocks, None for float arrays
        self.hf = hf
        self.note = note


def write_gguf(path, arch, kvs, tensors):
    """kvs: list of (key, value, VT, sub VT) in file order (general.architecture first)."""
    tmp = path + ".tmp"
    w = GGUFWriter(tmp, arch)
    for k, v, vt, sub in kvs:
        if k == "general.architecture":
            continue
        w.add_key_value(k, v, vt, sub)
    for t in tensors:
        if t.qtype is None:
            w.add_tensor(t.name, np.ascontiguousarray(t.data))
        else:
            w.add_tensor(t.name, np.ascontiguousarray(t.data), raw_dtype=t.qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)


def kv(k, v, vt, sub=None):
    return (k, v, vt, sub)


class QuantSource:
    """Text-matrix blocks from one of our GGUFs (written by `quantize`)."""

    def __init__(self, path):
        self.path = path
        self.r = GGUFReader(path)
        f = self.r.fields

        def s(key):
            return f[key].contents() if key in f else None
        self.self_qk = s("mllama.convention.self_attn_qk")
        self.cross_qk = s("mllama.convention.cross_attn_qk")
        if self.self_qk not in ("ggml", "hf") or self.cross_qk not in ("ggml", "hf"):
            die(f"{path}: not one of our GGUFs (no mllama.convention.self_attn_qk/cross_attn_qk keys)")
        self.file_type = int(s("general.file_type") or 0)
        self.t = {t.name: t for t in self.r.tensors}
        qtypes = sorted({self.t[n].tensor_type.name for n in self.t if TEXT_MATRIX_RE.match(n)})
        self.label = FILE_TYPE_NAMES.get(self.file_type, f"ftype{self.file_type}").lower()
        if self.label in ("f32", "f16", "bf16"):   # keep clear of the float variants' directories
            self.label = "src-" + self.label
        self.text_types = qtypes

    def rows(self, name, shape):
        """(data, qtype): the tensor as block rows (uint8 [rows, row_bytes]) for block types, as a
        float array for F32/F16/BF16-stored tensors."""
        t = self.t.get(name)
        if t is None:
            die(f"{self.path}: no tensor {name}")
        ne = [int(x) for x in t.shape]
        if list(reversed(ne)) != list(shape):
            die(f"{self.path}: {name} has shape {list(reversed(ne))}, checkpoint says {list(shape)}")
        qt = t.tensor_type
        if qt == QT.F32:
            return np.asarray(t.data, dtype=np.float32).reshape(shape), None
        if qt == QT.F16:
            return np.asarray(t.data, dtype=np.float16).reshape(shape), None
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        row_bytes = ne[0] // bs * ts
        data = np.asarray(t.data, dtype=np.uint8).reshape(-1, row_bytes)
        return data, qt


def move_rows(data, src_order, dst_order, n_heads):
    """Reorder whole rows (block rows for quantized data) from one q/k convention to another."""
    if src_order == dst_order:
        return data
    if src_order == "hf":
        return permute_rows(data, n_heads)
    return unpermute_rows(data, n_heads)


class Builder:
    def __init__(self, ck, vocab, args):
        self.ck = ck
        self.vocab = vocab
        self.args = args

    # --- per-tensor value and storage ------------------------------------------------------------
    def float_type(self, era, name, part, mode):
        """np dtype of a non-quantized tensor under `mode`."""
        if mode == "f32":
            return np.float32
        if len(self.shape_of(name)) == 1:
            return np.float32
        if era != "era1" and name in F32_ALWAYS_ERA2:
            return np.float32
        return np.float16

    def shape_of(self, name):
        return self._shapes[name]

    def tensors_for(self, era, mode, qsrc):
        """Every tensor of `era` in the converter's order: list of (file, OutTensor); file is
        "model" or "projector" (era 1 only)."""
        ck = self.ck
        conv = dict(CONVENTIONS[era])
        if era == "era1":
            conv["cross_qk"] = self.args.era1_cross_qk
            conv["vision_qk"] = self.args.era1_vision_qk
        self._shapes = {}
        items = []  # (gguf name, part, hf name, value f32, transform note)
        for hf in ck.order:
            name, part = gguf_name(hf, era)
            a = ck.t(hf)
            note = []
            if name.endswith((".attn_q.weight", ".attn_k.weight")) and name.startswith("blk."):
                heads = ck.n_heads if name.endswith("attn_q.weight") else ck.n_kv_heads
                a = permute_rows(a, heads)
                note.append(f"rope-permuted rows ({heads} heads)")
            elif name.endswith(("cross_attn_q_proj.weight", "cross_attn_k_proj.weight")):
                if conv["cross_qk"] == "ggml":
                    heads = ck.n_heads if "q_proj" in name else ck.n_kv_heads
                    a = permute_rows(a, heads)
                    note.append(f"rope-permuted rows ({heads} heads)")
            elif part == "vision" and name.endswith((".attn_q.weight", ".attn_k.weight")):
                if conv["vision_qk"] == "ggml":
                    a = permute_rows(a, ck.v_heads)
                    note.append(f"rope-permuted rows ({ck.v_heads} heads)")
            elif name in ("v.pre_tile_position_embd.gate", "v.post_tile_position_embd.gate"):
                a = tanh32(a)
                note.append("tanh(g)")
            elif name.startswith("v.global.blk.") and name.endswith(("attn_gate", "ffn_gate")):
                if conv["global_gates"] == "tanh":
                    a = tanh32(a)
                    note.append("tanh(g)")
            if name == "v.position_embd.gate":
                g = a
                a = (np.float32(1.0) - tanh32(g)).astype(np.float32)
                items.append((name, part, hf, a, "1 - tanh(g)"))
                self._shapes[name] = a.shape
                t = tanh32(g)
                items.append(("v.tile_position_embd.gate", part, hf, t, "tanh(g) (same HF gate)"))
                self._shapes["v.tile_position_embd.gate"] = t.shape
                continue
            items.append((name, part, hf, a, ", ".join(note)))
            self._shapes[name] = a.shape

        if era == "era1":
            rf, impl = rope_factors_llamacpp(ck)
            self.rope_impl = impl
        else:
            rf = rope_factors_ollama(ck)
        rope = ("rope_freqs.weight", "text", None, rf, "llama3 rope factors (computed)") if rf is not None else None
        if rope:
            self._shapes["rope_freqs.weight"] = rf.shape

        if era == "era1":
            text = [it for it in items if it[1] == "text"]
            vis = [it for it in items if it[1] == "vision"]
            ordered = [("model", it) for it in ([rope] if rope else []) + text] + [("projector", it) for it in vis]
        else:
            # convert_mllama.go Tensors(): vision/projector tensors first (in parse order, the
            # position gate followed by its tile copy), then llamaModel.Tensors(text): rope_freqs
            # first, then the text tensors in parse order.
            vis = [it for it in items if it[1] == "vision"]
            text = [it for it in items if it[1] == "text"]
            ordered = [("model", it) for it in vis + ([rope] if rope else []) + text]

        out = []
        for file, (name, part, hf, a, note) in ordered:
            if mode == "quant" and TEXT_MATRIX_RE.match(name):
                data, qt = qsrc.rows(name, a.shape)
                # our file's row order -> this era's
                if name.endswith((".attn_q.weight", ".attn_k.weight")) and name.startswith("blk."):
                    heads = ck.n_heads if name.endswith("attn_q.weight") else ck.n_kv_heads
                    data = move_rows(data, qsrc.self_qk, conv["self_qk"], heads)
                elif name.endswith(("cross_attn_q_proj.weight", "cross_attn_k_proj.weight")):
                    heads = ck.n_heads if "q_proj" in name else ck.n_kv_heads
                    data = move_rows(data, qsrc.cross_qk, conv["cross_qk"], heads)
                out.append((file, OutTensor(name, data, qt, hf, note + (" [blocks from source GGUF]"))))
            else:
                dt = self.float_type(era, name, part, "f32" if mode == "f32" else "f16")
                out.append((file, OutTensor(name, a.astype(dt), None, hf, note)))
        return out, conv

    # --- metadata ----------------------------------------------------------------------------------
    def kv_era2(self, era, file_type, with_template):
        """convert_mllama.go KV() + ModelParameters.KV() (+ quantize's general.file_type);
        written in sorted key order like fs/ggml/gguf.go WriteGGUF."""
        ck, v = self.ck, self.vocab
        t, vis = ck.text, ck.vision
        u32, f32s = VT.UINT32, VT.FLOAT32
        d = {
            "general.architecture": ("mllama", VT.STRING, None),
            "general.file_type": (file_type, u32, None),
            "general.quantization_version": (2, u32, None),
            "mllama.vocab_size": (t["vocab_size"], u32, None),
            "mllama.block_count": (t["num_hidden_layers"], u32, None),
            "mllama.context_length": (t["max_position_embeddings"], u32, None),
            "mllama.embedding_length": (t["hidden_size"], u32, None),
            "mllama.feed_forward_length": (t["intermediate_size"], u32, None),
            "mllama.attention.head_count": (t["num_attention_heads"], u32, None),
            "mllama.rope.dimension_count": (t["hidden_size"] // t["num_attention_heads"], u32, None),
            "mllama.rope.freq_base": (float(t["rope_theta"]), f32s, None),
            "mllama.attention.head_count_kv": (ck.n_kv_heads, u32, None),
            "mllama.attention.layer_norm_rms_epsilon": (float(t["rms_norm_eps"]), f32s, None),
            "mllama.attention.cross_attention_layers": (list(t["cross_attention_layers"]), VT.ARRAY, VT.INT32),
            "mllama.vision.block_count": (vis["num_hidden_layers"], u32, None),
            "mllama.vision.global.block_count": (vis["num_global_layers"], u32, None),
            "mllama.vision.intermediate_layers_indices": (list(vis["intermediate_layers_indices"]), VT.ARRAY, VT.INT32),
            "mllama.vision.embedding_length": (vis["hidden_size"], u32, None),
            "mllama.vision.feed_forward_length": (vis["intermediate_size"], u32, None),
            "mllama.vision.attention.head_count": (vis["attention_heads"], u32, None),
            "mllama.vision.attention.layer_norm_epsilon": (float(vis["norm_eps"]), f32s, None),
            "mllama.vision.image_size": (vis["image_size"], u32, None),
            "mllama.vision.patch_size": (vis["patch_size"], u32, None),
            "mllama.vision.max_num_tiles": (vis["max_num_tiles"], u32, None),
            "mllama.vision.num_channels": (vis["num_channels"], u32, None),
            "tokenizer.ggml.pre": (v.pre_go, VT.STRING, None),
            "tokenizer.ggml.model": ("gpt2", VT.STRING, None),
            "tokenizer.ggml.tokens": (v.tokens, VT.ARRAY, VT.STRING),
            "tokenizer.ggml.scores": (v.scores, VT.ARRAY, VT.FLOAT32),
            "tokenizer.ggml.token_type": (v.types, VT.ARRAY, VT.INT32),
        }
        if v.merges:
            d["tokenizer.ggml.merges"] = (v.merges, VT.ARRAY, VT.STRING)
        if with_template and v.chat_template:
            d["tokenizer.chat_template"] = (v.chat_template, VT.STRING, None)
        for typ, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("sep", "seperator"),
                         ("pad", "padding"), ("cls", "cls"), ("mask", "mask")):
            sv = v.special(typ)
            if sv is None:
                continue
            d[f"tokenizer.ggml.add_{key}_token"] = (sv[2], VT.BOOL, None)
            d[f"tokenizer.ggml.{key}_token_id"] = (sv[1], u32, None)
            ids = v.gen.get(f"{typ}_token_id")
            if isinstance(ids, list) and ids and self.args.eos_token_ids:
                d[f"tokenizer.ggml.{key}_token_ids"] = ([int(x) for x in ids], VT.ARRAY, VT.INT32)
        return [kv(k, *d[k]) for k in sorted(d, key=lambda s: s.encode())]

    def kv_era1_text(self, file_type, with_template, n_params):
        """llama.cpp convert_hf_to_gguf.py key order, as in the 27-key era-1 blob's load log."""
        ck, v = self.ck, self.vocab
        t = ck.text
        u32, f32s = VT.UINT32, VT.FLOAT32
        out = [
            kv("general.architecture", "mllama", VT.STRING),
            kv("general.type", "model", VT.STRING),
            kv("general.name", "Model", VT.STRING),
            kv("general.size_label", gguf.utility.size_label(n_params, 0, 0, 0), VT.STRING),
            kv("mllama.block_count", t["num_hidden_layers"], u32),
            kv("mllama.context_length", t["max_position_embeddings"], u32),
            kv("mllama.embedding_length", t["hidden_size"], u32),
            kv("mllama.feed_forward_length", t["intermediate_size"], u32),
            kv("mllama.attention.head_count", t["num_attention_heads"], u32),
            kv("mllama.attention.head_count_kv", ck.n_kv_heads, u32),
            kv("mllama.rope.freq_base", float(t["rope_theta"]), f32s),
            kv("mllama.attention.layer_norm_rms_epsilon", float(t["rms_norm_eps"]), f32s),
            kv("general.file_type", file_type, u32),
            kv("mllama.vocab_size", t["vocab_size"], u32),
            kv("mllama.rope.dimension_count", t["hidden_size"] // t["num_attention_heads"], u32),
            kv("mllama.attention.cross_attention_layers", list(t["cross_attention_layers"]), VT.ARRAY, VT.INT32),
            kv("tokenizer.ggml.add_bos_token", True, VT.BOOL),
            kv("tokenizer.ggml.model", "gpt2", VT.STRING),
            kv("tokenizer.ggml.pre", "llama-bpe", VT.STRING),
            kv("tokenizer.ggml.tokens", v.lc_tokens, VT.ARRAY, VT.STRING),
            kv("tokenizer.ggml.token_type", v.lc_types, VT.ARRAY, VT.INT32),
            kv("tokenizer.ggml.merges", v.merges, VT.ARRAY, VT.STRING),
        ]
        for typ, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding")):
            sv = v.special(typ)
            if sv is not None:
                out.append(kv(f"tokenizer.ggml.{key}_token_id", sv[1], u32))
        if with_template and v.chat_template:
            out.append(kv("tokenizer.chat_template", v.chat_template, VT.STRING))
        out.append(kv("general.quantization_version", 2, u32))
        return out

    def kv_era1_projector(self, file_type):
        """What llama/mllama.cpp (@ 0478d440f) reads from the projector, plus the keys the era-1
        server reads (general.architecture for the memory estimate). Reconstructed: no dump of a
        real projector's keys was found."""
        ck = self.ck
        vis = ck.vision
        u32, f32s = VT.UINT32, VT.FLOAT32
        return [
            kv("general.architecture", "mllama", VT.STRING),
            kv("general.description", "vision encoder for Mllama", VT.STRING),
            kv("general.file_type", file_type, u32),
            kv("mllama.vision.image_size", vis["image_size"], u32),
            kv("mllama.vision.patch_size", vis["patch_size"], u32),
            kv("mllama.vision.embedding_length", vis["hidden_size"], u32),
            kv("mllama.vision.feed_forward_length", vis["intermediate_size"], u32),
            kv("mllama.vision.projection_dim", ck.text["hidden_size"], u32),
            kv("mllama.vision.block_count", vis["num_hidden_layers"], u32),
            kv("mllama.vision.global.block_count", vis["num_global_layers"], u32),
            kv("mllama.vision.attention.head_count", vis["attention_heads"], u32),
            kv("mllama.vision.attention.layer_norm_epsilon", float(vis["norm_eps"]), f32s),
            kv("mllama.vision.max_num_tiles", vis["max_num_tiles"], u32),
            kv("mllama.vision.num_channels", vis["num_channels"], u32),
            kv("mllama.vision.intermediate_layers_indices", list(vis["intermediate_layers_indices"]), VT.ARRAY, VT.INT32),
        ]

    # --- one variant -------------------------------------------------------------------------------
    def build(self, era, mode, qsrc, outdir):
        tensors, conv = self.tensors_for(era, mode, qsrc)
        if mode == "f32":
            file_type = 0
        elif mode == "f16":
            file_type = 1
        else:
            file_type = qsrc.file_type
        with_t = self.args.chat_template_kv
        files = []
        os.makedirs(outdir, exist_ok=True)
        if era == "era1":
            text = [t for f, t in tensors if f == "model"]
            proj = [t for f, t in tensors if f == "projector"]
            if mode == "quant":
                text = [dict((t.name, t) for t in text)[n] for n in llamacpp_weight_order([t.name for t in text])]
            n_params = sum(int(np.prod(self.shape_of(t.name))) for t in text)
            p_text = os.path.join(outdir, "text.gguf")
            write_gguf(p_text, "mllama", self.kv_era1_text(file_type, with_t, n_params), text)
            p_proj = os.path.join(outdir, "projector.gguf")
            write_gguf(p_proj, "mllama", self.kv_era1_projector(0 if mode == "f32" else 1), proj)
            files = [("model", p_text, text), ("projector", p_proj, proj)]
        else:
            ts = [t for _, t in tensors]
            by = {t.name: t for t in ts}
            names = go_stable_sort([t.name for t in ts], ollama_tensor_cmp)   # convert: WriteGGUF
            if mode == "quant":
                names = go_stable_sort(names, ollama_tensor_cmp)             # quantize: WriteGGUF again
            ts = [by[n] for n in names]
            kvs = self.kv_era2(era, file_type, with_t)
            p = os.path.join(outdir, "model.gguf")
            write_gguf(p, "mllama", kvs, ts)
            if era == "era2a":
                digest = sha256_file(p)
                q = os.path.join(outdir, f"sha256-{digest}")
                for old in os.listdir(outdir):
                    if old.startswith("sha256-") and old != os.path.basename(q):
                        os.remove(os.path.join(outdir, old))
                os.replace(p, q)
                p = q
            files = [("model", p, ts)]
        return files, conv


def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# Verification (read back with gguf-py, undo the conventions, compare with the checkpoint)
# ------------------------------------------------------------------------------------------------

def verify_file(path, role, era, mode, conv, ck, qsrc, args, expect_tensors):
    r = GGUFReader(path)
    keys = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    names = [t.name for t in r.tensors]
    problems = []
    if names != [t.name for t in expect_tensors]:
        problems.append("tensor order/name mismatch with what was written")
    if len(set(names)) != len(names):
        problems.append("duplicate tensor names")
    # no rope scaling keys, no convention keys, no image token key in any Ollama file
    for k in keys:
        if ".rope.scaling." in k or ".convention." in k:
            problems.append(f"unexpected key {k}")
    if not args.chat_template_kv and "tokenizer.chat_template" in keys:
        problems.append("chat template present")
    if keys["general.architecture"].contents() != "mllama":
        problems.append("architecture")
    n_exact = n_f16 = n_blocks = 0
    max_err = 0.0
    for t in r.tensors:
        name = t.name
        ne = [int(x) for x in t.shape]
        shape = tuple(reversed(ne))
        if name == "rope_freqs.weight":
            ref = rope_factors_llamacpp(ck)[0] if era == "era1" else rope_factors_ollama(ck)
            got = np.asarray(t.data, dtype=np.float32).reshape(shape)
            if not np.array_equal(got, ref):
                problems.append("rope_freqs differs")
            continue
        hf = hf_name_of(name, era, ck)
        ref = ck.t(hf)
        if tuple(ref.shape) != shape:
            problems.append(f"{name}: shape {shape} vs checkpoint {ref.shape}")
            continue
        # undo the stored convention -> HF values
        def undo(a):
            if name.startswith("blk.") and name.endswith((".attn_q.weight", ".attn_k.weight")):
                return unpermute_rows(a, ck.n_heads if "attn_q" in name else ck.n_kv_heads)
            if name.endswith(("cross_attn_q_proj.weight", "cross_attn_k_proj.weight")) and conv["cross_qk"] == "ggml":
                return unpermute_rows(a, ck.n_heads if "q_proj" in name else ck.n_kv_heads)
            if name.startswith("v.") and name.endswith((".attn_q.weight", ".attn_k.weight")) and conv["vision_qk"] == "ggml":
                return unpermute_rows(a, ck.v_heads)
            return a
        qt = t.tensor_type
        if qt not in (QT.F32, QT.F16):
            # block data: compare bytes with the source GGUF's tensor in its own row order
            raw = np.asarray(t.data, dtype=np.uint8)
            bs, ts_ = gguf.GGML_QUANT_SIZES[qt]
            rows = raw.reshape(-1, ne[0] // bs * ts_)
            src, sqt = qsrc.rows(name, shape)
            if sqt != qt:
                problems.append(f"{name}: type {qt.name} vs source {sqt}")
                continue
            back = undo(rows)
            if name.startswith("blk.") and name.endswith((".attn_q.weight", ".attn_k.weight")) and qsrc.self_qk == "ggml":
                back = permute_rows(back, ck.n_heads if "attn_q" in name else ck.n_kv_heads)
            if name.endswith(("cross_attn_q_proj.weight", "cross_attn_k_proj.weight")) and qsrc.cross_qk == "ggml":
                back = permute_rows(back, ck.n_heads if "q_proj" in name else ck.n_kv_heads)
            if not np.array_equal(back, src):
                problems.append(f"{name}: blocks differ from the source GGUF")
            n_blocks += 1
            continue
        got = np.asarray(t.data).reshape(shape).astype(np.float32)
        if name == "v.position_embd.gate":
            val = np.float32(1) - tanh32(ref)
        elif name == "v.tile_position_embd.gate" or name in ("v.pre_tile_position_embd.gate", "v.post_tile_position_embd.gate"):
            val = tanh32(ref)
        elif name.startswith("v.global.blk.") and name.endswith(("attn_gate", "ffn_gate")) and conv["global_gates"] == "tanh":
            val = tanh32(ref)
        else:
            val = ref
            got = undo(got)
        if qt == QT.F32:
            if not np.array_equal(got, val.astype(np.float32)):
                problems.append(f"{name}: F32 values differ")
            n_exact += 1
        else:
            want = val.astype(np.float16).astype(np.float32)
            if not np.array_equal(got, want):
                problems.append(f"{name}: F16 values differ from the f16 rounding")
            max_err = max(max_err, float(np.abs(got - val).max()) if got.size else 0.0)
            n_f16 += 1
        # dtype policy
        if mode == "f32" and qt != QT.F32:
            problems.append(f"{name}: {qt.name} in an f32 variant")
        if mode != "f32":
            want_f32 = len(shape) == 1 or (era != "era1" and name in F32_ALWAYS_ERA2)
            if want_f32 != (qt == QT.F32):
                problems.append(f"{name}: {qt.name} breaks Ollama's dtype rule")
    return {
        "keys": len(keys), "tensors": len(names), "problems": problems,
        "exact_f32": n_exact, "f16": n_f16, "block_tensors": n_blocks, "max_f16_rounding": max_err,
        "has_chat_template": "tokenizer.chat_template" in keys,
    }


def hf_name_of(name, era, ck):
    if name == "v.tile_position_embd.gate":
        return "vision_model.gated_positional_embedding.gate"
    if not hasattr(ck, "_rev"):
        ck._rev = {}
    if era not in ck._rev:
        ck._rev[era] = {gguf_name(h, era)[0]: h for h in ck.order}
    return ck._rev[era][name]


# ------------------------------------------------------------------------------------------------
# Ollama model store (manifests + blobs)
# ------------------------------------------------------------------------------------------------

def human_number(b):
    """format.HumanNumber (Ollama), used for the config's model_type."""
    if b >= 1_000_000_000:
        x = b / 1e9
        return f"{x:.0f}B" if x == math.floor(x) else f"{x:.1f}B"
    if b >= 1_000_000:
        x = b / 1e6
        return f"{x:.0f}M" if x == math.floor(x) else f"{x:.2f}M"
    if b >= 1000:
        return f"{b / 1000:.0f}K"
    return str(b)


def go_json(obj):
    """encoding/json Encoder output: compact, HTML characters escaped, trailing newline."""
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    s = s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return s + "\n"


class Store:
    def __init__(self, root):
        self.root = root
        self.blobs = os.path.join(root, "blobs")
        os.makedirs(self.blobs, exist_ok=True)

    def put_bytes(self, data, media_type):
        d = hashlib.sha256(data).hexdigest()
        p = os.path.join(self.blobs, f"sha256-{d}")
        if not os.path.exists(p):
            with open(p + ".tmp", "wb") as f:
                f.write(data)
            os.replace(p + ".tmp", p)
        return {"mediaType": media_type, "digest": f"sha256:{d}", "size": len(data)}

    def put_file(self, path, media_type):
        d = sha256_file(path)
        p = os.path.join(self.blobs, f"sha256-{d}")
        if not os.path.exists(p):
            try:
                os.link(path, p)
            except OSError:
                shutil.copyfile(path, p)
        return {"mediaType": media_type, "digest": f"sha256:{d}", "size": os.path.getsize(path)}

    def manifest(self, tag, gguf_layers, file_type_name, n_params):
        """gguf_layers: [(path, media type)] in manifest order (model, projector)."""
        layers = [self.put_file(p, mt) for p, mt in gguf_layers]
        layers.append(self.put_bytes(OLLAMA_TEMPLATE.encode(), "application/vnd.ollama.image.template"))
        layers.append(self.put_bytes(LICENSE_STANDIN.encode(), "application/vnd.ollama.image.license"))
        layers.append(self.put_bytes(OLLAMA_PARAMS.encode(), "application/vnd.ollama.image.params"))
        config = {
            "model_format": "gguf",
            "model_family": "mllama",
            "model_families": ["mllama"] * len(gguf_layers),
            "model_type": human_number(n_params),
            "file_type": file_type_name,
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
        }
        cfg = self.put_bytes(go_json(config).encode(), "application/vnd.docker.container.image.v1+json")
        m = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": cfg,
            "layers": layers,
        }
        d = os.path.join(self.root, "manifests", "registry.ollama.ai", "library", MODEL_NAME)
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, tag)
        with open(p, "w") as f:
            f.write(go_json(m))
        return p

    def verify(self):
        problems = []
        mdir = os.path.join(self.root, "manifests", "registry.ollama.ai", "library", MODEL_NAME)
        for tag in sorted(os.listdir(mdir)):
            m = json.load(open(os.path.join(mdir, tag)))
            for l in [m["config"]] + m["layers"]:
                p = os.path.join(self.blobs, l["digest"].replace(":", "-"))
                if not os.path.exists(p):
                    problems.append(f"{tag}: missing blob {l['digest']}")
                elif sha256_file(p) != l["digest"].split(":")[1] or os.path.getsize(p) != l["size"]:
                    problems.append(f"{tag}: blob {l['digest']} digest/size mismatch")
        return problems


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------

def default_models():
    ms = []
    base = os.path.join(REPO, "tests", "fixtures", "models")
    if os.path.isdir(base):
        for n in sorted(os.listdir(base)):
            if os.path.isfile(os.path.join(base, n, "model", "config.json")):
                ms.append(os.path.join(base, n, "model"))
    return ms


def model_key(d):
    d = os.path.abspath(d)
    return os.path.basename(os.path.dirname(d)) if os.path.basename(d) == "model" else os.path.basename(d)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="HF checkpoint dir (repeatable; default: every tests/fixtures/models/*/model)")
    ap.add_argument("--out", default="/tmp/ollama-fx", help="output root (default /tmp/ollama-fx)")
    ap.add_argument("--era", action="append", choices=ERAS, help="eras to write (default: all)")
    ap.add_argument("--dtype", action="append", choices=["f32", "f16"], help="float variants (default f32 unless a quant source is given)")
    ap.add_argument("--quant", action="append", default=[], metavar="TYPE", help="run our quantize binary with -t TYPE and use its text blocks (repeatable)")
    ap.add_argument("--quant-gguf", action="append", default=[], metavar="FILE", help="one of our GGUFs of the same checkpoint, source of the text-matrix blocks (repeatable; needs a single --model)")
    ap.add_argument("--quantize-bin", default=os.path.join(REPO, "target", "release", "quantize"))
    ap.add_argument("--era1-cross-qk", choices=["ggml", "hf"], default="ggml", help="era-1 cross-attention q/k row order (unconfirmed; default ggml, see the spec)")
    ap.add_argument("--era1-vision-qk", choices=["ggml", "hf"], default="ggml", help="era-1 projector q/k row order (numerically irrelevant; default ggml)")
    ap.add_argument("--chat-template-kv", action="store_true", help="also write tokenizer.chat_template (from tokenizer_config.json) into the blobs, as Ollama's converters did")
    ap.add_argument("--no-eos-token-ids", dest="eos_token_ids", action="store_false", help="omit tokenizer.ggml.eos_token_ids (era 2; present since Ollama commit 333e36042)")
    ap.add_argument("--manifest-root", help="also lay out an Ollama model store (manifests/ + blobs/) here")
    ap.add_argument("--latest", choices=ERAS, default="era2b", help="era the store's `latest` tag points at (default era2b)")
    ap.add_argument("--no-verify", dest="verify", action="store_false")
    args = ap.parse_args()

    models = args.model or default_models()
    if not models:
        die("no --model given and no tests/fixtures/models/*/model found")
    if args.quant_gguf and len(models) != 1:
        die("--quant-gguf needs exactly one --model")
    eras = args.era or list(ERAS)
    dtypes = args.dtype or ([] if (args.quant or args.quant_gguf) else ["f32"])

    index = {"generator": "scripts/gen_ollama_fixtures.py", "options": {
        "era1_cross_qk": args.era1_cross_qk, "era1_vision_qk": args.era1_vision_qk,
        "chat_template_kv": args.chat_template_kv, "eos_token_ids": args.eos_token_ids}, "models": {}}
    idx_path = os.path.join(args.out, "index.json")
    if os.path.exists(idx_path):
        try:
            old = json.load(open(idx_path))
            index["models"] = old.get("models", {})
        except (OSError, ValueError):
            pass
    store = Store(args.manifest_root) if args.manifest_root else None
    all_ok = True
    latest_done = False
    for mdir in models:
        ck = Checkpoint(mdir)
        key = model_key(mdir)
        vocab = Vocab(mdir, ck.config.get("vocab_size") or ck.text.get("vocab_size") or 0)
        b = Builder(ck, vocab, args)
        sources = []  # (variant label, mode, QuantSource|None)
        for d in dtypes:
            sources.append((d, d, None))
        for ty in args.quant:
            qdir = os.path.join(args.out, key)
            os.makedirs(qdir, exist_ok=True)
            qpath = os.path.join(qdir, f"source-{ty}.gguf")
            if not os.path.exists(args.quantize_bin):
                die(f"{args.quantize_bin} not found: build it with `cargo build --release -p quantize` or pass --quantize-bin/--quant-gguf")
            subprocess.run([args.quantize_bin, mdir, "-o", qpath, "-t", ty, "-q"], check=True, stdout=subprocess.DEVNULL)
            qs = QuantSource(qpath)
            sources.append((qs.label, "quant", qs))
        for qp in args.quant_gguf:
            qs = QuantSource(qp)
            sources.append((qs.label, "quant", qs))
        mentry = index["models"].setdefault(key, {"checkpoint": os.path.abspath(mdir), "variants": {}})
        for label, mode, qs in sources:
            ventry = {"mode": mode, "eras": {}}
            if qs:
                ventry["source_gguf"] = os.path.abspath(qs.path)
                ventry["text_matrix_types"] = qs.text_types
            for era in eras:
                outdir = os.path.join(args.out, key, label, era)
                files, conv = b.build(era, mode, qs, outdir)
                eentry = {"conventions": conv, "files": []}
                if era == "era1":
                    eentry["rope_freqs_impl"] = getattr(b, "rope_impl", None)
                for role, path, ts in files:
                    fe = {"role": role, "path": os.path.abspath(path), "sha256": sha256_file(path),
                          "bytes": os.path.getsize(path), "tensors": len(ts)}
                    if args.verify:
                        res = verify_file(path, role, era, mode, conv, ck, qs, args, ts)
                        fe.update({"keys": res["keys"], "verified": not res["problems"],
                                   "has_chat_template": res["has_chat_template"]})
                        if res["problems"]:
                            all_ok = False
                            for p in res["problems"][:20]:
                                print(f"  FAIL {path}: {p}", file=sys.stderr)
                        status = "ok" if not res["problems"] else "FAILED"
                        print(f"{key}/{label}/{era}/{os.path.basename(path)}: {res['keys']} keys, {res['tensors']} tensors"
                              f" ({res['exact_f32']} F32 exact, {res['f16']} F16, {res['block_tensors']} block tensors) {status}")
                    eentry["files"].append(fe)
                ventry["eras"][era] = eentry
                if store:
                    layers = [(fe["path"], "application/vnd.ollama.image.model" if fe["role"] == "model"
                               else "application/vnd.ollama.image.projector") for fe in eentry["files"]]
                    # config.model_type/file_type come from the first GGUF layer (server/create.go)
                    n_params = sum(int(np.prod(b.shape_of(t.name))) for t in files[0][2])
                    ft = {"f32": 0, "f16": 1}.get(mode, qs.file_type if qs else 0)
                    ft_name = FILE_TYPE_NAMES.get(ft, "unknown") if ft > 0 else "unknown"
                    tag = f"{era}-{label}" if len(models) == 1 else f"{key}-{era}-{label}"
                    store.manifest(tag, layers, ft_name, n_params)
                    eentry["manifest_tag"] = tag
                    if not latest_done and era == args.latest:
                        store.manifest("latest", layers, ft_name, n_params)
                        latest_done = True
            mentry["variants"][label] = ventry
    if store:
        probs = store.verify()
        for p in probs:
            print(f"  FAIL store: {p}", file=sys.stderr)
        all_ok &= not probs
        index["manifest_root"] = os.path.abspath(args.manifest_root)
        print(f"store {args.manifest_root}: {len(os.listdir(os.path.join(args.manifest_root, 'manifests', 'registry.ollama.ai', 'library', MODEL_NAME)))} manifests, "
              f"{len(os.listdir(store.blobs))} blobs {'ok' if not probs else 'FAILED'}")
    os.makedirs(args.out, exist_ok=True)
    with open(idx_path, "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)
    print(f"index: {idx_path}")
    if not all_ok:
        sys.exit(2)


if __name__ == "__main__":
    main()
