#!/usr/bin/env python3
"""How far llama.cpp's SmolLM2 logits are from exact arithmetic on the same weights.

Evaluates SmolLM2-135M-Instruct.Q4_1.gguf in float64 with numpy on the weights as stored
(dequantized by gguf-py: Q4_1 matrices, Q8_0 tied embedding), with no rounding of activations,
caches or attention, and prints, for each case of tests/fixtures/smollm2/llamacpp_reference.json
at greedy step K (prompt + llama.cpp's first K ids), exact − llama.cpp for llama.cpp's top-5
logits. Measured: up to 0.30 at step 0 and 0.57 (code_raw, K = 1): llama.cpp's own 8-bit
activations and f16 KV cache move these logits that much, which is why tests/smollm2.rs cannot
hold ours to the README's 0.1 and asserts 1.0 (ids must still be equal).

Usage: python3 scripts/smollm2_f64_check.py [K]   (needs numpy and gguf; about 15 s per case)
"""
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

HERE = Path(__file__).resolve().parent.parent / "tests/fixtures/smollm2"
K = int(sys.argv[1]) if len(sys.argv) > 1 else 0
r = GGUFReader(str(HERE / "SmolLM2-135M-Instruct.Q4_1.gguf"))
T = {t.name: t for t in r.tensors}


def w(name):
    t = T[name]
    return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float64)


H, NH, NKV, HD, L, EPS, THETA = 576, 9, 3, 64, 30, 1e-5, 100000.0
NAMES = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
         "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
emb = w("token_embd.weight")
layers = [{k: w(f"blk.{i}.{k}.weight") for k in NAMES} for i in range(L)]
out_norm = w("output_norm.weight")
inv_freq = 1.0 / THETA ** (np.arange(0, HD, 2) / HD)


def rms(x, g):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + EPS) * g


def rope(x, pos):
    """Adjacent-pair rotation: llama.cpp's converter permuted the q/k rows for it."""
    ang = pos[:, None] * inv_freq[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
    out[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
    return out


def last_logits(ids):
    n = len(ids)
    x = emb[ids]
    pos = np.arange(n, dtype=np.float64)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for ly in layers:
        h = rms(x, ly["attn_norm"])
        q = rope((h @ ly["attn_q"].T).reshape(n, NH, HD), pos)
        k = np.repeat(rope((h @ ly["attn_k"].T).reshape(n, NKV, HD), pos), NH // NKV, axis=1)
        v = np.repeat((h @ ly["attn_v"].T).reshape(n, NKV, HD), NH // NKV, axis=1)
        sc = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(HD) + mask
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        sc /= sc.sum(-1, keepdims=True)
        x = x + np.einsum("hqk,khd->qhd", sc, v).reshape(n, H) @ ly["attn_output"].T
        h = rms(x, ly["ffn_norm"])
        g, u = h @ ly["ffn_gate"].T, h @ ly["ffn_up"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ ly["ffn_down"].T
    return rms(x[-1], out_norm) @ emb.T


worst = 0.0
for case in json.loads((HERE / "llamacpp_reference.json").read_text())["cases"]:
    if K >= len(case["steps"]):
        continue
    ids = case["prompt_ids"] + [s["id"] for s in case["steps"][:K]]
    logits = last_logits(ids)
    st = case["steps"][K]
    d = [logits[i] - v for i, v in zip(st["topk_ids"], st["topk_logits"])]
    worst = max(worst, max(abs(x) for x in d))
    print(f"{case['name']:<24} step {K}: exact - llama.cpp = " + " ".join(f"{x:+.3f}" for x in d))
print(f"largest |exact - llama.cpp|: {worst:.3f}")
