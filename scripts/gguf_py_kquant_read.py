#!/usr/bin/env python3
"""The runtime's reading side of the new block types against gguf-py (PyPI `gguf`, the oracle).

    pip install gguf numpy safetensors
    python3 scripts/gguf_py_kquant_read.py --out tests/fixtures/gguf_py_kquant/read.gguf

Writes ONE small GGUF with gguf-py's own GGUFWriter. For each type Q4_1, Q5_0, Q5_1, Q4_K, Q5_K,
Q6_K it holds quantized tensors and, beside each, an F32 tensor `<name>.expected` with
`gguf.quants.dequantize` of its bytes:
  - `<t>.quantized` [rows, 256·k]: Q4_1/Q5_0/Q5_1 made by `gguf.quants.quantize` from random
    rows (several magnitudes, a row of zeros, a row with one outlier); gguf-py has no K-quant
    quantizer, so for Q4_K/Q5_K/Q6_K these are blocks made by ggml's own `quantize_row_*_ref`,
    taken from tests/fixtures/kquant/<t>.safetensors (`synthetic_q`, see its README);
  - `<t>.random` [rows, 256·k]: random block bytes with sane scale fields: f16 `d`/`m`/`dmin`
    drawn from normal values of both signs, zero, the smallest subnormal and ±65504, i.e. every
    quant bit pattern under finite scales.
Before writing it re-reads the file with gguf.GGUFReader and checks that dequantizing what the
reader returns equals the recorded expectation bit for bit (so the fixture is gguf-py's own view).
`tests/gguf_py_kquant.rs` opens the file with our reader and requires our dequantization to equal
every `.expected` value bit for bit (f32 bits, so -0.0 and NaN payloads count).
"""
import argparse
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from gguf.quants import quantize, dequantize
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEGACY = [QT.Q4_1, QT.Q5_0, QT.Q5_1]
KTYPES = [QT.Q4_K, QT.Q5_K, QT.Q6_K]
# Byte offsets of the f16 scale fields in each block (ggml-common.h).
SCALES = {
    QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2],
    QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208],
}


def legacy_rows(rng, rows, cols):
    """Random rows at several magnitudes, a zero row, a row with one outlier."""
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x *= (10.0 ** rng.uniform(-4, 2, size=(rows, 1))).astype(np.float32)
    x[1] = 0.0
    x[2, 17] = 1000.0
    return x


def random_blocks(rng, qt, rows, cols):
    """Random block bytes with finite, sometimes extreme, f16 scale fields."""
    bs, ts = gguf.GGML_QUANT_SIZES[qt]
    nb = rows * cols // bs
    b = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
    special = np.array([0.0, -0.0, 6e-8, -6e-8, 65504.0, -65504.0], dtype=np.float16)
    for off in SCALES[qt]:
        d = (rng.standard_normal(nb) * 10.0 ** rng.uniform(-5, 1, nb)).astype(np.float16)
        d[: len(special)] = special
        b[:, off:off + 2] = d.view(np.uint8).reshape(nb, 2)
    return b.reshape(rows, cols // bs * ts)


def ggml_blocks(qt, rows):
    """Blocks of ggml's reference K-quantizer recorded in tests/fixtures/kquant."""
    name = {QT.Q4_K: "q4_K", QT.Q5_K: "q5_K", QT.Q6_K: "q6_K"}[qt]
    q = load_file(os.path.join(ROOT, "tests/fixtures/kquant", f"{name}.safetensors"))["synthetic_q"]
    n = (q.shape[0] // rows) * rows
    return q[:n].reshape(rows, -1)


def tensors(seed):
    rng = np.random.default_rng(seed)
    out = []  # (name, qtype, bytes [rows, row_bytes], expected f32 [rows, cols])
    for qt in LEGACY + KTYPES:
        t = qt.name.lower()
        if qt in LEGACY:
            q = quantize(legacy_rows(rng, 8, 512), qt)
        else:
            q = ggml_blocks(qt, 3)
        out.append((f"{t}.quantized", qt, q))
        out.append((f"{t}.random", qt, random_blocks(rng, qt, 6, 512)))
    return [(n, qt, q, dequantize(q, qt).astype(np.float32)) for n, qt, q in out]


def write(path, items):
    w = gguf.GGUFWriter(path, "mllama")
    w.add_string("general.name", "gguf-py K-quant read check")
    for name, qt, q, exp in items:
        w.add_tensor(name, q, raw_dtype=qt)
        w.add_tensor(name + ".expected", exp)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def check(path, items):
    """Re-read with GGUFReader; dequantizing what it returns must equal the expectations."""
    r = gguf.GGUFReader(path)
    by = {t.name: t for t in r.tensors}
    counts = {}
    for name, qt, q, exp in items:
        t = by[name]
        assert t.tensor_type == qt, name
        got = dequantize(np.asarray(t.data), qt).astype(np.float32).reshape(exp.shape)
        stored = np.asarray(by[name + ".expected"].data).reshape(exp.shape)
        assert np.array_equal(got.view(np.uint32), exp.view(np.uint32)), name
        assert np.array_equal(stored.view(np.uint32), exp.view(np.uint32)), name
        c = counts.setdefault(qt.name, [0, 0, 0])
        c[0] += exp.size
        c[1] += q.size // gguf.GGML_QUANT_SIZES[qt][1]
        c[2] += int(np.isfinite(exp).sum())
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/gguf_py_kquant/read.gguf"))
    ap.add_argument("--seed", type=int, default=12)
    a = ap.parse_args()
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    items = tensors(a.seed)
    write(a.out, items)
    counts = check(a.out, items)
    from importlib.metadata import version
    print(f"{a.out}: {os.path.getsize(a.out)} bytes; gguf {version('gguf')} reader check passed")
    for t, (vals, blocks, finite) in counts.items():
        print(f"  {t:5s} {blocks:4d} blocks, {vals:6d} values ({finite} finite)")


if __name__ == "__main__":
    sys.exit(main())
