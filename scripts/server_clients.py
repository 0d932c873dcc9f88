"""The official Python clients (`ollama`, `openai`) against a running `mllama serve`.

Run by test_server_clients.sh, which starts the server on the demo model and writes what
`mllama run` answers at temperature 0 for the same prompts and images into $EXPECT_DIR. Every
text a client receives must equal it. Exits non-zero on the first mismatch.
"""

import base64
import os
import sys

import ollama
import openai

HOST = os.environ["MLLAMA_HOST"]  # http://127.0.0.1:PORT
EXPECT = os.environ["EXPECT_DIR"]
IMAGE = os.environ["IMAGE"]
IMAGE2 = os.environ["IMAGE2"]
N = int(os.environ.get("N_TOKENS", "12"))
Q = "What is in this picture?"
Q_TEXT = "Say something about the sea."
Q_TWO = "Compare the two pictures."

failures = 0
passed = 0


def expect(name):
    with open(os.path.join(EXPECT, name), encoding="utf-8") as f:
        return f.read()


def check(what, got, want):
    global failures, passed
    if got == want:
        passed += 1
        print(f"ok   {what}")
    else:
        failures += 1
        print(f"FAIL {what}:\n  got  {got!r}\n  want {want!r}")


def check_true(what, cond, detail=""):
    check(what + (f" ({detail})" if detail else ""), bool(cond), True)


greedy = {"temperature": 0, "num_predict": N}
o = ollama.Client(host=HOST)

# Ollama: chat with an image, not streamed and streamed.
r = o.chat(model="demo", messages=[{"role": "user", "content": Q, "images": [IMAGE]}], options=greedy)
check("ollama chat + image", r.message.content, expect("image.txt"))
check_true("ollama chat done_reason", r.done_reason in ("stop", "length"), r.done_reason)
check_true("ollama chat durations", r.eval_count and r.prompt_eval_count and r.total_duration)
parts = o.chat(
    model="demo", messages=[{"role": "user", "content": Q, "images": [IMAGE]}], options=greedy, stream=True
)
chunks = list(parts)
check("ollama chat + image, streamed", "".join(c.message.content for c in chunks), expect("image.txt"))
check_true("ollama stream ends with done", chunks[-1].done)

# Ollama: generate (text only), and two images in one message.
g = o.generate(model="demo", prompt=Q_TEXT, options=greedy)
check("ollama generate", g.response, expect("text.txt"))
r = o.chat(model="demo", messages=[{"role": "user", "content": Q_TWO, "images": [IMAGE, IMAGE2]}], options=greedy)
check("ollama chat + two images", r.message.content, expect("two.txt"))

# Ollama: listings.
tags = o.list()
check("ollama list", [m.model for m in tags.models], ["demo:latest"])
show = o.show("demo")
check_true("ollama show capabilities", "vision" in (show.capabilities or []), show.capabilities)
check_true("ollama show model_info", show.modelinfo.get("general.architecture") == "mllama")
check("ollama ps", [m.model for m in o.ps().models], ["demo:latest"])

# OpenAI: chat completions with a data: URI, not streamed and streamed with usage.
with open(IMAGE, "rb") as f:
    uri = "data:image/jpeg;base64," + base64.b64encode(f.read()).decode()
c = openai.OpenAI(base_url=HOST + "/v1", api_key="unused")
msgs = [{"role": "user", "content": [{"type": "text", "text": Q}, {"type": "image_url", "image_url": {"url": uri}}]}]
r = c.chat.completions.create(model="demo", messages=msgs, temperature=0, max_tokens=N)
check("openai chat + image", r.choices[0].message.content, expect("image.txt"))
check_true("openai usage", r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens)
s = c.chat.completions.create(
    model="demo", messages=msgs, temperature=0, max_tokens=N, stream=True, stream_options={"include_usage": True}
)
text, usage = "", None
for chunk in s:
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
    if chunk.usage:
        usage = chunk.usage
check("openai chat + image, streamed", text, expect("image.txt"))
check_true("openai streamed usage", usage is not None and usage.completion_tokens > 0)
r = c.chat.completions.create(
    model="demo",
    messages=[{"role": "user", "content": Q_TEXT}],
    temperature=0,
    max_completion_tokens=N,
)
check("openai chat text", r.choices[0].message.content, expect("text.txt"))
check("openai models", [m.id for m in c.models.list().data], ["demo:latest"])
try:
    c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    check_true("openai unknown model refused", False)
except openai.NotFoundError as e:
    check_true("openai unknown model refused", "nope" in str(e), str(e))

print(f"python clients: {passed} passed, {failures} failed")
sys.exit(1 if failures else 0)
