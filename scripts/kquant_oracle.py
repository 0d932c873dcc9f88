#!/usr/bin/env python3
"""Oracle fixtures for the K-quant and legacy quant types: ggml's own reference quantizers,
dequantizers and dot products, called through ctypes, cross-checked against gguf-py and against
a float32 numpy port, and recorded for the Rust tests (tests/fixtures/kquant/).

Needs a ggml CPU build (libggml-base.so, libggml-cpu.so) of the llama.cpp tree vendored in the
PyPI sdist of llama-cpp-python 0.3.36 (ggml 0.25.3, llama.cpp 0c1e57098); see
tests/fixtures/kquant/README.md for the build commands. Then:

    pip install gguf numpy safetensors
    python3 scripts/kquant_oracle.py --lib-dir /work/oracle/ggml-build/bin \
        --model tests/fixtures/models/base/model --out tests/fixtures/kquant

With --check-only nothing is written (all cross-checks still run and the summary is printed).

What is called (all with imatrix = NULL, so every type takes ggml's `quantize_row_<t>_ref`):
  * quantize: ggml_quantize_chunk(type, src, dst, start=0, nrows, n_per_row, NULL) for
    Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K; for Q8_K (which ggml_quantize_chunk does not take)
    the exported quantize_row_q8_K_ref, and also ggml_get_type_traits_cpu(Q8_K)->from_float
    (on x86 and arm that is quantize_row_q8_K, which just calls quantize_row_q8_K_ref);
  * dequantize: ggml_get_type_traits(type)->to_float (dequantize_row_<t>); for Q8_K, whose
    to_float is NULL, the exported dequantize_row_q8_K;
  * dot: ggml_get_type_traits_cpu(type)->vec_dot (AVX2 build: ggml_vec_dot_<t>_q8_K) and the
    exported scalar ggml_vec_dot_<t>_q8_K_generic, on Q8_K activations.
Cross-checks (asserted; the script fails on any mismatch):
  * gguf.quants.dequantize(blocks) == ggml to_float(blocks), bit for bit, every type but Q8_K
    (gguf-py has no Q8_K);
  * gguf.quants.quantize(x) == ggml blocks, byte for byte, for the legacy types (gguf-py has no
    K-quant quantizer);
  * a float32 numpy port of quantize_row_{q4_K,q5_K,q6_K,q8_K}_ref (below) == ggml blocks;
  * Q8_K: quantize_row_q8_K_ref == the CPU backend's from_float;
  * bytes of a block that the quantizer leaves unwritten (dst prefilled with 0x00 vs 0xFF).
"""
import argparse
import ctypes as C
import glob
import hashlib
import json
import os
import struct
import sys

import numpy as np
from safetensors.numpy import save_file
import gguf
from gguf import GGMLQuantizationType as QT

f32 = np.float32
QK_K = 256

# ggml type ids (ggml.h, enum ggml_type) and block layouts (ggml-common.h)
TYPES = {
    #  name    id  block  bytes
    "q4_0": (2, 32, 18),
    "q4_1": (3, 32, 20),
    "q5_0": (6, 32, 22),
    "q5_1": (7, 32, 24),
    "q8_0": (8, 32, 34),
    "q4_K": (12, 256, 144),
    "q5_K": (13, 256, 176),
    "q6_K": (14, 256, 210),
    "q8_K": (15, 256, 292),
}
LEGACY = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]
KQUANT = ["q4_K", "q5_K", "q6_K"]
GGUF_QT = {"q4_0": QT.Q4_0, "q4_1": QT.Q4_1, "q5_0": QT.Q5_0, "q5_1": QT.Q5_1, "q8_0": QT.Q8_0,
           "q4_K": QT.Q4_K, "q5_K": QT.Q5_K, "q6_K": QT.Q6_K}

LAYOUTS = {
    "q4_0": "f16 d | u8 qs[16]; x[j] = d*((qs[j]&15)-8), x[j+16] = d*((qs[j]>>4)-8)",
    "q4_1": "f16 d | f16 m | u8 qs[16]; x[j] = d*(qs[j]&15)+m, x[j+16] = d*(qs[j]>>4)+m",
    "q5_0": "f16 d | u8 qh[4] (u32 LE, bit j = 5th bit of value j) | u8 qs[16]; x = d*(q-16)",
    "q5_1": "f16 d | f16 m | u8 qh[4] | u8 qs[16]; x = d*q + m",
    "q8_0": "f16 d | i8 qs[32]; x = d*q",
    "q4_K": "f16 d | f16 dmin | u8 scales[12] (8 x (6-bit scale, 6-bit min), get_scale_min_k4) "
            "| u8 qs[128] (64-value groups: low nibbles = first 32, high nibbles = next 32); "
            "x = d*sc*q - dmin*m",
    "q5_K": "f16 d | f16 dmin | u8 scales[12] | u8 qh[32] (bit 2g / 2g+1 of qh[l]: 5th bit of "
            "value 64g+l / 64g+32+l) | u8 qs[128]; x = d*sc*q - dmin*m",
    "q6_K": "u8 ql[128] | u8 qh[64] | i8 scales[16] | f16 d (last!); x = d*sc*(q-32), "
            "16 sub-blocks of 16",
    "q8_K": "f32 d | i8 qs[256] | i16 bsums[16] (sum of qs over each 16); x = d*q",
}


# ----------------------------------------------------------------------------------------------
# ggml through ctypes

class TypeTraits(C.Structure):  # ggml.h struct ggml_type_traits
    _fields_ = [("type_name", C.c_char_p), ("blck_size", C.c_int64),
                ("blck_size_interleave", C.c_int64), ("type_size", C.c_size_t),
                ("is_quantized", C.c_bool), ("to_float", C.c_void_p),
                ("from_float_ref", C.c_void_p)]


class TypeTraitsCpu(C.Structure):  # ggml-cpu.h struct ggml_type_traits_cpu
    _fields_ = [("from_float", C.c_void_p), ("vec_dot", C.c_void_p),
                ("vec_dot_type", C.c_int), ("nrows", C.c_int64)]


ROW_FN = C.CFUNCTYPE(None, C.c_void_p, C.c_void_p, C.c_int64)  # to_float / from_float
VEC_DOT_FN = C.CFUNCTYPE(None, C.c_int, C.POINTER(C.c_float), C.c_size_t, C.c_void_p,
                         C.c_size_t, C.c_void_p, C.c_size_t, C.c_int)


class Ggml:
    def __init__(self, lib_dir):
        self.base = C.CDLL(os.path.join(lib_dir, "libggml-base.so"), mode=C.RTLD_GLOBAL)
        self.cpu = C.CDLL(os.path.join(lib_dir, "libggml-cpu.so"), mode=C.RTLD_GLOBAL)
        b, c = self.base, self.cpu
        b.ggml_quantize_chunk.restype = C.c_size_t
        b.ggml_quantize_chunk.argtypes = [C.c_int, C.c_void_p, C.c_void_p, C.c_int64, C.c_int64,
                                          C.c_int64, C.c_void_p]
        b.ggml_quantize_init.argtypes = [C.c_int]
        b.ggml_quantize_requires_imatrix.restype = C.c_bool
        b.ggml_quantize_requires_imatrix.argtypes = [C.c_int]
        b.ggml_get_type_traits.restype = C.POINTER(TypeTraits)
        b.ggml_get_type_traits.argtypes = [C.c_int]
        c.ggml_get_type_traits_cpu.restype = C.POINTER(TypeTraitsCpu)
        c.ggml_get_type_traits_cpu.argtypes = [C.c_int]
        for fn in ("quantize_row_q8_K_ref", "dequantize_row_q8_K"):
            getattr(b, fn).argtypes = [C.c_void_p, C.c_void_p, C.c_int64]
            getattr(b, fn).restype = None
        c.ggml_cpu_init()
        for name, (tid, blck, size) in TYPES.items():
            tr = b.ggml_get_type_traits(tid).contents
            assert tr.type_name.decode() == name, (tr.type_name, name)
            assert tr.blck_size == blck and tr.type_size == size, name
            if name != "q8_K":
                assert not b.ggml_quantize_requires_imatrix(tid), name
                b.ggml_quantize_init(tid)

    def quantize(self, name, x, n_per_row, fill=0):
        """x: f32 [nrows, n_per_row] (or flat); returns u8 [nrows, row_bytes]."""
        tid, blck, size = TYPES[name]
        x = np.ascontiguousarray(x, dtype=f32).reshape(-1, n_per_row)
        nrows = x.shape[0]
        row_bytes = n_per_row // blck * size
        out = np.full((nrows, row_bytes), fill, dtype=np.uint8)
        if name == "q8_K":
            self.base.quantize_row_q8_K_ref(x.ctypes.data, out.ctypes.data, x.size)
        else:
            r = self.base.ggml_quantize_chunk(tid, x.ctypes.data, out.ctypes.data, 0, nrows,
                                              n_per_row, None)
            assert r == out.nbytes, (name, r, out.nbytes)
        return out

    def q8k_cpu_from_float(self, x, fill=0):
        x = np.ascontiguousarray(x, dtype=f32).reshape(-1, QK_K)
        out = np.full((x.shape[0], 292), fill, dtype=np.uint8)
        fn = ROW_FN(self.cpu.ggml_get_type_traits_cpu(15).contents.from_float)
        fn(x.ctypes.data, out.ctypes.data, x.size)
        return out

    def dequantize(self, name, q):
        tid, blck, size = TYPES[name]
        q = np.ascontiguousarray(q, dtype=np.uint8)
        nblocks = q.size // size
        out = np.empty(nblocks * blck, dtype=f32)
        if name == "q8_K":
            self.base.dequantize_row_q8_K(q.ctypes.data, out.ctypes.data, out.size)
        else:
            ptr = self.base.ggml_get_type_traits(tid).contents.to_float
            assert ptr, name
            ROW_FN(ptr)(q.ctypes.data, out.ctypes.data, out.size)
        return out.reshape(q.shape[0], -1) if q.ndim == 2 else out

    def vec_dot(self, name, wq, yq, n, generic=False):
        tid = TYPES[name][0]
        if generic:
            fn = VEC_DOT_FN(C.cast(getattr(self.cpu, f"ggml_vec_dot_{name}_q8_K_generic"),
                                   C.c_void_p).value)
        else:
            tr = self.cpu.ggml_get_type_traits_cpu(tid).contents
            assert tr.vec_dot_type == 15 and tr.nrows == 1, (name, tr.vec_dot_type, tr.nrows)
            fn = VEC_DOT_FN(tr.vec_dot)
        s = C.c_float(0)
        wq = np.ascontiguousarray(wq)
        yq = np.ascontiguousarray(yq)
        fn(n, C.byref(s), 0, wq.ctypes.data, 0, yq.ctypes.data, 0, 1)
        return f32(s.value)


# ----------------------------------------------------------------------------------------------
# float32 numpy port of ggml-quants.c's reference quantizers (vectorized over blocks; every loop
# over elements is kept sequential so float sums round exactly as in C; ggml-base is compiled
# without -mfma, so there is no contraction into FMA either)

def nearest_int(v):
    """ggml's nearest_int: add 1.5*2^23 and take the low mantissa bits (round half to even)."""
    t = (np.asarray(v, dtype=f32) + f32(12582912.0)).view(np.int32)
    return (t & 0x007FFFFF) - 0x00400000


def make_qkx2_quants(x, w, nmax, rmin, rdelta, nstep):
    """x, w: f32 [B, n]. Returns (scale [B], the_min [B], L u8 [B, n]); use_mad = false."""
    B, n = x.shape
    mn = x[:, 0].copy()
    mx = x[:, 0].copy()
    sum_w = w[:, 0].copy()
    sum_x = sum_w * x[:, 0]
    for i in range(1, n):
        mn = np.where(x[:, i] < mn, x[:, i], mn)
        mx = np.where(x[:, i] > mx, x[:, i], mx)
        sum_w = sum_w + w[:, i]
        sum_x = sum_x + w[:, i] * x[:, i]
    mn = np.where(mn > 0, f32(0), mn)
    degenerate = mx == mn
    rng = np.where(degenerate, f32(1), mx - mn)
    iscale = f32(nmax) / rng
    scale = f32(1) / iscale
    L = np.zeros((B, n), dtype=np.int32)
    best = np.zeros(B, dtype=f32)
    for i in range(n):
        l = np.clip(nearest_int(iscale * (x[:, i] - mn)), 0, nmax)
        L[:, i] = l
        diff = scale * l.astype(f32) + mn - x[:, i]
        best = best + w[:, i] * (diff * diff)
    for step in range(nstep + 1):
        # (max - min) with the current min: ggml updates `min` inside this loop too
        rng = np.where(degenerate, f32(1), mx - mn)
        isc = (f32(rmin) + f32(rdelta) * f32(step) + f32(nmax)) / rng
        sum_l = np.zeros(B, f32)
        sum_l2 = np.zeros(B, f32)
        sum_xl = np.zeros(B, f32)
        Laux = np.zeros((B, n), dtype=np.int32)
        for i in range(n):
            l = np.clip(nearest_int(isc * (x[:, i] - mn)), 0, nmax)
            Laux[:, i] = l
            lf = l.astype(f32)
            sum_l = sum_l + w[:, i] * lf
            sum_l2 = sum_l2 + w[:, i] * lf * lf
            sum_xl = sum_xl + w[:, i] * lf * x[:, i]
        D = sum_w * sum_l2 - sum_l * sum_l
        ok = D > 0
        Ds = np.where(ok, D, f32(1))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / Ds
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / Ds
        pos = this_min > 0
        this_min = np.where(pos, f32(0), this_min)
        sl2 = np.where(sum_l2 != 0, sum_l2, f32(1))
        this_scale = np.where(pos, sum_xl / sl2, this_scale)
        cur = np.zeros(B, f32)
        for i in range(n):
            diff = this_scale * Laux[:, i].astype(f32) + this_min - x[:, i]
            cur = cur + w[:, i] * (diff * diff)
        take = ok & (cur < best) & ~degenerate
        L[take] = Laux[take]
        best = np.where(take, cur, best)
        scale = np.where(take, this_scale, scale)
        mn = np.where(take, this_min, mn)
    scale = np.where(degenerate, f32(0), scale)
    L[degenerate] = 0
    return scale.astype(f32), (-mn).astype(f32), L


def pack_scales_k4(ls, lm):
    """ls, lm: int [B, 8] (6-bit) -> u8 [B, 12] as in quantize_row_q4_K_ref."""
    B = ls.shape[0]
    s = np.zeros((B, 12), dtype=np.int32)
    s[:, 0:4] = ls[:, 0:4]
    s[:, 4:8] = lm[:, 0:4]
    for j in range(4, 8):
        s[:, j + 4] = (ls[:, j] & 0xF) | ((lm[:, j] & 0xF) << 4)
        s[:, j - 4] |= (ls[:, j] >> 4) << 6
        s[:, j] |= (lm[:, j] >> 4) << 6
    return (s & 0xFF).astype(np.uint8)


def unpack_scales_k4(s):
    s = s.astype(np.int32)
    sc = np.zeros((s.shape[0], 8), np.int32)
    m = np.zeros((s.shape[0], 8), np.int32)
    for j in range(8):
        if j < 4:
            sc[:, j] = s[:, j] & 63
            m[:, j] = s[:, j + 4] & 63
        else:
            sc[:, j] = (s[:, j + 4] & 0xF) | ((s[:, j - 4] >> 6) << 4)
            m[:, j] = (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4)
    return sc, m


def port_q45_K(x, nmax):
    """quantize_row_q4_K_ref (nmax 15) / quantize_row_q5_K_ref (nmax 31); x f32 [B, 256]."""
    B = x.shape[0]
    xs = x.reshape(B * 8, 32)
    sum_x2 = np.zeros(B * 8, f32)
    for l in range(32):
        sum_x2 = sum_x2 + xs[:, l] * xs[:, l]
    av_x = np.sqrt(sum_x2 / f32(32))
    w = av_x[:, None] + np.abs(xs)
    if nmax == 15:
        scales, mins, L = make_qkx2_quants(xs, w, 15, -1.0, 0.1, 20)
    else:
        scales, mins, L = make_qkx2_quants(xs, w, 31, -0.5, 0.1, 15)
    scales = scales.reshape(B, 8)
    mins = mins.reshape(B, 8)
    L = L.reshape(B, 8, 32)
    max_scale = np.zeros(B, f32)
    max_min = np.zeros(B, f32)
    for j in range(8):
        max_scale = np.where(scales[:, j] > max_scale, scales[:, j], max_scale)
        max_min = np.where(mins[:, j] > max_min, mins[:, j], max_min)
    inv_scale = np.where(max_scale > 0, f32(63) / np.where(max_scale > 0, max_scale, f32(1)), f32(0))
    inv_min = np.where(max_min > 0, f32(63) / np.where(max_min > 0, max_min, f32(1)), f32(0))
    ls = np.minimum(63, nearest_int(inv_scale[:, None] * scales) & 0xFF)  # uint8_t, then MIN
    lm = np.minimum(63, nearest_int(inv_min[:, None] * mins) & 0xFF)
    sbytes = pack_scales_k4(ls, lm)
    d16 = (max_scale / f32(63)).astype(np.float16)
    dmin16 = (max_min / f32(63)).astype(np.float16)
    sc, m = unpack_scales_k4(sbytes)
    d = d16.astype(f32)[:, None] * sc.astype(f32)  # [B, 8]
    dm = dmin16.astype(f32)[:, None] * m.astype(f32)
    nz = d != 0
    dd = np.where(nz, d, f32(1))
    Lnew = np.clip(nearest_int((x.reshape(B, 8, 32) + dm[:, :, None]) / dd[:, :, None]), 0, nmax)
    L = np.where(nz[:, :, None], Lnew, L).reshape(B, 256)
    head = np.concatenate([d16.view(np.uint8).reshape(B, 2), dmin16.view(np.uint8).reshape(B, 2),
                           sbytes], axis=1)
    if nmax == 15:
        qs = np.zeros((B, 128), np.int32)
        for g in range(4):
            qs[:, 32 * g:32 * g + 32] = L[:, 64 * g:64 * g + 32] | (L[:, 64 * g + 32:64 * g + 64] << 4)
        return np.concatenate([head, qs.astype(np.uint8)], axis=1)
    qh = np.zeros((B, 32), np.int32)
    ql = np.zeros((B, 128), np.int32)
    for g in range(4):
        l1 = L[:, 64 * g:64 * g + 32]
        l2 = L[:, 64 * g + 32:64 * g + 64]
        qh |= (l1 > 15).astype(np.int32) << (2 * g)
        qh |= (l2 > 15).astype(np.int32) << (2 * g + 1)
        ql[:, 32 * g:32 * g + 32] = (l1 & 15) | ((l2 & 15) << 4)
    return np.concatenate([head, qh.astype(np.uint8), ql.astype(np.uint8)], axis=1)


GROUP_MAX_EPS = f32(1e-15)


def make_qx_quants_rmse1(x, nmax):
    """make_qx_quants(n, nmax, x, L, rmse_type = 1, qw = NULL); x f32 [B, n]."""
    B, n = x.shape
    amax = np.zeros(B, f32)
    mx = np.zeros(B, f32)
    for i in range(n):
        ax = np.abs(x[:, i])
        upd = ax > amax
        amax = np.where(upd, ax, amax)
        mx = np.where(upd, x[:, i], mx)
    zero = amax < GROUP_MAX_EPS
    mxs = np.where(zero, f32(1), mx)

    def attempt(iscale):
        sumlx = np.zeros(B, f32)
        suml2 = np.zeros(B, f32)
        L = np.zeros((B, n), np.int32)
        for i in range(n):
            l = np.clip(nearest_int(iscale * x[:, i]), -nmax, nmax - 1)
            L[:, i] = l + nmax
            w = x[:, i] * x[:, i]
            lf = l.astype(f32)
            sumlx = sumlx + w * x[:, i] * lf
            suml2 = suml2 + w * lf * lf
        return sumlx, suml2, L

    sumlx, suml2, L = attempt(f32(-nmax) / mxs)
    scale = np.where(suml2 != 0, sumlx / np.where(suml2 != 0, suml2, f32(1)), f32(0))
    best = scale * sumlx
    for i_s in range(-9, 10):
        if i_s == 0:
            continue
        iscale = -(f32(nmax) + f32(0.1) * f32(i_s)) / mxs
        slx, sl2, Ln = attempt(iscale)
        take = (sl2 > 0) & (slx * slx > best * sl2)
        L[take] = Ln[take]
        sc_new = slx / np.where(sl2 != 0, sl2, f32(1))
        scale = np.where(take, sc_new, scale)
        best = np.where(take, sc_new * slx, best)
    scale = np.where(zero, f32(0), scale)
    L[zero] = 0
    return scale.astype(f32), L


def port_q6_K(x):
    B = x.shape[0]
    scales, L = make_qx_quants_rmse1(x.reshape(B * 16, 16), 32)
    scales = scales.reshape(B, 16)
    L = L.reshape(B, 16, 16)
    max_scale = np.zeros(B, f32)
    max_abs = np.zeros(B, f32)
    for ib in range(16):
        a = np.abs(scales[:, ib])
        upd = a > max_abs
        max_abs = np.where(upd, a, max_abs)
        max_scale = np.where(upd, scales[:, ib], max_scale)
    zero = max_abs < GROUP_MAX_EPS
    iscale = f32(-128) / np.where(zero, f32(1), max_scale)
    d16 = (f32(1) / iscale).astype(np.float16)
    sc = np.minimum(127, nearest_int(iscale[:, None] * scales))  # stored as int8
    d = d16.astype(f32)[:, None] * sc.astype(f32)
    nz = d != 0
    dd = np.where(nz, d, f32(1))
    Lnew = np.clip(nearest_int(x.reshape(B, 16, 16) / dd[:, :, None]), -32, 31) + 32
    L = np.where(nz[:, :, None], Lnew, L).reshape(B, 256)
    ql = np.zeros((B, 128), np.int32)
    qh = np.zeros((B, 64), np.int32)
    for h in range(2):
        Lh = L[:, 128 * h:128 * h + 128]
        q1, q2, q3, q4 = (Lh[:, 32 * k:32 * k + 32] for k in range(4))
        ql[:, 64 * h:64 * h + 32] = (q1 & 15) | ((q3 & 15) << 4)
        ql[:, 64 * h + 32:64 * h + 64] = (q2 & 15) | ((q4 & 15) << 4)
        qh[:, 32 * h:32 * h + 32] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
    out = np.concatenate([ql.astype(np.uint8), qh.astype(np.uint8),
                          sc.astype(np.int8).view(np.uint8), d16.view(np.uint8).reshape(B, 2)],
                         axis=1)
    out[zero] = 0  # memset(&y[i], 0, sizeof(block_q6_K))
    return out


def port_q8_K(x):
    """quantize_row_q8_K_ref. For an all-zero block ggml writes d = 0 and qs = 0 but leaves
    bsums unwritten; the port (and every recorded fixture) has zeros there."""
    B = x.shape[0]
    amax = np.zeros(B, f32)
    mx = np.zeros(B, f32)
    for j in range(256):
        ax = np.abs(x[:, j])
        upd = ax > amax
        amax = np.where(upd, ax, amax)
        mx = np.where(upd, x[:, j], mx)
    zero = amax == 0
    iscale = f32(-127) / np.where(zero, f32(1), mx)
    v = np.minimum(127, nearest_int(iscale[:, None] * x))
    qs = v.astype(np.int8)
    qs[zero] = 0
    bsums = qs.astype(np.int32).reshape(B, 16, 16).sum(axis=2).astype(np.int16)
    d = np.where(zero, f32(0), f32(1) / iscale).astype(f32)
    return np.concatenate([d.view(np.uint8).reshape(B, 4), qs.view(np.uint8),
                           bsums.view(np.uint8).reshape(B, 32)], axis=1)


PORTS = {"q4_K": lambda x: port_q45_K(x, 15), "q5_K": lambda x: port_q45_K(x, 31),
         "q6_K": port_q6_K, "q8_K": port_q8_K}


# ----------------------------------------------------------------------------------------------
# inputs

def load_model_matrices(model_dir):
    """Every 2-D tensor of the checkpoint (bf16 -> f32, exact), in name order."""
    out = []
    for path in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        raw = open(path, "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        for name, meta in sorted(header.items()):
            if name == "__metadata__" or len(meta["shape"]) != 2:
                continue
            a, b = meta["data_offsets"]
            buf = raw[8 + n + a:8 + n + b]
            if meta["dtype"] == "BF16":
                v = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(f32)
            elif meta["dtype"] == "F32":
                v = np.frombuffer(buf, f32)
            elif meta["dtype"] == "F16":
                v = np.frombuffer(buf, np.float16).astype(f32)
            else:
                raise SystemExit(f"{name}: dtype {meta['dtype']}")
            out.append((name, v.reshape(meta["shape"]).copy()))
    return out


def synthetic_rows():
    """Edge-case rows of 256 values (f32). NaN and inf are left out: ggml's quantizers have no
    defined result for them (nearest_int asserts |x| <= 4194303 in debug builds)."""
    rng = np.random.default_rng(20240607)
    rows = []

    def add(name, v):
        v = np.asarray(v, dtype=f32).reshape(256)
        rows.append((name, v))

    add("zeros", np.zeros(256))
    add("const_pos_0.5", np.full(256, 0.5))
    add("const_neg_1.25", np.full(256, -1.25))
    add("const_1e-3", np.full(256, 1e-3))
    v = rng.normal(0, 0.01, 256); v[37] = 1e4; add("outlier_pos_1e4", v)
    v = rng.normal(0, 0.01, 256); v[200] = -1e4; add("outlier_neg_1e4", v)
    add("alternating_pm1", np.where(np.arange(256) % 2 == 0, 1.0, -1.0))
    add("alternating_random_mag", np.where(np.arange(256) % 2 == 0, 1.0, -1.0)
        * rng.uniform(0.05, 2.0, 256))
    add("tiny_1e-30", rng.normal(0, 1, 256) * 1e-30)
    add("tiny_const_1e-30", np.full(256, 1e-30))
    v = rng.uniform(-65504, 65504, 256); v[5] = 65504; v[77] = -65504; add("near_f16_max", v)
    add("const_f16_max", np.full(256, 65504.0))
    add("neg_only", -rng.uniform(0.1, 2.0, 256))
    add("pos_only", rng.uniform(0.1, 2.0, 256))
    add("neg_only_offset", -5.0 - rng.uniform(0.0, 0.25, 256))
    for s in (1e-6, 1e-3, 0.02, 1.0, 50.0, 3e3):
        add(f"normal_sigma_{s:g}", rng.normal(0, s, 256))
    add("ramp", np.linspace(-1, 1, 256))
    add("sixteenths", (np.arange(256) % 33 - 16) / 16.0)  # exact ties for several quantizers
    add("halves_ties", (np.arange(256) % 17 - 8) * 0.5)
    v = np.zeros(256); v[::32] = rng.normal(0, 1, 8); add("one_nonzero_per_32", v)
    v = rng.normal(0, 1, 256); v.reshape(8, 32)[::2] = 0; add("zero_odd_subblocks", v)
    v = np.zeros(256); v[48:64] = rng.normal(0, 1, 16); add("one_nonzero_16group", v)
    v = rng.normal(0, 1, 256).reshape(8, 32) * (10.0 ** (np.arange(8) - 4))[:, None]
    add("subblock_range_1e-4_to_1e3", v)
    add("student_t3", rng.standard_t(3, 256) * 0.05)
    add("uniform_0_1", rng.uniform(0, 1, 256))
    add("neg_zeros", np.full(256, -0.0))
    # signed zeros at the minimum: per 32-block, the first zero is -0.0 in even blocks, +0.0 in
    # odd ones (ggml keeps the first element reaching the min, so Q4_1/Q5_1's m is -0.0 / +0.0)
    v = rng.uniform(0.1, 1.0, 256).reshape(8, 32)
    for b in range(8):
        z = [-0.0, 0.0] if b % 2 == 0 else [0.0, -0.0]
        v[b, 3], v[b, 9] = z
        v[b, 20] = -0.0
    add("signed_zero_min", v)
    v = np.zeros(256).reshape(8, 32)
    v[:, ::2] = -0.0
    add("mixed_signed_zeros", v)
    return rows


def stress_rows(n, seed):
    """Random super-blocks of mixed distributions, checked but not stored."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 256), f32)
    for i in range(n):
        k = i % 8
        s = 10.0 ** rng.uniform(-4, 3)
        if k == 0:
            v = rng.normal(0, s, 256)
        elif k == 1:
            v = rng.standard_t(2, 256) * s
        elif k == 2:
            v = rng.uniform(-s, s, 256) + rng.normal(0, s, 1)
        elif k == 3:
            v = rng.normal(0, s, 256) * (rng.uniform(0, 1, 256) < 0.2)
        elif k == 4:
            v = rng.normal(0, 1, (8, 32)) * (10.0 ** rng.uniform(-3, 1, (8, 1))) * s
        elif k == 5:
            v = np.round(rng.normal(0, 8, 256)) * s / 8  # many exact ties
        elif k == 6:
            v = -np.abs(rng.normal(0, s, 256)) - s * rng.uniform(0, 2)
        else:
            v = np.abs(rng.normal(0, s, 256)) + s * rng.uniform(0, 2)
        out[i] = np.asarray(v, f32).reshape(256)
    return out


# ----------------------------------------------------------------------------------------------

def bits_equal(a, b):
    a = np.ascontiguousarray(a, f32)
    b = np.ascontiguousarray(b, f32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


class Checker:
    def __init__(self, g):
        self.g = g
        self.counts = {}  # type -> source -> check -> blocks
        self.unwritten = {}
        self.failures = []

    def fail(self, msg):
        print("MISMATCH:", msg, file=sys.stderr)
        self.failures.append(msg)

    def add(self, t, source, what, n):
        c = self.counts.setdefault(t, {}).setdefault(source, {})
        c[what] = c.get(what, 0) + int(n)

    def run(self, t, x, n_per_row, label, source=None):
        """Quantize x [nrows, n_per_row] with ggml, run every cross-check; returns (q, deq).
        Blocks are counted under `source` (None: not counted, e.g. a re-run of counted data)."""
        g = self.g
        if source is None:
            count = lambda what, n: None  # noqa: E731
        else:
            count = lambda what, n: self.add(t, source, what, n)  # noqa: E731
        blck, size = TYPES[t][1], TYPES[t][2]
        q = g.quantize(t, x, n_per_row, fill=0)
        q_ff = g.quantize(t, x, n_per_row, fill=0xFF)
        nb = q.size // size
        diff = (q != q_ff).reshape(nb, size)
        if diff.any():
            bad = np.nonzero(diff.any(axis=0))[0].tolist()
            key = f"{t}"
            self.unwritten.setdefault(key, {"byte_offsets": set(), "blocks": 0})
            self.unwritten[key]["byte_offsets"].update(bad)
            self.unwritten[key]["blocks"] += int(diff.any(axis=1).sum())
        count("blocks_quantized", nb)
        deq = g.dequantize(t, q)
        blocks = q.reshape(nb, size)
        if t in GGUF_QT:
            ref = gguf.quants.dequantize(blocks, GGUF_QT[t]).reshape(deq.shape)
            if not bits_equal(ref, deq):
                self.fail(f"{t} {label}: gguf-py dequantize != ggml to_float")
            count("dequant_ggml_vs_ggufpy", nb)
        if t in LEGACY:
            gq = gguf.quants.quantize(np.ascontiguousarray(x, f32).reshape(-1, n_per_row),
                                      GGUF_QT[t])
            gq = gq.reshape(nb, size)
            bad = (gq != blocks).any(axis=1)
            if bad.any():
                # The only known difference: the sign of a zero f16 field (d of an all-zero
                # Q4_0/Q5_0 block whose first zero is -0.0; m of Q4_1/Q5_1 when the block minimum
                # is a zero). ggml keeps the first element reaching the max |x| / the min (strict
                # comparisons); numpy's argmax/min pick another. Anything else is a failure.
                a = blocks[bad].copy()
                b = gq[bad].copy()
                nf = 2 if t in ("q4_1", "q5_1") else 1
                for f in range(nf):
                    for arr in (a, b):
                        h = arr[:, 2 * f:2 * f + 2].copy().view(np.uint16)[:, 0]
                        arr[:, 2 * f + 1] &= np.where(h & 0x7FFF == 0, 0x7F, 0xFF).astype(np.uint8)
                other = (a != b).any(axis=1)
                count("quant_ggml_vs_ggufpy_differ_in_zero_sign_only", bad.sum() - other.sum())
                if other.any():
                    self.fail(f"{t} {label}: gguf-py quantize != ggml in {int(other.sum())}/{nb} "
                              f"blocks")
            count("quant_ggml_vs_ggufpy", nb)
        if t in PORTS:
            pq = PORTS[t](np.ascontiguousarray(x, f32).reshape(-1, 256))
            if not np.array_equal(pq, blocks):
                bad = np.nonzero((pq != blocks).any(axis=1))[0]
                self.fail(f"{t} {label}: numpy port != ggml in {len(bad)}/{nb} blocks "
                          f"(first {bad[:5].tolist()})")
            count("quant_ggml_vs_numpy_port", nb)
        if t == "q8_K":
            cq = g.q8k_cpu_from_float(x, fill=0)
            if not np.array_equal(cq.reshape(q.shape), q):
                self.fail(f"q8_K {label}: cpu from_float != quantize_row_q8_K_ref")
            count("q8K_ref_vs_cpu_from_float", nb)
            count("dequant_ggml_vs_d_times_q", nb)
            # ggml's own dequantize vs d*q computed here
            d = blocks[:, :4].copy().view(f32)
            qs = blocks[:, 4:260].copy().view(np.int8).astype(f32)
            if not bits_equal(deq.reshape(nb, 256), d * qs):
                self.fail(f"q8_K {label}: dequantize_row_q8_K != d*q")
        return q, deq


def sha_rows(deq, width=256):
    deq = np.ascontiguousarray(deq, f32).reshape(-1, width)
    return np.stack([np.frombuffer(hashlib.sha256(r.astype("<f4").tobytes()).digest(), np.uint8)
                     for r in deq])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lib-dir", default="/work/oracle/ggml-build/bin")
    ap.add_argument("--model", default="tests/fixtures/models/base/model")
    ap.add_argument("--out", default="tests/fixtures/kquant")
    ap.add_argument("--model-rows", type=int, default=768,
                    help="stored 256-value super-blocks of checkpoint data (K-types)")
    ap.add_argument("--legacy-rows", type=int, default=256,
                    help="of those, how many are stored for the 32-block types (8 blocks each)")
    ap.add_argument("--stress", type=int, default=20000, help="random super-blocks, not stored")
    ap.add_argument("--check-only", action="store_true")
    args = ap.parse_args()

    g = Ggml(args.lib_dir)
    ck = Checker(g)
    all_types = LEGACY + KQUANT + ["q8_K"]

    # (a) checkpoint matrices
    mats = load_model_matrices(args.model)
    k_chunks, k_src = [], []
    for name, m in mats:
        rows, n_per_row = m.shape
        for t in LEGACY:  # real row shapes: every matrix has rows of a multiple of 32
            if n_per_row % 32 == 0:
                ck.run(t, m, n_per_row, name, "checkpoint")
        # No matrix of this checkpoint has rows of a multiple of 256 (the longest is 2176 =
        # 8.5 x 256); the K-types take each matrix's values in storage order, cut into 256-value
        # super-blocks (a tail shorter than 256 is dropped). Quantization is block-local.
        flat = m.reshape(-1)
        nsb = flat.size // 256
        if nsb:
            k_chunks.append(flat[:nsb * 256].reshape(nsb, 256))
            k_src += [(name, 256 * i) for i in range(nsb)]
    kdata = np.concatenate(k_chunks)
    for t in KQUANT + ["q8_K"]:
        ck.run(t, kdata, 256, "checkpoint", "checkpoint")
    n_mats = len(mats)

    # (b) synthetic rows
    syn = synthetic_rows()
    syn_x = np.stack([v for _, v in syn])
    syn_out = {}
    for t in all_types:
        syn_out[t] = ck.run(t, syn_x, 256, "synthetic", "synthetic")

    # (c) stress (not stored)
    if args.stress:
        sx = stress_rows(args.stress, 7)
        for t in all_types:
            ck.run(t, sx, 256, "stress", "stress")

    # fixture selection: evenly spaced super-blocks over the whole checkpoint
    n_sel = min(args.model_rows, len(kdata))
    sel = np.unique(np.linspace(0, len(kdata) - 1, n_sel).round().astype(int))
    model_x = kdata[sel]
    model_out = {}
    for t in all_types:
        rows = len(sel) if TYPES[t][1] == 256 else min(args.legacy_rows, len(sel))
        model_out[t] = ck.run(t, model_x[:rows], 256, "fixture selection")

    # (d) dot products (information only)
    rng = np.random.default_rng(99)
    n_dot, P = 2048, 8
    act = np.stack([rng.normal(0, s, n_dot) for s in (1.0, 0.1, 3.0, 1.0, 0.02, 1.0, 10.0, 1.0)]
                   ).astype(f32)
    act[3, 5] = 40.0  # an activation outlier
    act[5] = np.abs(act[5])
    wts = np.stack([rng.normal(0, s, n_dot) for s in (0.02, 0.05, 0.01, 0.02, 1.0, 0.02, 0.003,
                                                      0.1)]).astype(f32)
    act_q = g.quantize("q8_K", act, n_dot)
    act_deq = g.dequantize("q8_K", act_q)
    dots = {}
    max_rel = {}
    for t in KQUANT:
        wq = g.quantize(t, wts, n_dot)
        wdeq = g.dequantize(t, wq)
        simd = np.array([g.vec_dot(t, wq[p], act_q[p], n_dot) for p in range(P)], f32)
        gen = np.array([g.vec_dot(t, wq[p], act_q[p], n_dot, generic=True) for p in range(P)],
                       f32)
        exact = np.array([np.dot(wdeq[p].astype(np.float64), act_deq[p].astype(np.float64))
                          for p in range(P)])
        dots[t] = (wq, simd, gen, exact)
        max_rel[t] = {
            "simd_vs_generic": float(np.max(np.abs(simd - gen) / np.maximum(np.abs(gen), 1e-30))),
            "simd_vs_f64_of_dequantized": float(np.max(np.abs(simd - exact)
                                                       / np.maximum(np.abs(exact), 1e-30))),
            "simd_bitequal_generic": int(np.sum(simd.view(np.uint32) == gen.view(np.uint32))),
        }

    # summary
    print(f"checkpoint: {n_mats} 2-D matrices, {len(kdata)} K super-blocks; "
          f"stored: {len(sel)} K super-blocks, {min(args.legacy_rows, len(sel)) * 8} legacy blocks, "
          f"{len(syn)} synthetic rows")
    for t in all_types:
        print(f"  {t:5s} {ck.counts[t]}")
    for t, v in max_rel.items():
        print(f"  vec_dot {t}: {v}")
    unw = {k: {"byte_offsets": sorted(v["byte_offsets"]), "blocks": v["blocks"]}
           for k, v in ck.unwritten.items()}
    print("  bytes left unwritten by the quantizer:", unw or "none")
    if ck.failures:
        print(f"{len(ck.failures)} MISMATCHES", file=sys.stderr)
        sys.exit(1)
    print("all cross-checks passed")
    if args.check_only:
        return

    os.makedirs(args.out, exist_ok=True)
    meta_common = {"source": "ggml 0.25.3 from llama-cpp-python 0.3.36 sdist "
                             "(vendor/llama.cpp = ggml-org/llama.cpp@0c1e57098)"}
    save_file({"model": np.ascontiguousarray(model_x), "synthetic": np.ascontiguousarray(syn_x)},
              os.path.join(args.out, "inputs.safetensors"), metadata=meta_common)
    HEAD = 16
    tnames = sorted({k_src[i][0] for i in sel})
    files = {}
    for t in all_types:
        mq, mdeq = model_out[t]
        sq, sdeq = syn_out[t]
        tensors = {
            "model_q": np.ascontiguousarray(mq),
            "model_deq_sha256": sha_rows(mdeq),
            "model_deq_head": np.ascontiguousarray(mdeq.reshape(-1, 256)[:HEAD]),
            "synthetic_q": np.ascontiguousarray(sq),
            "synthetic_deq": np.ascontiguousarray(sdeq.reshape(-1, 256)),
        }
        if t in KQUANT:
            wq, simd, gen, exact = dots[t]
            tensors.update({"dot_w_q": np.ascontiguousarray(wq), "dot_simd": simd,
                            "dot_generic": gen, "dot_f64_of_dequantized": exact.astype(f32)})
        save_file(tensors, os.path.join(args.out, f"{t}.safetensors"), metadata=meta_common)
        files[t] = {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in tensors.items()}
    save_file({"x": act, "x_q8_K": act_q}, os.path.join(args.out, "dot_inputs.safetensors"),
              metadata=meta_common)

    manifest = {
        "source": meta_common["source"],
        "script": "scripts/kquant_oracle.py",
        "types": {t: {"ggml_type": TYPES[t][0], "block_values": TYPES[t][1],
                      "block_bytes": TYPES[t][2], "layout": LAYOUTS[t],
                      "row_bytes_per_256_values": 256 // TYPES[t][1] * TYPES[t][2],
                      "model_rows": int(model_out[t][0].shape[0]),
                      "quantizer": ("quantize_row_q8_K_ref" if t == "q8_K"
                                    else f"ggml_quantize_chunk -> quantize_row_{t}_ref"),
                      "dequantizer": ("dequantize_row_q8_K" if t == "q8_K"
                                      else f"ggml_get_type_traits -> dequantize_row_{t}"),
                      "tensors": files[t]} for t in all_types},
        "inputs": {
            "model": {
                "shape": list(model_x.shape),
                "about": "256-value super-blocks of the checkpoint's 2-D matrices (values in "
                         "storage order, bf16 -> f32 exactly), evenly spaced over all "
                         f"{len(kdata)}; row r came from tensor_names[rows_from[r][0]] at flat "
                         "element offset rows_from[r][1]. The 32-block types use rows "
                         f"0..{min(args.legacy_rows, len(sel))} (8 blocks per row).",
                "tensor_names": tnames,
                "rows_from": [[tnames.index(k_src[i][0]), k_src[i][1]] for i in sel]},
            "synthetic": {"shape": list(syn_x.shape), "names": [n for n, _ in syn]}},
        "tensors": {
            "inputs.safetensors": {
                "model": "F32 [R, 256] checkpoint super-blocks",
                "synthetic": "F32 [S, 256] edge-case rows, names in inputs.synthetic.names"},
            "<type>.safetensors": {
                "model_q": "U8 [rows, 256/block_values*block_bytes]: ggml's blocks for "
                           "inputs.model[:rows] (rows = types.<type>.model_rows)",
                "model_deq_sha256": "U8 [rows, 32]: sha256 of the 256 dequantized values of "
                                    "each row, as little-endian f32 bytes",
                "model_deq_head": f"F32 [{HEAD}, 256]: dequantized values of the first rows",
                "synthetic_q": "U8 [S, row bytes]: ggml's blocks for inputs.synthetic",
                "synthetic_deq": "F32 [S, 256]: dequantized (ggml == gguf-py, bit for bit)",
                "dot_w_q (K-types)": "U8 [P, n/256*block_bytes]: weight rows (ggml blocks)",
                "dot_simd (K-types)": "F32 [P]: ggml vec_dot(dot_w_q[p], x_q8_K[p]), AVX2",
                "dot_generic (K-types)": "F32 [P]: ggml_vec_dot_<t>_q8_K_generic (scalar C, "
                                         "compiled with -mfma: the compiler may contract)",
                "dot_f64_of_dequantized (K-types)": "F32 [P]: sum in f64 of dequant(w)*dequant(x)"},
            "dot_inputs.safetensors": {
                "x": "F32 [P, n] activation rows",
                "x_q8_K": "U8 [P, n/256*292]: quantize_row_q8_K_ref(x)"}},
        "dot": {"n": n_dot, "pairs": P, "activation_type": "q8_K",
                "vec_dot_simd": "ggml_get_type_traits_cpu(t)->vec_dot (AVX2 build)",
                "vec_dot_generic": "ggml_vec_dot_<t>_q8_K_generic",
                "max_rel_diff": max_rel},
        "compared": {t: ck.counts[t] for t in all_types},
        "compared_totals": {t: {what: sum(src.get(what, 0) for src in ck.counts[t].values())
                                for what in sorted({w for src in ck.counts[t].values()
                                                    for w in src})} for t in all_types},
        "checkpoint_matrices": n_mats,
        "checkpoint_k_superblocks": int(len(kdata)),
        "stress_superblocks": args.stress,
        "unwritten_bytes": unw,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    for p in os.listdir(args.out):
        os.chmod(os.path.join(args.out, p), 0o644)
    total = sum(os.path.getsize(os.path.join(args.out, p)) for p in os.listdir(args.out))
    print(f"wrote {args.out} ({total} bytes)")


if __name__ == "__main__":
    main()
