#!/usr/bin/env python3
"""Cross-check our GGUF files and quant blocks against the reference Python implementation
(PyPI `gguf`: GGUFReader, gguf.quants).

    pip install gguf numpy safetensors torch
    cargo build --release -p quantize
    python3 scripts/gguf_crosscheck.py --model tests/fixtures/models/base/model \
        --out tests/fixtures/gguf_crosscheck

For every type (f32 f16 bf16 q8_0 q4_0) it converts MODEL with our `quantize`, then:
  1. opens the file with gguf.GGUFReader and records what it sees (every key with its type and
     value, every tensor with type, shape, offset, size and sha256 of its bytes) in
     `view_<type>.json`; the Rust test `tests/gguf_crosscheck.rs` converts the same checkpoint and
     requires its own reader to see exactly the same;
  2. for Q8_0/Q4_0, quantizes each source matrix with gguf.quants.quantize (after the same q/k
     row permutation our converter applies) and compares blocks with ours byte for byte, and
     dequantizes our bytes with gguf.quants.dequantize;
and writes `quant_vectors.safetensors`: f32 inputs (random, adversarial rounding cases, rows of
the model) with gguf.quants' Q8_0/Q4_0 bytes and dequantized values, which the Rust unit test
checks without Python.

With --report-only nothing is written to --out (used to check other checkpoints, e.g. the shared
fixture model), and the summary is printed.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import save_file
import gguf
from gguf import GGUFReader, GGMLQuantizationType as QT
from gguf.quants import quantize, dequantize

TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0"]


def summarize_value(field):
    types = [int(t) for t in field.types]
    v = field.contents()
    if isinstance(v, list) and len(v) > 16:
        return {"types": types, "len": len(v), "head": v[:3], "tail": v[-3:]}
    if isinstance(v, str) and len(v) > 200:
        return {"types": types, "strlen": len(v.encode()), "sha256": hashlib.sha256(v.encode()).hexdigest()}
    if isinstance(v, float):
        v = float(np.float32(v))
    return {"types": types, "value": v}


def reader_view(path):
    r = GGUFReader(path)
    keys = {}
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue
        keys[name] = summarize_value(field)
    tensors = []
    for t in r.tensors:
        data = np.asarray(t.data).tobytes()
        tensors.append({
            "name": t.name,
            "type": int(t.tensor_type),
            "dims": [int(x) for x in t.shape],  # ggml order (innermost first)
            "offset": int(t.data_offset),
            "n_bytes": int(t.n_bytes),
            "sha256": hashlib.sha256(data).hexdigest(),
        })
    return {"key_order": list(keys.keys()), "keys": keys, "tensors": tensors}


def load_hf_f32(model_dir):
    """Every checkpoint tensor as float32 (bf16 widened exactly)."""
    from safetensors import safe_open
    import torch
    out = {}
    files = [f for f in os.listdir(model_dir) if f.endswith(".safetensors")]
    for f in files:
        with safe_open(os.path.join(model_dir, f), "pt") as s:
            for k in s.keys():
                out[k] = s.get_tensor(k).to(torch.float32).numpy()
    return out


def ggml_permute(w, head_dim):
    """HF rotate-half rows -> ggml adjacent-pair rows, per head."""
    n = w.shape[0] // head_dim
    return w.reshape(n, 2, head_dim // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def adversarial_rows(rng):
    rows = []
    # Random normals at several scales.
    for scale in [1e-3, 0.02, 1.0, 50.0]:
        rows.append(rng.standard_normal(256).astype(np.float32) * scale)
    # Ties for the largest magnitude (+m and -m), first one negative / positive.
    r = rng.standard_normal(256).astype(np.float32)
    r[0], r[5] = -3.0, 3.0
    r[32], r[40] = 3.0, -3.0
    rows.append(r)
    # Values exactly on .5 rounding boundaries for Q8_0: amax 127 → d = 1, x = k + 0.5.
    r = (np.arange(256, dtype=np.float32) % 64 - 32) + 0.5
    r[::32] = 127.0
    rows.append(r.astype(np.float32))
    # Q4_0 boundaries: max -8 → d = 1, id = 1: x + 8.5 exactly integral.
    r = (np.arange(256, dtype=np.float32) % 17 - 8).astype(np.float32)
    r[::32] = -8.0
    rows.append(r)
    # All zero, one non-zero, constant blocks.
    rows.append(np.zeros(256, np.float32))
    r = np.zeros(256, np.float32); r[77] = 0.3; rows.append(r)
    rows.append(np.full(256, -0.7, np.float32))
    # Tiny (f16 subnormal scales) and huge (f16 overflow of d) values.
    rows.append(rng.standard_normal(256).astype(np.float32) * 1e-6)
    rows.append(rng.standard_normal(256).astype(np.float32) * 1e-9)
    rows.append(rng.standard_normal(256).astype(np.float32) * 1e6)
    # Scales whose f16 rounding goes up vs down.
    rows.append(np.linspace(-1.0001, 1.0003, 256).astype(np.float32))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default="tests/fixtures/gguf_crosscheck")
    ap.add_argument("--quantize-bin", default="target/release/quantize")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()

    hf = load_hf_f32(args.model)
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    head_dim = cfg["text_config"].get("head_dim") or cfg["text_config"]["hidden_size"] // cfg["text_config"]["num_attention_heads"]
    ok = True
    tmp = tempfile.mkdtemp()
    if not args.report_only:
        os.makedirs(args.out, exist_ok=True)
    for ty in TYPES:
        path = os.path.join(tmp, f"m-{ty}.gguf")
        subprocess.run([args.quantize_bin, args.model, "-o", path, "-t", ty, "-q"], check=True, stdout=subprocess.DEVNULL)
        view = reader_view(path)
        print(f"{ty}: GGUFReader opened {os.path.getsize(path)} bytes: {len(view['keys'])} keys, {len(view['tensors'])} tensors")
        if not args.report_only:
            with open(os.path.join(args.out, f"view_{ty}.json"), "w") as f:
                json.dump(view, f, indent=0, sort_keys=True)
        if ty not in ("q8_0", "q4_0"):
            continue
        qt = QT.Q8_0 if ty == "q8_0" else QT.Q4_0
        r = GGUFReader(path)
        n_t = n_blocks = n_diff_blocks = 0
        max_step = 0
        deq_max = 0.0
        hf_by_gguf = {}
        # Map GGUF names back to HF names for the quantized matrices.
        for t in r.tensors:
            if t.tensor_type != qt:
                continue
            name = t.name
            parts = name.split(".")
            src = None
            perm = False
            if name == "token_embd.weight":
                src = "language_model.model.embed_tokens.weight"
            elif name == "output.weight":
                src = "language_model.lm_head.weight"
            elif name == "mm.0.weight":
                src = "multi_modal_projector.weight"
            elif parts[0] == "blk":
                i = parts[1]
                m = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                     "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                     "ffn_down": "mlp.down_proj", "cross_attn_q_proj": "cross_attn.q_proj",
                     "cross_attn_k_proj": "cross_attn.k_proj", "cross_attn_v_proj": "cross_attn.v_proj",
                     "cross_attn_o_proj": "cross_attn.o_proj"}[parts[2]]
                src = f"language_model.model.layers.{i}.{m}.weight"
                perm = parts[2] in ("attn_q", "attn_k")
            if src is None:
                continue
            w = hf[src]
            if perm:
                w = ggml_permute(w, head_dim)
            ref = quantize(w, qt)
            ours = np.asarray(t.data).reshape(ref.shape)
            bsz = 34 if qt == QT.Q8_0 else 18
            a = ref.reshape(-1, bsz)
            b = ours.reshape(-1, bsz)
            diff = np.any(a != b, axis=1)
            n_t += 1
            n_blocks += a.shape[0]
            n_diff_blocks += int(diff.sum())
            deq_ref = dequantize(ours, qt)
            deq_ref_src = dequantize(ref, qt)
            if diff.any():
                max_step = max(max_step, float(np.abs(deq_ref - deq_ref_src).max()))
            deq_max = max(deq_max, float(np.abs(deq_ref - w).max()))
        print(f"  {ty}: {n_t} tensors, {n_blocks} blocks, {n_diff_blocks} blocks differ from gguf.quants.quantize"
              f" (max dequantized difference {max_step}); max |dequant(ours) - f32| = {deq_max:.4g}")
        ok &= n_diff_blocks == 0

    # Vectors for the Rust unit test.
    rng = np.random.default_rng(1234)
    rows = adversarial_rows(rng)
    for name in ["language_model.model.layers.0.mlp.up_proj.weight", "multi_modal_projector.weight",
                 "language_model.model.embed_tokens.weight"]:
        if name in hf:
            w = hf[name]
            flat = w.reshape(-1)
            n = (flat.size // 256) * 256
            rows.extend(flat[:n].reshape(-1, 256)[:4])
    x = np.stack(rows).astype(np.float32)
    tensors = {"input": x}
    for ty, qt in [("q8_0", QT.Q8_0), ("q4_0", QT.Q4_0)]:
        with np.errstate(all="ignore"):
            q = quantize(x, qt)
            d = dequantize(q, qt)
        tensors[ty] = np.ascontiguousarray(q.astype(np.uint8))
        tensors[ty + "_dequant"] = np.ascontiguousarray(d.astype(np.float32))
    # Random bytes: dequantization of arbitrary block contents (finite scales only).
    for ty, qt, bsz in [("q8_0", QT.Q8_0, 34), ("q4_0", QT.Q4_0, 18)]:
        raw = rng.integers(0, 256, size=(16, 8 * bsz), dtype=np.uint8)
        for blk in range(8):
            raw[:, blk * bsz:blk * bsz + 2] = np.frombuffer(
                rng.uniform(-2, 2, size=16).astype(np.float16).tobytes(), np.uint8).reshape(16, 2)
        tensors[ty + "_random_bytes"] = raw
        tensors[ty + "_random_bytes_dequant"] = dequantize(raw, qt).astype(np.float32)
    if not args.report_only:
        save_file(tensors, os.path.join(args.out, "quant_vectors.safetensors"),
                  metadata={"gguf_py": str(getattr(gguf, "__version__", "0.19.0"))})
    # Check the vectors in Python too (the same comparison the Rust test makes, against ours is
    # impossible here; this only confirms the file is self-consistent).
    print(f"vectors: {x.shape[0]} rows of 256 values")
    if not ok:
        print("MISMATCH: some blocks differ from gguf.quants", file=sys.stderr)
        sys.exit(1)
    print("all quantized blocks byte-identical to gguf.quants.quantize")


if __name__ == "__main__":
    main()
