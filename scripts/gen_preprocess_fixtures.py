#!/usr/bin/env python3
"""Regenerate the compact 560-px preprocessing references in tests/fixtures/preprocess/.

The reference is HF transformers' Mllama image processor, PIL backend (`MllamaImageProcessorPil`,
transformers 5.24, Pillow 13), with the released Llama-3.2-11B-Vision preprocessor settings (tile 560,
4 tiles, CLIP mean/std, bilinear, 1/255). The full `pixel_values` of one image are 15 MB, so instead of
storing them this script stores, per image:

* metadata: size, PIL mode, canvas, tile grid, resize target, aspect-ratio id / mask, num_tiles;
* checksums (see `checksum` below) of the RGB image the processor saw after `convert_to_rgb` and of
  the image after the bilinear resize, plus 512 sampled pixels of each (to measure a difference);
* per tile-slot / per-channel sums and sums of squares of `pixel_values` (float64) and of |x|;
* 2048 deterministic samples of `pixel_values` (flat index + float32 value).

Scalars go to `reference.json`, arrays to `reference.safetensors`. The source images are written next to
them: the five images of the shared preprocessing fixture (large ones re-encoded smaller, so the references
are regenerated here rather than copied) plus procedurally drawn cases (RGBA with transparency, 16-bit and
8-bit grayscale, 16-bit RGB, palette GIF with transparency, BMP, lossy WebP, CMYK and progressive JPEG,
extreme aspect ratios, 1x1, exactly 560x560).

Usage:
    python3 scripts/gen_preprocess_fixtures.py                   # writes tests/fixtures/preprocess/
    python3 scripts/gen_preprocess_fixtures.py --out /tmp/pp --shared /path/to/shared/fixtures/preprocess

Deterministic: same inputs and library versions give byte-identical output.
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import warnings

import numpy as np
from PIL import Image

warnings.filterwarnings("ignore")

import transformers  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from transformers.image_processing_utils import SizeDict  # noqa: E402
from transformers.image_transforms import convert_to_rgb  # noqa: E402
from transformers.models.mllama import image_processing_pil_mllama as hfm  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASK64 = (1 << 64) - 1

PREPROCESSOR_CONFIG = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_pad": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "max_image_tiles": 4,
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 560, "width": 560},
}
N_PV_SAMPLES = 2048
N_IMG_SAMPLES = 512


def splitmix64(x):
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def checksum(u8):
    """sum_i (byte_i + 1) * splitmix64(i) mod 2^64 over the C-order bytes; as a 16-digit hex string.

    Cheap to compute in numpy and in Rust (the test recomputes it on its own output)."""
    b = np.ascontiguousarray(u8, dtype=np.uint8).reshape(-1).astype(np.uint64)
    w = splitmix64(np.arange(b.size, dtype=np.uint64))
    with np.errstate(over="ignore"):
        # Sum in chunks so that numpy's uint64 sum wraps like Rust's wrapping_add.
        total = 0
        for s in range(0, b.size, 1 << 20):
            total = (total + int(np.sum((b[s:s + (1 << 20)] + np.uint64(1)) * w[s:s + (1 << 20)], dtype=np.uint64))) & MASK64
    return f"{total:016x}"


def sample_indices(n_total, n, seed):
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=min(n, n_total), replace=False)).astype(np.int32)


# ----------------------------------------------------------------------------------------------
# Source images
# ----------------------------------------------------------------------------------------------

def drawn(w, h, seed, noise=0.0):
    """A deterministic RGB drawing: gradients, a diagonal ripple, random rectangles, optional noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127 + 120 * np.sin(xx / max(w, 1) * 6.3 + yy / max(h, 1) * 2.0)
    g = 255 * yy / max(h - 1, 1)
    b = 127 + 100 * np.cos((xx + yy) / 9.0)
    img = np.stack([r, g, b], -1)
    for _ in range(12):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(1, max(2, w // 3)), y0 + rng.integers(1, max(2, h // 3))
        img[y0:y1, x0:x1] = rng.integers(0, 256, 3)
    if noise:
        img += rng.normal(0, noise, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def make_images(out, shared):
    """Write every source image into `out`; return [(file, note)]."""
    cases = []

    def src(name):
        return os.path.join(shared, name)

    # The shared fixture's images (same sizes and content; big files re-encoded).
    scene = Image.open(src("scene_640x480.png")).convert("RGB")
    scene.save(os.path.join(out, "scene_640x480.jpg"), quality=85)
    cases.append(("scene_640x480.jpg", "shared scene re-encoded as JPEG q85; 1x2 canvas, no resize, padding"))
    tall = Image.open(src("tall_300x900.png")).convert("RGB")
    tall.quantize(48, dither=Image.Dither.NONE).save(os.path.join(out, "tall_300x900_palette.png"), optimize=True)
    cases.append(("tall_300x900_palette.png", "shared tall image as a 48-colour palette PNG (mode P); 2x1, no resize"))
    shutil.copyfile(src("small_200x150.png"), os.path.join(out, "small_200x150.png"))
    cases.append(("small_200x150.png", "shared, unchanged; 1x1, upscaled to 560x420"))
    shutil.copyfile(src("square_1024.jpg"), os.path.join(out, "square_1024.jpg"))
    cases.append(("square_1024.jpg", "shared, unchanged (JPEG q90 4:2:0); 2x2, no resize"))
    large = Image.open(src("large_1600x1200.jpg"))
    large.save(os.path.join(out, "large_1600x1200.jpg"), quality=70)
    cases.append(("large_1600x1200.jpg", "shared photo re-encoded as JPEG q70 (decoded by libjpeg-turbo first); 2x2, downscaled to 1120x840"))

    # Our own cases.
    a = drawn(700, 300, 1)
    yy, xx = np.mgrid[0:300, 0:700]
    alpha = np.clip((xx * 255) // 699, 0, 255).astype(np.uint8)
    alpha[:, :100] = 0  # fully transparent: white whatever the stored colour
    alpha[100:140, :] = 128
    Image.fromarray(np.dstack([a, alpha]), "RGBA").save(os.path.join(out, "rgba_alpha_700x300.png"))
    cases.append(("rgba_alpha_700x300.png", "RGBA with transparent and half-transparent areas (composited over white); 1x2 canvas, no resize"))

    g16 = (drawn(333, 517, 2)[..., 1].astype(np.uint16) * 3)  # values up to 765: Pillow clips above 255
    Image.fromarray(g16).save(os.path.join(out, "gray16_333x517.png"))
    cases.append(("gray16_333x517.png", "16-bit grayscale PNG (Pillow mode I;16; convert('RGB') clips values above 255); 1x1 canvas, downscaled"))

    Image.fromarray(drawn(480, 360, 3)[..., 0], "L").save(os.path.join(out, "gray8_480x360.png"))
    cases.append(("gray8_480x360.png", "8-bit grayscale (mode L); 1x1, upscaled to 560x420"))

    rgb16 = (drawn(120, 400, 4) // 8 * 8).astype(np.uint16) * 256 + np.uint16(77)
    buf = io.BytesIO()
    # Pillow cannot write 16-bit RGB PNGs, so write one by hand (filter 0, zlib).
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    h, w = rgb16.shape[:2]
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))
    buf.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
              + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    open(os.path.join(out, "rgb16_120x400.png"), "wb").write(buf.getvalue())
    cases.append(("rgb16_120x400.png", "16-bit RGB PNG (Pillow keeps the high byte); 1x1 canvas, upscaled to 168x560"))

    Image.fromarray(drawn(2000, 100, 5)).save(os.path.join(out, "wide_2000x100.png"))
    cases.append(("wide_2000x100.png", "extreme aspect ratio; 1x4 canvas, no resize (only padding)"))
    Image.fromarray(drawn(60, 3000, 6)).save(os.path.join(out, "tall_60x3000.png"))
    cases.append(("tall_60x3000.png", "extreme tall; 4x1 canvas, downscaled to 44x2240 (vertical pass first in Pillow 13)"))
    Image.fromarray(drawn(4000, 90, 7)).save(os.path.join(out, "wide_4000x90.png"))
    cases.append(("wide_4000x90.png", "extreme wide; 1x4 canvas, downscaled to 2240x50"))

    Image.fromarray(np.array([[[200, 30, 90]]], dtype=np.uint8)).save(os.path.join(out, "tiny_1x1.png"))
    cases.append(("tiny_1x1.png", "1x1 pixel; upscaled to 560x560"))
    Image.fromarray(drawn(560, 560, 8)).save(os.path.join(out, "exact_560x560.png"))
    cases.append(("exact_560x560.png", "exactly one tile; scale 1 counts as upscaling (>= 1), so 1x1 and no resize"))

    Image.fromarray(drawn(800, 600, 9, noise=4)).save(os.path.join(out, "lossy_800x600.webp"), quality=80)
    cases.append(("lossy_800x600.webp", "lossy WebP (libwebp in Pillow, image-webp in Rust); 2x2 canvas, no resize"))

    pal = Image.fromarray(drawn(300, 200, 10)).quantize(64, dither=Image.Dither.NONE)
    pal.save(os.path.join(out, "palette_transparent_300x200.gif"), transparency=5)
    cases.append(("palette_transparent_300x200.gif", "GIF with a transparent palette index (composited over white); 1x1, upscaled"))

    Image.fromarray(drawn(150, 90, 11)).save(os.path.join(out, "bmp24_150x90.bmp"))
    cases.append(("bmp24_150x90.bmp", "24-bit BMP; 1x1, upscaled"))

    Image.fromarray(drawn(240, 180, 12, noise=4)).convert("CMYK").save(os.path.join(out, "cmyk_240x180.jpg"), quality=90)
    cases.append(("cmyk_240x180.jpg", "CMYK JPEG (Adobe inverted; Pillow's cmyk2rgb); 1x1, upscaled"))

    crop = np.array(large.convert("RGB"))[100:1101, 200:1497]
    Image.fromarray(crop).save(os.path.join(out, "progressive_1297x1001.jpg"), quality=60, progressive=True)
    cases.append(("progressive_1297x1001.jpg", "progressive JPEG, odd size; 2x2 canvas, downscaled"))
    return cases


# ----------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------

def reference(proc, path, name, tensors):
    im = Image.open(path)
    mode, fmt = im.mode, im.format
    decoded = convert_to_rgb(im, return_numpy=True)  # what the processor sees
    h, w = decoded.shape[:2]
    out = proc(images=[[Image.open(path)]], return_tensors="np")
    pv = out["pixel_values"][0, 0]  # [4, 3, T, T] float32
    tile = PREPROCESSOR_CONFIG["size"]["height"]
    canvas = tuple(int(v) for v in hfm.get_optimal_tiled_canvas(h, w, 4, tile))
    resized_hw = tuple(int(v) for v in hfm.get_image_size_fit_to_canvas(h, w, canvas[0], canvas[1], tile))
    chw = np.moveaxis(decoded, -1, 0)
    resized_chw, grid = proc.resize(chw, size=SizeDict(height=tile, width=tile), max_image_tiles=4,
                                    resample=PREPROCESSOR_CONFIG["resample"])
    resized = np.ascontiguousarray(np.moveaxis(resized_chw, 0, -1))
    assert resized.shape[:2] == resized_hw, (resized.shape, resized_hw)
    # Self-check: pad / rescale / normalise / split from the resized image reproduces the processor.
    padded = proc.pad(resized_chw, size={"height": tile, "width": tile}, aspect_ratio=grid)
    rec = proc.normalize(proc.rescale(padded, PREPROCESSOR_CONFIG["rescale_factor"]),
                         PREPROCESSOR_CONFIG["image_mean"], PREPROCESSOR_CONFIG["image_std"])
    tiles = hfm.split_to_tiles_np(rec, *grid)
    recheck = float(np.abs(tiles - pv[: tiles.shape[0]]).max())

    pv64 = pv.astype(np.float64)
    flat = pv.reshape(-1)
    seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    idx = sample_indices(flat.size, N_PV_SAMPLES, seed)
    tensors[f"{name}.pv_index"] = idx
    tensors[f"{name}.pv_value"] = flat[idx].astype(np.float32)
    didx = sample_indices(decoded.size, N_IMG_SAMPLES, seed + 1)
    tensors[f"{name}.decoded_index"] = didx
    tensors[f"{name}.decoded_value"] = decoded.reshape(-1)[didx]
    ridx = sample_indices(resized.size, N_IMG_SAMPLES, seed + 2)
    tensors[f"{name}.resized_index"] = ridx
    tensors[f"{name}.resized_value"] = resized.reshape(-1)[ridx]
    return {
        "file": name,
        "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
        "width": int(w),
        "height": int(h),
        "pil_mode": mode,
        "format": fmt,
        "canvas_hw": list(canvas),
        "tile_grid_hw": [int(grid[0]), int(grid[1])],
        "resized_hw": list(resized_hw),
        "resized": bool(resized_hw != (h, w)),
        "aspect_ratio_id": int(out["aspect_ratio_ids"][0, 0]),
        "aspect_ratio_mask": [int(v) for v in out["aspect_ratio_mask"][0, 0]],
        "num_tiles": int(out["num_tiles"][0][0]),
        "decoded_checksum": checksum(decoded),
        "resized_checksum": checksum(resized),
        "pv_sum": pv64.sum(axis=(2, 3)).tolist(),
        "pv_sumsq": (pv64 ** 2).sum(axis=(2, 3)).tolist(),
        "pv_abs_sum": np.abs(pv64).sum(axis=(2, 3)).tolist(),
        "self_check_recompute_from_resized_max_abs": recheck,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "preprocess"))
    default_shared = os.path.join(os.path.dirname(REPO), "shared", "fixtures", "preprocess")
    if not os.path.isdir(default_shared):
        default_shared = "/work/shared/fixtures/preprocess"
    ap.add_argument("--shared", default=default_shared,
                    help="the shared preprocessing fixture dir (source of the five original images)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for f in os.listdir(args.out):
        if f != "README.md":
            os.remove(os.path.join(args.out, f))

    cases = make_images(args.out, args.shared)
    proc = hfm.MllamaImageProcessorPil(**PREPROCESSOR_CONFIG)
    tensors = {}
    images = []
    for name, note in cases:
        ref = reference(proc, os.path.join(args.out, name), name, tensors)
        ref["note"] = note
        images.append(ref)
        print(f"{name:34s} {ref['pil_mode']:5s} {ref['width']}x{ref['height']} -> grid {ref['tile_grid_hw']} "
              f"resized {ref['resized_hw']} id {ref['aspect_ratio_id']} "
              f"self-check {ref['self_check_recompute_from_resized_max_abs']:.2g}", file=sys.stderr)
    save_file(tensors, os.path.join(args.out, "reference.safetensors"), metadata={"format": "pt"})
    doc = {
        "generator": "scripts/gen_preprocess_fixtures.py",
        "transformers_version": transformers.__version__,
        "pillow_version": Image.__version__,
        "numpy_version": np.__version__,
        "processor": "MllamaImageProcessorPil (PIL backend)",
        "preprocessor_config": PREPROCESSOR_CONFIG,
        "checksum": "sum_i (byte_i + 1) * splitmix64(i) mod 2^64 over the C-order uint8 HWC bytes, hex",
        "pv_stats": "pv_sum / pv_sumsq / pv_abs_sum: float64 sums over each [tile slot][channel] of pixel_values",
        "samples": "reference.safetensors: <file>.pv_index (int32 flat index into [4,3,560,560]) and "
                   "<file>.pv_value (float32); <file>.decoded_* / <file>.resized_* (flat index into HWC uint8, value)",
        "images": images,
    }
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"wrote {len(images)} cases to {args.out} ({total / 1e6:.2f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
