"""Load and fault figures for `mllama serve` (stdlib only; the figures of the README come from it).

    python3 scripts/server_load.py [--bin target/release/mllama] [--tokens 16]

1. For --parallel 1, 2 and 4: 16 concurrent streaming requests (half with the demo image), each
   text compared with the same request sent alone; throughput (tokens/s) and p50/p95 time to
   first token.
2. 500 requests in a row (varied prompts, some with images): peak RSS after 100 and after 500.
3. 50 clients that disconnect after their first frame, next to 4 steady ones: every quitter's
   generation stops (cancelled count in /metrics), the steady answers are unchanged.
Exits non-zero if a text differs or a check fails.
"""

import argparse
import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models/demo/mllama-demo-q4_0.gguf")
IMAGE = base64.b64encode(open(os.path.join(ROOT, "models/demo/example.jpg"), "rb").read()).decode()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    def __init__(self, binary, parallel, extra=()):
        self.port = free_port()
        self.p = subprocess.Popen(
            [binary, "serve", "-m", "demo=" + MODEL, "--addr", f"127.0.0.1:{self.port}",
             "--parallel", str(parallel), "--ctx", "1024", *extra],
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                self.get("/api/version")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def get(self, path):
        c = self.conn()
        c.request("GET", path)
        return c.getresponse().read().decode()

    def metric(self, name):
        for line in self.get("/metrics").splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def rss_kb(self, field="VmHWM"):
        for line in open(f"/proc/{self.p.pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def stop(self):
        self.p.terminate()
        self.p.wait()


def body(i, tokens, image):
    m = {"role": "user", "content": f"Request {i}: describe what you see."}
    if image:
        m["images"] = [IMAGE]
    return {"model": "demo", "messages": [m], "options": {"temperature": 0, "num_predict": tokens}}


def stream(server, b, quit_after=None):
    """(text, ttft seconds, tokens) of a streamed /api/chat; quit_after frames: disconnect."""
    t0 = time.perf_counter()
    c = server.conn()
    c.request("POST", "/api/chat", json.dumps(b), {"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, r.status
    text, ttft, n, frames = "", None, 0, 0
    while True:
        line = r.readline()
        if not line:
            break
        f = json.loads(line)
        frames += 1
        if ttft is None:
            ttft = time.perf_counter() - t0
        if f.get("done"):
            n = f["eval_count"]
            break
        text += f["message"]["content"]
        if quit_after and frames >= quit_after:
            c.sock.shutdown(socket.SHUT_RDWR)
            c.close()
            return text, ttft, -1
    c.close()
    return text, ttft, n


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def concurrency(binary, tokens):
    ok = True
    for parallel in (1, 2, 4):
        s = Server(binary, parallel)
        bodies = [body(i, tokens, i % 2 == 0) for i in range(16)]
        alone = [stream(s, b)[0] for b in bodies]
        results = [None] * 16
        def go(i):
            results[i] = stream(s, bodies[i])
        t0 = time.perf_counter()
        threads = [threading.Thread(target=go, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        same = all(r[0] == a for r, a in zip(results, alone))
        ok &= same
        toks = sum(r[2] for r in results)
        ttfts = [r[1] for r in results]
        print(f"parallel {parallel}: 16 concurrent streams, {toks} tokens in {wall:.2f} s = {toks / wall:.1f} tokens/s; "
              f"TTFT p50 {pct(ttfts, 50):.2f} s, p95 {pct(ttfts, 95):.2f} s; texts equal to one-at-a-time: {same}")
        s.stop()
    return ok


def rss(binary, tokens):
    s = Server(binary, 2)
    marks = {}
    for i in range(500):
        b = body(i % 37, max(2, tokens // 4), i % 5 == 0)
        if i % 3 == 1:  # a follow-up turn of an earlier conversation
            b["messages"] += [{"role": "assistant", "content": "Something."}, {"role": "user", "content": f"More {i}"}]
        b["stream"] = False
        c = s.conn()
        c.request("POST", "/api/chat", json.dumps(b), {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
        if i + 1 in (100, 200, 300, 400, 500):
            marks[i + 1] = s.rss_kb("VmRSS") / 1024
    peak = s.rss_kb("VmHWM") / 1024
    print("500 requests: RSS after " + ", ".join(f"{k}: {v:.1f} MiB" for k, v in marks.items()) + f"; peak {peak:.1f} MiB")
    s.stop()
    return marks[500] <= marks[100] * 1.10 + 16


def disconnects(binary, tokens):
    s = Server(binary, 4, ["--queue", "128"])
    steady_bodies = [body(100 + i, tokens, i % 2 == 0) for i in range(4)]
    want = [stream(s, b)[0] for b in steady_bodies]
    before = s.metric("mllama_generations_cancelled_total")
    long = {"model": "demo", "prompt": "<|begin_of_text|>Once", "raw": True,
            "options": {"temperature": 1.0, "seed": 5, "num_predict": 400}}
    got = [None] * 4
    def quitter(i):
        c = s.conn()
        c.request("POST", "/api/generate", json.dumps(long), {"Content-Type": "application/json"})
        r = c.getresponse()
        r.readline()
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
    def steady(i):
        got[i] = stream(s, steady_bodies[i])[0]
    ts = [threading.Thread(target=quitter, args=(i,)) for i in range(50)]
    ts += [threading.Thread(target=steady, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    deadline = time.time() + 120
    while time.time() < deadline and s.metric("mllama_generations_running") + s.metric("mllama_requests_queued") > 0:
        time.sleep(0.1)
    cancelled = s.metric("mllama_generations_cancelled_total") - before
    generated = s.metric("mllama_generated_tokens_total")
    same = got == want
    print(f"50 disconnecting clients: {cancelled:.0f} generations cancelled, {generated:.0f} tokens generated in all "
          f"(400 per quitter if none stopped); 4 steady clients unchanged: {same}")
    s.stop()
    return same and cancelled == 50


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/mllama"))
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--only", choices=["concurrency", "rss", "disconnects"])
    a = ap.parse_args()
    ok = True
    for name, f in (("concurrency", concurrency), ("rss", rss), ("disconnects", disconnects)):
        if a.only in (None, name):
            r = f(a.bin, a.tokens)
            print(f"{name}: {'ok' if r else 'FAILED'}", flush=True)
            ok &= r
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
