#!/usr/bin/env python3
"""Check a trained demo checkpoint (scripts/train_demo.py) against our runtime.

For each requested GGUF type: convert OUT/checkpoint with our ``quantize``, then for held-out pictures
(OUT/heldout/questions.json) and their questions compare

* ``mllama run -m GGUF --image PIC -p QUESTION --temperature 0 [--vision-taps input]`` (the text it
  prints) with the text of HF ``generate`` (greedy, layer-input vision taps as in training), and
* ``mllama eval --generate N`` (greedy token ids, prompt logits) with HF's ids and logits.

The HF reference is the checkpoint as stored for float GGUF types, and the checkpoint with the
text matrices / embeddings / lm_head rounded exactly as Q4_0 (Q8_0) stores them and the vision
matrices rounded to F16 for quantized types,
so a mismatch points at the runtime, not at the quantization. The answer's correctness (vs. the
expected answer) is reported too.

Usage:

    python3 scripts/check_demo_gguf.py OUT --mllama target/release/mllama --quantize target/release/quantize \
        [--types f32,q4_0] [--images 4] [--vision-taps input]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_demo as td  # noqa: E402

import transformers  # noqa: E402
from transformers import AutoProcessor  # noqa: E402


def load_reference(ckpt: Path, ty: str):
    """The checkpoint with its weights rounded exactly as a `ty` GGUF stores them (f32: as stored)."""
    return td.load_checkpoint(ckpt, None if ty in ("f32", "f16", "bf16") else ty)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output directory of train_demo.py (checkpoint/, heldout/)")
    ap.add_argument("--mllama", required=True)
    ap.add_argument("--quantize", required=True)
    ap.add_argument("--types", default="f32,q4_0")
    ap.add_argument("--images", type=int, default=4, help="first N held-out pictures")
    ap.add_argument("--vision-taps", default="input", help="passed to mllama (omit with --vision-taps '')")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gguf-dir", default=None, help="keep the GGUF files here (default: a temporary dir)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    out = Path(args.out)
    ckpt = out / "checkpoint"
    meta = json.loads((out / "heldout" / "questions.json").read_text())
    items = []
    for rec in meta["items"][: args.images]:
        img = Image.open(out / "heldout" / rec["image"])
        img.load()
        items.append(dict(image=img, qas=rec["questions"], file=rec["image"]))
    codec = td.Codec(AutoProcessor.from_pretrained(str(ckpt), backend="pil"))
    taps = ["--vision-taps", args.vision_taps] if args.vision_taps else []

    summary = {}
    tmp = tempfile.TemporaryDirectory(prefix="demo-gguf-")
    gdir = Path(args.gguf_dir) if args.gguf_dir else Path(tmp.name)
    gdir.mkdir(parents=True, exist_ok=True)
    for ty in args.types.split(","):
        gguf = gdir / f"demo-{ty}.gguf"
        subprocess.run([args.quantize, str(ckpt), "-o", str(gguf), "-t", ty, "--quiet"], check=True)
        print(f"== {ty}: {gguf} ({gguf.stat().st_size} bytes)", flush=True)
        model = load_reference(ckpt, ty)
        hf_text, hf_ids = td.hf_generate_answers(model, codec, items)
        n_same_text = n_same_ids = n = n_right = 0
        max_logit_diff = 0.0
        for i, it in enumerate(items):
            pic = str(out / "heldout" / it["file"])
            for qi, qa in enumerate(it["qas"]):
                n += 1
                r = subprocess.run([args.mllama, "run", "-m", str(gguf), "--image", pic, "-p", qa["question"],
                                    "--temperature", "0", "-n", "32", "--threads", str(args.threads)] + taps,
                                   capture_output=True, text=True, check=True)
                ours = r.stdout.strip()
                ref = hf_text[(i, qi)]
                # token level: mllama eval on the same prompt, greedy through the caches
                msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": qa["question"]}]}]
                prompt = codec.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
                ids_ref = hf_ids[(i, qi)]
                with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
                    subprocess.run([args.mllama, "eval", "-m", str(gguf), "--image", pic, "--prompt", prompt,
                                    "--generate", str(len(ids_ref)), "--out", f.name, "--threads", str(args.threads)]
                                   + taps, capture_output=True, text=True, check=True)
                    ev = load_file(f.name)
                ids_ours = ev["greedy_ids"].reshape(-1).tolist() if "greedy_ids" in ev else None
                # prompt logits vs HF (same weights as the reference)
                inputs = codec.processor(text=prompt, images=[[it["image"]]], add_special_tokens=False,
                                         return_tensors="pt")
                with torch.no_grad(), td.InputTaps(model):
                    lg = model(**{k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values",
                                                         "aspect_ratio_ids", "aspect_ratio_mask",
                                                         "cross_attention_mask")}, use_cache=False).logits
                if "logits" in ev:
                    d = float((ev["logits"].reshape(lg.shape) - lg).abs().max())
                    max_logit_diff = max(max_logit_diff, d)
                same_text = ours == ref
                same_ids = ids_ours is not None and ids_ours[: len(ids_ref)] == ids_ref
                n_same_text += same_text
                n_same_ids += same_ids
                n_right += ours == qa["answer"]
                flag = "ok " if same_text and same_ids else "MISMATCH"
                print(f"  {flag} {it['file']} {qa['question']!r}: mllama {ours!r} | HF {ref!r} | expected "
                      f"{qa['answer']!r}" + ("" if same_ids else f" | ids ours {ids_ours} HF {ids_ref}"), flush=True)
        summary[ty] = dict(questions=n, same_text=n_same_text, same_ids=n_same_ids, correct=n_right,
                           max_abs_prompt_logit_diff=max_logit_diff, gguf_bytes=gguf.stat().st_size)
        print(f"== {ty}: {n_same_text}/{n} same text, {n_same_ids}/{n} same greedy ids, {n_right}/{n} correct, "
              f"prompt logits max |diff| {max_logit_diff:.3g}", flush=True)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
