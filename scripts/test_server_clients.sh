#!/usr/bin/env bash
# `mllama serve` with real clients: the official Python packages `ollama` and `openai` (installed
# into a venv under target/) and curl for the raw NDJSON and SSE frames, against the demo model.
# With temperature 0, every text a client receives must equal `mllama run`'s for the same prompt
# and images. Called by .ci/run; needs python3 (with venv) and curl, and PyPI for the clients.
# MLLAMA_BIN=path uses a built binary instead of building the release one.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${MLLAMA_BIN:-}" ]; then
  cargo build --release --bin mllama
  MLLAMA_BIN=target/release/mllama
fi
venv=target/client-venv
if [ ! -x $venv/bin/python ]; then
  python3 -m venv $venv
fi
$venv/bin/pip install -q --disable-pip-version-check ollama openai

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

model=models/demo/mllama-demo-q4_0.gguf
image=models/demo/example.jpg
# A second, different picture: a 64x48 gradient BMP.
python3 - "$work/second.bmp" <<'PY'
import struct, sys
w, h = 64, 48
row = (w * 3 + 3) // 4 * 4
data = bytearray()
for y in range(h):
    line = bytearray()
    for x in range(w):
        line += bytes([x * 255 // w, y * 255 // h, 128])
    data += line + bytes(row - len(line))
hdr = b"BM" + struct.pack("<IHHI", 54 + len(data), 0, 0, 54)
hdr += struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(data), 2835, 2835, 0, 0)
open(sys.argv[1], "wb").write(hdr + data)
PY
n=12
q="What is in this picture?"
q_text="Say something about the sea."
q_two="Compare the two pictures."

# What `mllama run` answers, greedy.
run() { "$MLLAMA_BIN" run -m $model -n $n --temperature 0 "$@"; }
run --image $image -p "$q" > "$work/image.txt"
run -p "$q_text" > "$work/text.txt"
run --image $image --image "$work/second.bmp" -p "$q_two" > "$work/two.txt"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
host="http://127.0.0.1:$port"
"$MLLAMA_BIN" serve -m demo=$model --addr 127.0.0.1:$port --ctx 1024 2> "$work/server.log" &
server_pid=$!
for _ in $(seq 1 100); do
  curl -sf "$host/api/version" > /dev/null && break
  sleep 0.1
done
curl -sf "$host/api/version" > /dev/null || { cat "$work/server.log"; echo "server did not start" >&2; exit 1; }

fail=0
pass=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }

# curl: raw NDJSON frames of /api/chat with an image.
img64=$(base64 -w0 $image)
body=$(printf '{"model":"demo","messages":[{"role":"user","content":"%s","images":["%s"]}],"options":{"temperature":0,"num_predict":%d}}' "$q" "$img64" $n)
curl -sS -D "$work/h1" -o "$work/ndjson" "$host/api/chat" -H 'Content-Type: application/json' -d "$body"
grep -qi '^content-type: application/x-ndjson' "$work/h1" && ok "curl NDJSON content type" || bad "curl NDJSON content type"
python3 - "$work/ndjson" "$work/image.txt" <<'PY' && ok "curl NDJSON frames" || bad "curl NDJSON frames"
import json, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
frames = [json.loads(l) for l in lines]
assert all(not f["done"] for f in frames[:-1]) and frames[-1]["done"], "done only on the last frame"
last = frames[-1]
for k in ("done_reason", "total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
          "eval_count", "eval_duration", "image_encode_duration"):
    assert k in last, k
text = "".join(f["message"]["content"] for f in frames)
want = open(sys.argv[2], encoding="utf-8").read()
assert text == want, (text, want)
PY

# curl: raw SSE frames of /v1/chat/completions.
body=$(printf '{"model":"demo","stream":true,"stream_options":{"include_usage":true},"temperature":0,"max_tokens":%d,"messages":[{"role":"user","content":[{"type":"text","text":"%s"},{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,%s"}}]}]}' $n "$q" "$img64")
curl -sS -N -D "$work/h2" -o "$work/sse" "$host/v1/chat/completions" -H 'Content-Type: application/json' -d "$body"
grep -qi '^content-type: text/event-stream' "$work/h2" && ok "curl SSE content type" || bad "curl SSE content type"
python3 - "$work/sse" "$work/image.txt" <<'PY' && ok "curl SSE frames" || bad "curl SSE frames"
import json, sys
raw = open(sys.argv[1], encoding="utf-8").read()
events = [e for e in raw.split("\n\n") if e.strip()]
assert all(e.startswith("data: ") for e in events), "every event is a data: line"
assert events[-1] == "data: [DONE]", events[-1]
chunks = [json.loads(e[6:]) for e in events[:-1]]
text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
assert text == open(sys.argv[2], encoding="utf-8").read(), text
assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
PY

MLLAMA_HOST=$host EXPECT_DIR=$work IMAGE=$image IMAGE2=$work/second.bmp N_TOKENS=$n \
  $venv/bin/python scripts/server_clients.py || fail=$((fail + 1))
echo "curl: $pass passed, $fail failed"
if [ $fail -ne 0 ]; then
  echo "--- server log"; cat "$work/server.log"
  exit 1
fi
