#!/usr/bin/env python3
"""Cross-check `quantize` against ggml and gguf-py on whole checkpoints, and record the fixture
tests/fixtures/kquant/quantize_oracle.json that quantize/tests/kquant_oracle.rs checks without
Python.

For every checkpoint (the HF fixtures tests/fixtures/models/*/model, whose text rows are 64..224
values so the K-types fall back, and the generated `k256` checkpoint, whose text rows are 256 or
512 values so the K-types themselves are used) and every file type:

  1. run our `quantize CKPT -o X.gguf -t TYPE`;
  2. read X.gguf with gguf-py's GGUFReader (every tensor's name, type and shape must match our
     plan);
  3. for every block-quantized tensor, rebuild its f32 rows from the checkpoint the way the
     converter does (bf16 -> f32 exactly; self-attention q/k rows RoPE-permuted per head BEFORE
     quantization; a tied output head = the first vocab rows of the embedding table), quantize
     them with ggml's `ggml_quantize_chunk(type, ..., imatrix = NULL)` and compare with our
     bytes block by block;
  4. dequantize our bytes with `gguf.quants.dequantize` and compare bit for bit with our own
     dequantization (`oracle_dump dequant`, i.e. mllama::quant::dequantize).

The script fails on any difference. The fixture holds, per checkpoint and file type, for every
quantized tensor "TYPE SHA": the ggml type and the first 16 hex digits of the sha256 of ggml's
bytes.

Needs the libggml build of tests/fixtures/kquant/README.md and `pip install gguf numpy`:

    python3 scripts/quantize_oracle.py --lib-dir /work/oracle/ggml-build/bin
    python3 scripts/quantize_oracle.py --lib-dir ... --check-only   # nothing written
"""
import argparse
import hashlib
import importlib.util
import json
import os
import struct
import subprocess
import sys
import tempfile
from collections import defaultdict

import numpy as np
import gguf
from gguf import GGUFReader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("kquant_oracle",
                                              os.path.join(ROOT, "scripts/kquant_oracle.py"))
ko = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ko)

FILE_TYPES = ["q4_k_m", "q4_k_s", "q5_k_m", "q5_k_s", "q6_k", "q4_1", "q5_0", "q5_1", "q4_0",
              "q8_0"]
CHECKPOINTS = ["base", "mqa_lastcross", "tile28", "k256"]
# our GgmlType names -> the ggml names kquant_oracle.TYPES uses
GGML_NAME = {"Q4_0": "q4_0", "Q4_1": "q4_1", "Q5_0": "q5_0", "Q5_1": "q5_1", "Q8_0": "q8_0",
             "Q4_K": "q4_K", "Q5_K": "q5_K", "Q6_K": "q6_K"}
SHA_HEX = 16


def run(*cmd, capture=True):
    r = subprocess.run(cmd, cwd=ROOT, capture_output=capture, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return r.stdout


def load_checkpoint(model_dir):
    """Every tensor of the checkpoint as f32 (bf16/f16 -> f32 exactly), by name."""
    out = {}
    for f in sorted(os.listdir(model_dir)):
        if not f.endswith(".safetensors"):
            continue
        raw = open(os.path.join(model_dir, f), "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            a, b = meta["data_offsets"]
            buf = raw[8 + n + a:8 + n + b]
            dt = meta["dtype"]
            if dt == "BF16":
                v = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif dt == "F16":
                v = np.frombuffer(buf, np.float16).astype(np.float32)
            elif dt == "F32":
                v = np.frombuffer(buf, np.float32)
            else:
                sys.exit(f"{name}: dtype {dt}")
            out[name] = v.reshape(meta["shape"])
    return out


def rows_of(ckpt, t):
    """The f32 rows [rows, row_len] of plan entry t, as the converter feeds its quantizer."""
    shape = t["shape"]
    row_len = shape[-1]
    nrows = int(np.prod(shape[:-1]))
    x = ckpt[t["source"]].reshape(-1, row_len)[:nrows]
    hd = t["rope_head_dim"]
    if hd is not None:
        # output row 2i + j of a head = HF row j * hd/2 + i
        r = np.arange(nrows)
        head, k = r // hd, r % hd
        x = x[head * hd + (k % 2) * (hd // 2) + k // 2]
    return np.ascontiguousarray(x, dtype=np.float32)


def check_file(g, ckpt, plan, gguf_path, deq_dir, label, stats):
    reader = GGUFReader(gguf_path)
    by_name = {t.name: t for t in reader.tensors}
    assert len(by_name) == len(plan), (label, len(by_name), len(plan))
    shas = {}
    for t in plan:
        rt = by_name[t["name"]]
        assert rt.tensor_type.name == t["type"], (label, t["name"], rt.tensor_type.name, t["type"])
        assert list(reversed([int(d) for d in rt.shape])) == t["shape"], (label, t["name"])
        if t["type"] not in GGML_NAME:
            continue
        gname = GGML_NAME[t["type"]]
        _, blck, size = ko.TYPES[gname]
        ours = np.ascontiguousarray(rt.data, dtype=np.uint8).reshape(-1, size)
        ref = g.quantize(gname, rows_of(ckpt, t), t["shape"][-1]).reshape(-1, size)
        same = int(np.all(ours == ref, axis=1).sum())
        s = stats[t["type"]]
        s["blocks"] += len(ref)
        s["identical"] += same
        s["tensors"] += 1
        if same != len(ref):
            sys.exit(f"{label}: {t['name']} ({t['type']}): {len(ref) - same} of {len(ref)} "
                     "blocks differ from ggml")
        shas[t["name"]] = f'{t["type"]} {hashlib.sha256(ref.tobytes()).hexdigest()[:SHA_HEX]}'
        # gguf-py's dequantization == ours, bit for bit
        deq_py = gguf.quants.dequantize(np.asarray(rt.data), rt.tensor_type).astype(np.float32)
        deq_ours = np.fromfile(os.path.join(deq_dir, t["name"] + ".f32"), dtype=np.float32)
        eq = deq_py.reshape(-1).view(np.uint32) == deq_ours.view(np.uint32)
        s["values"] += eq.size
        s["deq_equal"] += int(eq.sum())
        if not eq.all():
            sys.exit(f"{label}: {t['name']} ({t['type']}): gguf-py dequantization differs "
                     f"in {int((~eq).sum())} values")
    return shas


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib-dir", required=True)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/kquant/quantize_oracle.json"))
    ap.add_argument("--check-only", action="store_true")
    a = ap.parse_args()
    g = ko.Ggml(a.lib_dir)
    run("cargo", "build", "--release", "-q", "-p", "quantize", "--bin", "quantize",
        "--example", "oracle_dump", "--example", "synth_checkpoint", capture=False)
    tgt = os.path.join(ROOT, "target/release")
    fixture = {"ggml": "llama-cpp-python 0.3.36 sdist (ggml 0.25.3), ggml_quantize_chunk, "
                       "imatrix NULL",
               "sha256_hex_chars": SHA_HEX, "k256_seed": 42, "checkpoints": {}}
    stats = defaultdict(lambda: defaultdict(int))
    with tempfile.TemporaryDirectory() as tmp:
        for label in CHECKPOINTS:
            if label == "k256":
                model = os.path.join(tmp, "k256")
                run(os.path.join(tgt, "examples/synth_checkpoint"), model, "k256")
            else:
                model = os.path.join(ROOT, "tests/fixtures/models", label, "model")
            ckpt = load_checkpoint(model)
            per_type = {}
            for ft in FILE_TYPES:
                out = os.path.join(tmp, f"{label}-{ft}.gguf")
                run(os.path.join(tgt, "quantize"), model, "-o", out, "-t", ft, "-q")
                plan = json.loads(run(os.path.join(tgt, "examples/oracle_dump"), "plan", model, ft))
                deq = os.path.join(tmp, f"deq-{label}-{ft}")
                run(os.path.join(tgt, "examples/oracle_dump"), "dequant", out, deq)
                per_type[ft] = check_file(g, ckpt, plan, out, deq, f"{label} {ft}", stats)
                os.remove(out)
                print(f"{label:14} {ft:7} {len(per_type[ft]):3} quantized tensors match ggml "
                      f"({', '.join(sorted(set(v.split()[0] for v in per_type[ft].values())))})")
            fixture["checkpoints"][label] = per_type
    fixture["compared"] = {k: dict(v) for k, v in sorted(stats.items())}
    print("\nper tensor type: identical blocks / blocks vs ggml; gguf-py dequant equal values")
    for ty, s in sorted(stats.items()):
        print(f"  {ty:5} {s['identical']:7} / {s['blocks']:7} blocks in {s['tensors']:4} tensors;"
              f" dequant {s['deq_equal']} / {s['values']} values bit-equal")
    if not a.check_only:
        with open(a.out, "w") as f:
            json.dump(fixture, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
