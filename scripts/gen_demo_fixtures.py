#!/usr/bin/env python3
"""From a training run of scripts/train_demo.py, make the shipped demo model and the held-out test
fixtures (issue 17):

* ``models/demo/mllama-demo-q4_0.gguf``: OUT/checkpoint converted by our ``quantize -t q4_0``;
* ``models/demo/example.jpg`` (the picture ``mllama run`` uses without ``--image``;
  train_demo.DEMO_SCENE, JPEG quality 90) and two more demo pictures, ``two-shapes.png`` and ``wide.png``
  (DEMO_PNGS below), with their questions and HF answers in ``models/demo/pictures.json``;
* ``tests/fixtures/demo_heldout/``: the held-out pictures and questions (OUT/heldout, copied),
  ``mllama-demo-q8_0.gguf`` (OUT/checkpoint converted by ``quantize -t q8_0``: the F32 GGUF is
  42 MB, too large to commit) and ``hf_answers.json``: HF transformers' greedy answers (generate,
  layer-input vision taps) for every held-out question, on

  - ``f32``: the checkpoint as stored,
  - ``q8_0``: the checkpoint rounded exactly as the q8_0 GGUF stores it (text matrices, embeddings
    and lm_head Q8_0, vision and projector matrices F16): the reference of tests/demo_trained.rs,
  - ``q4_0``: the same for the q4_0 GGUF (the shipped demo);

  with their token ids and the accuracy of each per question type.

Usage (after ``cargo build --release -p quantize``):

    python3 scripts/gen_demo_fixtures.py /tmp/demo-train [--quantize target/release/quantize] [--threads 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_demo as td  # noqa: E402

import transformers  # noqa: E402
from transformers import AutoProcessor  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Two more demo pictures (PNG, no colour jitter): a tall one (2x2 tiles) and a wide one (1x4 tiles).
DEMO_PNGS = {
    "two-shapes.png": dict(width=120, height=200, background="blue", shapes=[
        dict(shape="circle", color="yellow", cx=60.0, cy=55.0, r=28.0),
        dict(shape="triangle", color="white", cx=58.0, cy=142.0, r=29.0),
    ]),
    "wide.png": dict(width=224, height=56, background="black", shapes=[
        dict(shape="square", color="red", cx=40.0, cy=28.0, r=12.0),
        dict(shape="circle", color="green", cx=112.0, cy=28.0, r=14.0),
        dict(shape="square", color="white", cx=184.0, cy=28.0, r=12.0),
    ]),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output directory of train_demo.py (checkpoint/, heldout/, example.jpg)")
    ap.add_argument("--quantize", default=str(ROOT / "target/release/quantize"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    out = Path(args.out)
    ckpt = out / "checkpoint"
    demo_dir = ROOT / "models/demo"
    fx_dir = ROOT / "tests/fixtures/demo_heldout"
    fx_dir.mkdir(parents=True, exist_ok=True)

    # GGUF files, converted by our quantize
    t0 = time.time()
    for ty, path in (("q4_0", demo_dir / "mllama-demo-q4_0.gguf"), ("q8_0", fx_dir / "mllama-demo-q8_0.gguf")):
        subprocess.run([args.quantize, str(ckpt), "-o", str(path), "-t", ty, "--quiet"], check=True)
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes", flush=True)

    # held-out pictures and questions
    meta = json.loads((out / "heldout" / "questions.json").read_text())
    items = []
    for rec in meta["items"]:
        shutil.copyfile(out / "heldout" / rec["image"], fx_dir / rec["image"])
        img = Image.open(fx_dir / rec["image"])
        img.load()
        assert hashlib.sha256((fx_dir / rec["image"]).read_bytes()).hexdigest() == rec["sha256"]
        items.append(dict(image=img, qas=rec["questions"], file=rec["image"]))
    shutil.copyfile(out / "heldout" / "questions.json", fx_dir / "questions.json")

    # demo pictures
    td.draw_scene(td.DEMO_SCENE, np.random.default_rng(0), color_jitter=0).save(demo_dir / "example.jpg",
                                                                               format="JPEG", quality=90)
    demos = []
    img = Image.open(demo_dir / "example.jpg")
    img.load()
    demos.append(dict(image=img, qas=td.questions(td.DEMO_SCENE), file="example.jpg", scene=td.DEMO_SCENE))
    for name, scene in DEMO_PNGS.items():
        td.draw_scene(scene, np.random.default_rng(0), color_jitter=0).save(demo_dir / name, format="PNG",
                                                                           optimize=True)
        img = Image.open(demo_dir / name)
        img.load()
        demos.append(dict(image=img, qas=td.questions(scene), file=name, scene=scene))

    codec = td.Codec(AutoProcessor.from_pretrained(str(ckpt), backend="pil"))
    answers, accuracy = {}, {}
    demo_answers = {}
    for ty in (None, "q8_0", "q4_0"):
        key = ty or "f32"
        model = td.load_checkpoint(ckpt, ty)
        margins = {}
        text, ids = td.hf_generate_answers(model, codec, items, margins=margins)
        answers[key] = (text, ids, margins)
        acc = td.accuracy(items, text)
        accuracy[key] = {t: dict(correct=a[1], total=a[2]) for t, a in acc.items()}
        print(f"[HF generate, {key}] {td.fmt_acc(acc)}", flush=True)
        demo_answers[key], _ = td.hf_generate_answers(model, codec, demos)

    recs = []
    for i, it in enumerate(items):
        for qi, qa in enumerate(it["qas"]):
            rec = dict(image=it["file"], type=qa["type"], question=qa["question"], expected=qa["answer"])
            for key, (text, ids, margins) in answers.items():
                rec[f"hf_{key}"] = dict(text=text[(i, qi)], ids=ids[(i, qi)], margins=margins[(i, qi)])
            recs.append(rec)
    diff = sum(r["hf_f32"]["text"] != r["hf_q8_0"]["text"] for r in recs)
    td.write_json(fx_dir / "hf_answers.json", {
        "description": "HF transformers greedy answers (generate, layer-input vision taps) to every held-out "
                       "question (scripts/gen_demo_fixtures.py): f32 = the trained checkpoint as stored; q8_0 / "
                       "q4_0 = the checkpoint rounded exactly as the q8_0 / q4_0 GGUF stores it (text matrices, "
                       "embeddings, lm_head in that type; vision and projector matrices F16). ids end with "
                       "<|eot_id|> (128009) when the answer ended; margins: the top-1 minus top-2 logit at "
                       "each generated token.",
        "transformers": transformers.__version__, "torch": torch.__version__,
        "checkpoint_sha256": hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest(),
        "accuracy": accuracy, "f32_vs_q8_0_text_differences": diff, "answers": recs})
    print(f"{fx_dir.relative_to(ROOT)}/hf_answers.json: {len(recs)} questions; f32 and q8_0 answers differ on "
          f"{diff}", flush=True)

    pics = []
    for d_i, d in enumerate(demos):
        qs = []
        for qi, qa in enumerate(d["qas"]):
            qs.append(dict(question=qa["question"], expected=qa["answer"],
                           **{f"hf_{k}": v[(d_i, qi)] for k, v in demo_answers.items()}))
            ok = demo_answers["q4_0"][(d_i, qi)] == qa["answer"]
            print(f"  {d['file']}: {qa['question']!r} -> {demo_answers['q4_0'][(d_i, qi)]!r}"
                  + ("" if ok else f" (expected {qa['answer']!r})"), flush=True)
        pics.append(dict(image=d["file"], scene=d["scene"], questions=qs))
    td.write_json(demo_dir / "pictures.json", {
        "description": "the demo pictures (scripts/gen_demo_fixtures.py), their questions, the expected "
                       "answers and HF transformers' greedy answers on the trained checkpoint (f32) and rounded "
                       "as the q8_0 / q4_0 GGUF stores it",
        "pictures": pics})
    print(f"done in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
