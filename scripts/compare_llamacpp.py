#!/usr/bin/env python3
"""Decode speed of mllama and llama.cpp on the same GGUF files, interleaved (issue 16).

Three steps, each optional:

  --build DIR       build llama.cpp's llama-bench and llama-quantize from the PyPI sdist of
                    llama-cpp-python 0.3.36 (vendored llama.cpp 0c1e57098; `pip download` needs
                    PyPI) into DIR; --avx2-only builds without AVX-512 (GGML_NATIVE=OFF, AVX2,
                    FMA, F16C) for the forced-avx2 comparison.
  --make DIR        write a llama-architecture GGUF with random weights at Llama-3.2-3B shapes
                    (hidden 3072, 28 layers, FFN 8192, 24/8 heads, head dim 128, vocabulary 128256
                    with the Llama 3.2 tokenizer taken from models/demo, tied embeddings) in F16,
                    then let llama.cpp's llama-quantize write Q4_0, Q8_0 and Q4_K_M from it, so
                    both programs read byte-identical files.
  (default)         run `mllama bench -m FILE --only decode --json` and
                    `llama-bench -m FILE -p 0 -n 32 -t THREADS -o json` in turns, --rounds rounds
                    each, on every FILE given (or the three files of --make's DIR), and print
                    tokens/s of each round with mllama's typical read probe in that round (and the
                    probe alone right before and after llama-bench), then the median ratio,
                    over all rounds and over the rounds whose three probes agree within 25%.

Usage:
    python3 scripts/compare_llamacpp.py --build /work/oracle/build
    python3 scripts/compare_llamacpp.py --llama-cpp /work/oracle/build --make /tmp/l3b
    python3 scripts/compare_llamacpp.py --llama-cpp /work/oracle/build --dir /tmp/l3b \\
        [tests/fixtures/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf] [--simd avx2]

Environment: MLLAMA (default target/release/mllama).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SDIST = "llama-cpp-python==0.3.36"

# Llama-3.2-3B's text shapes.
HIDDEN, LAYERS, FFN, HEADS, KV_HEADS, VOCAB = 3072, 28, 8192, 24, 8, 128256
HEAD_DIM = HIDDEN // HEADS


def build(out: Path, avx2_only: bool) -> None:
    """Configure and build llama-bench and llama-quantize from the sdist's vendored tree."""
    src_root = out.parent / "src"
    tree = src_root / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"
    if not tree.exists():
        dl = out.parent / "dl"
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        "llama-cpp-python", SDIST, "-d", str(dl)], check=True)
        src_root.mkdir(parents=True, exist_ok=True)
        tar = next(dl.glob("llama_cpp_python-0.3.36.tar.gz"))
        subprocess.run(["tar", "xzf", str(tar), "-C", str(src_root)], check=True)
    flags = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_TESTS=OFF",
             "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_TOOLS=ON",
             "-DLLAMA_CURL=OFF", "-DGGML_CCACHE=OFF"]
    if avx2_only:
        flags += ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON",
                  "-DGGML_F16C=ON", "-DGGML_AVX512=OFF"]
    else:
        flags += ["-DGGML_NATIVE=ON"]
    subprocess.run(["cmake", "-S", str(tree), "-B", str(out)] + flags, check=True)
    subprocess.run(["cmake", "--build", str(out), "--target", "llama-bench", "llama-quantize",
                    "-j", str(os.cpu_count() or 2)], check=True)


def tokenizer_fields():
    """The Llama 3.2 tokenizer of the demo model, without mllama's extra `<|image|>` token."""
    import gguf

    demo = ROOT / "models" / "demo" / "mllama-demo-q4_0.gguf"
    r = gguf.GGUFReader(str(demo))
    out = {}
    for name, f in r.fields.items():
        if not name.startswith("tokenizer.") or name == "tokenizer.chat_template":
            continue
        if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
            vals = [f.parts[i] for i in f.data]
            if f.types[1] == gguf.GGUFValueType.STRING:
                vals = [bytes(v).decode("utf-8") for v in vals]
            else:
                vals = [v.item() for v in vals]
            if name in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                        "tokenizer.ggml.scores"):
                vals = vals[:VOCAB]
            out[name] = ("array", vals, f.types[1])
        elif f.types and f.types[0] == gguf.GGUFValueType.STRING:
            out[name] = ("str", bytes(f.parts[f.data[0]]).decode("utf-8"), None)
        else:
            out[name] = ("scalar", f.parts[f.data[0]].item(), f.types[0])
    return out


def make(dirpath: Path, llama_cpp: Path) -> list[Path]:
    """The F16 source file and the three quantized files (kept if they already exist)."""
    import gguf

    dirpath.mkdir(parents=True, exist_ok=True)
    f16 = dirpath / "llama3b-random-f16.gguf"
    if not f16.exists():
        w = gguf.GGUFWriter(str(f16) + ".tmp", "llama")
        w.add_name("random Llama-3.2-3B shapes")
        w.add_block_count(LAYERS)
        w.add_context_length(131072)
        w.add_embedding_length(HIDDEN)
        w.add_feed_forward_length(FFN)
        w.add_head_count(HEADS)
        w.add_head_count_kv(KV_HEADS)
        w.add_rope_dimension_count(HEAD_DIM)
        w.add_rope_freq_base(500000.0)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_vocab_size(VOCAB)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        for name, (kind, val, sub) in tokenizer_fields().items():
            if kind == "array":
                w.add_array(name, val)
            elif kind == "str":
                w.add_string(name, val)
            else:
                w.add_key_value(name, val, sub)
        rng = np.random.default_rng(1)
        # One pool of random values, read at a different offset by every matrix (the values do
        # not matter for speed; generating 3.2e9 fresh ones would take minutes).
        pool = (rng.standard_normal(1 << 24, dtype=np.float32) * 0.02).astype(np.float16)

        def mat(rows: int, cols: int, seed: int) -> np.ndarray:
            n = rows * cols
            reps = -(-n // pool.size) + 1
            start = (seed * 7919) % pool.size
            return np.tile(pool, reps)[start:start + n].reshape(rows, cols)

        ones = np.ones(HIDDEN, dtype=np.float32)
        w.add_tensor("token_embd.weight", mat(VOCAB, HIDDEN, 1))
        w.add_tensor("output_norm.weight", ones)
        kv = KV_HEADS * HEAD_DIM
        for i in range(LAYERS):
            b = f"blk.{i}."
            s = 100 + 10 * i
            w.add_tensor(b + "attn_norm.weight", ones)
            w.add_tensor(b + "attn_q.weight", mat(HIDDEN, HIDDEN, s))
            w.add_tensor(b + "attn_k.weight", mat(kv, HIDDEN, s + 1))
            w.add_tensor(b + "attn_v.weight", mat(kv, HIDDEN, s + 2))
            w.add_tensor(b + "attn_output.weight", mat(HIDDEN, HIDDEN, s + 3))
            w.add_tensor(b + "ffn_norm.weight", ones)
            w.add_tensor(b + "ffn_gate.weight", mat(FFN, HIDDEN, s + 4))
            w.add_tensor(b + "ffn_up.weight", mat(FFN, HIDDEN, s + 5))
            w.add_tensor(b + "ffn_down.weight", mat(HIDDEN, FFN, s + 6))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(str(f16) + ".tmp", f16)
    quantize = llama_cpp / "bin" / "llama-quantize"
    outs = []
    for ty in ("Q4_0", "Q8_0", "Q4_K_M"):
        out = dirpath / f"llama3b-random-{ty.lower()}.gguf"
        if not out.exists():
            r = subprocess.run([str(quantize), str(f16), str(out) + ".tmp", ty,
                                str(os.cpu_count() or 2)], capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"error: llama-quantize failed for {ty}:\n{r.stderr[-2000:]}")
            os.replace(str(out) + ".tmp", out)
        outs.append(out)
    return outs


def mllama_bench(args: list[str], simd: str | None) -> dict:
    """The JSON report of one `mllama bench ... --json` run (MLLAMA_SIMD=simd if given)."""
    env = dict(os.environ, **({"MLLAMA_SIMD": simd} if simd else {}))
    exe = os.environ.get("MLLAMA", str(ROOT / "target" / "release" / "mllama"))
    r = subprocess.run([exe, "bench", *args, "--json"], env=env, check=True, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def ours(model: Path, simd: str | None) -> tuple[float, float]:
    """(decode tokens/s, read probe GB/s) of one `mllama bench` run: the tokens/s of its
    back-to-back steps, and its typical probe (the median of those beside its paired steps), not
    its best (`read_bandwidth_gbs`, which one token at the high bandwidth sets)."""
    v = mllama_bench(["-m", str(model), "--only", "decode", "--decode-tokens", "32"], simd)
    return v["decode_tokens_per_s"], v["decode_probe_gbs"]


def probe(simd: str | None) -> float:
    """The read probe alone (GB/s): a `mllama bench` of the tiny synthetic model (about 1.5 s), for
    llama.cpp's rounds, which have no probe of their own."""
    v = mllama_bench(["--synthetic", "tiny", "--only", "decode", "--decode-tokens", "3"], simd)
    return v["read_bandwidth_gbs"]


def same_regime(gbs: list[float], tolerance: float = 0.25) -> bool:
    """Whether these probe figures are within `tolerance` of each other (this kind of VM switches
    between about 34 and about 68 GB/s within seconds)."""
    return max(gbs) <= (1 + tolerance) * min(gbs)


def theirs(llama_cpp: Path, model: Path, threads: int) -> float:
    """Decode tokens/s of one `llama-bench -p 0 -n 32` run."""
    r = subprocess.run([str(llama_cpp / "bin" / "llama-bench"), "-m", str(model), "-p", "0",
                        "-n", "32", "-t", str(threads), "-o", "json"],
                       check=True, capture_output=True, text=True)
    rows = json.loads(r.stdout)
    return float(rows[0]["avg_ts"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--build", type=Path, help="build llama.cpp into this directory and stop")
    ap.add_argument("--avx2-only", action="store_true")
    ap.add_argument("--llama-cpp", type=Path, help="llama.cpp build directory (bin/ inside)")
    ap.add_argument("--make", type=Path, help="write the 3B-shaped files here and stop")
    ap.add_argument("--dir", type=Path, help="also compare the three files of --make's DIR")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--simd", help="MLLAMA_SIMD for our runs (e.g. avx2)")
    a = ap.parse_args()
    if a.build:
        build(a.build, a.avx2_only)
        return
    if not a.llama_cpp:
        sys.exit("error: --llama-cpp DIR is needed (a build made with --build)")
    if a.make:
        for f in make(a.make, a.llama_cpp):
            print(f)
        return
    files = list(a.files)
    if a.dir:
        files += sorted(a.dir.glob("llama3b-random-q*.gguf"))
    if not files:
        sys.exit("error: no model files to compare")
    for f in files:
        ratios, matched = [], []
        print(f"{f.name}:")
        for r in range(a.rounds):
            t_ours, p_ours = ours(f, a.simd)
            before = probe(a.simd)
            t_theirs = theirs(a.llama_cpp, f, a.threads)
            after = probe(a.simd)
            ratio = t_ours / t_theirs
            ratios.append(ratio)
            same = same_regime([p_ours, before, after])
            if same:
                matched.append(ratio)
            print(f"  round {r + 1}: mllama {t_ours:7.2f} tok/s (read probe {p_ours:5.1f} GB/s)"
                  f"   llama.cpp {t_theirs:7.2f} tok/s (probe before / after {before:5.1f} / {after:5.1f})"
                  f"   ratio {ratio:.3f}{'' if same else '  (different bandwidth)'}")
        print(f"  median ratio mllama / llama.cpp: {statistics.median(ratios):.3f}; over the "
              f"{len(matched)} rounds at the same bandwidth: "
              + (f"{statistics.median(matched):.3f}" if matched else "none"))


if __name__ == "__main__":
    main()
