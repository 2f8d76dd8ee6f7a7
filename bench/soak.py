#!/usr/bin/env python3
"""Soak: a bounded, closed-loop load generator against valley-server on loopback. Prints one
line per round (never asserts): throughput, latency percentiles, answers by status, aborts,
and the server's RSS and open file descriptors (from /proc), so growth across rounds shows.

Each of N clients (threads, keep-alive connections) sends, until the round's request count
is reached, a mix of:
  chat      non-streaming chat, a few tokens                    (weight 45)
  stream    streaming chat, read to [DONE]                       (20)
  image     chat with a small PNG data URL                       (10)
  abort     streaming chat closed after its first chunk          (10)
  bad       invalid JSON (400), or without the API key (401)     (15)

Usage:
  python3 bench/soak.py                         # starts build/valley-server on a generated model
  python3 bench/soak.py --rounds 20 --requests 5000 --clients 8
  python3 bench/soak.py --url http://127.0.0.1:8000 --pid 1234 --model NAME [--key KEY]
Only 127.0.0.1 / localhost / ::1 URLs are accepted. Needs httpx (tests/requirements.txt).
"""

import argparse
import base64
import os
import random
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import urlparse

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
import vlm_fixtures  # noqa: E402  (the committed Qwen3 tokenizer fixture)

ROOT = Path(__file__).resolve().parents[1]
KEY = "soak-key"
# the gqa4 test geometry (tests/api/conftest.py)
MODEL_ARGS = ["--seed", "1", "--hidden", "128", "--layers", "3", "--heads", "8", "--kv-heads", "2",
              "--head-dim", "32", "--ffn", "256", "--vit-depth", "2", "--vit-dim", "64",
              "--vit-heads", "4", "--merger-hidden", "128"]
MIX = [("chat", 45), ("stream", 20), ("image", 10), ("abort", 10), ("bad", 15)]


def png(w, h, seed):
    rows = bytearray()
    for y in range(h):
        rows.append(0)
        for x in range(w):
            rows += bytes(((x * 7 + seed) & 255, (y * 5) & 255, (x ^ y) & 255))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b""))


IMAGES = ["data:image/png;base64," + base64.b64encode(png(48, 40, s)).decode() for s in range(4)]


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def proc_figures(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def one(c: httpx.Client, kind: str, model: str, rng: random.Random, key):
    """Returns (status or 'abort', seconds)."""
    msg = [{"role": "user", "content": f"say something {rng.randrange(1000)}"}]
    body = {"model": model, "messages": msg, "max_tokens": rng.randint(2, 12)}
    t0 = time.time()
    if kind == "bad":
        if key and rng.random() < 0.5:
            r = c.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer no"})
        else:
            r = c.post("/v1/chat/completions", content=b'{"model": "x", "messages": [',
                       headers={"Content-Type": "application/json"})
        return r.status_code, time.time() - t0
    if kind == "image":
        body["messages"] = [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": rng.choice(IMAGES)}},
            {"type": "text", "text": "what is this?"}]}]
    if kind in ("chat", "image"):
        r = c.post("/v1/chat/completions", json=body)
        return r.status_code, time.time() - t0
    body["stream"] = True
    if kind == "abort":
        body["max_tokens"] = 200
        body["ignore_eos"] = True
    with c.stream("POST", "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if kind == "abort" and line.startswith("data: "):
                break  # leaving the with-block closes the connection mid-stream
            if line == "data: [DONE]":
                break
        status = r.status_code if kind != "abort" else "abort"
    return status, time.time() - t0


def run_round(url, model, key, n_req, n_clients, seed):
    lock = threading.Lock()
    left = [n_req]
    res = []

    def worker(i):
        rng = random.Random(seed * 1000 + i)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        kinds = [k for k, w in MIX for _ in range(w)]
        with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                kind = rng.choice(kinds)
                try:
                    st, dt = one(c, kind, model, rng, key)
                except httpx.HTTPError as e:
                    st, dt = type(e).__name__, 0.0
                with lock:
                    res.append((kind, st, dt))

    t0 = time.time()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(n_clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return res, time.time() - t0


def loopback(url):
    host = urlparse(url).hostname
    return host in ("127.0.0.1", "localhost", "::1")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=1000, help="requests per round")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--url")
    ap.add_argument("--pid", type=int, help="the server's pid (with --url), for RSS and fds")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--key")
    ap.add_argument("--server", default=str(ROOT / "build" / "valley-server"))
    ap.add_argument("--fixtures", help="folder holding qwen3-tokenizer/ (default: the committed one)")
    a = ap.parse_args()
    if a.rounds > 1000 or a.requests > 1_000_000 or a.clients > 256:
        sys.exit("soak: bounded: at most 1000 rounds, 1e6 requests per round, 256 clients")
    proc = None
    tmp = None
    if a.url:
        if not loopback(a.url):
            sys.exit("soak: loopback URLs only")
        if not a.pid:
            sys.exit("soak: --pid is needed with --url (RSS and fds are read from /proc)")
        url, pid, key = a.url.rstrip("/"), a.pid, a.key
    else:
        tmp = tempfile.TemporaryDirectory(prefix="soak-")
        mdir = Path(tmp.name) / "tiny"
        build = Path(a.server).parent
        cmd = [str(build / "valley-make-model"), "--out", str(mdir), *MODEL_ARGS]
        tok = Path(a.fixtures or vlm_fixtures.fixtures_dir()) / "qwen3-tokenizer"
        if tok.is_dir():
            cmd += ["--tokenizer", str(tok)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        log = open(Path(tmp.name) / "server.log", "w+")
        key = KEY
        proc = subprocess.Popen([a.server, "--model", str(mdir), "--host", "127.0.0.1", "--port",
                                 "0", "--served-model-name", a.model, "--api-key", key,
                                 "--kv-cache-memory", "256MiB", "--max-model-len", "2048",
                                 "--threads", "2"],
                                stdout=subprocess.PIPE, stderr=log, text=True)
        pid = proc.pid
        url = None
        deadline = time.time() + 120
        while time.time() < deadline and not url:
            log.seek(0)
            for line in log:
                if "listening on http://" in line:
                    url = "http://127.0.0.1:" + line.split("listening on http://")[1].split(":")[1].split()[0]
            time.sleep(0.1)
        if not url:
            proc.kill()
            sys.exit("soak: the server did not start")
    try:
        print(f"soak: {a.rounds} rounds x {a.requests} requests, {a.clients} clients, "
              f"mix {', '.join(f'{k} {w}%' for k, w in MIX)}; server pid {pid} at {url}")
        rss0, fd0 = proc_figures(pid)
        print(f"round   req/s  p50_ms  p90_ms  p99_ms  statuses{' ' * 36}rss_MiB  fds   (start: {rss0:.1f} MiB, {fd0} fds)")
        for rnd in range(1, a.rounds + 1):
            res, took = run_round(url, a.model, key, a.requests, a.clients, rnd)
            lat = [dt * 1000 for kind, st, dt in res if st == 200 and kind in ("chat", "image")]
            counts = {}
            for _, st, _ in res:
                counts[st] = counts.get(st, 0) + 1
            time.sleep(0.5)  # let aborted requests and closed connections settle
            rss, fds = proc_figures(pid)
            sts = " ".join(f"{k}:{v}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0])))
            print(f"{rnd:5d} {len(res) / took:7.1f} {pct(lat, 50):7.1f} {pct(lat, 90):7.1f} "
                  f"{pct(lat, 99):7.1f}  {sts:<44s} {rss:7.1f} {fds:4d}", flush=True)
    finally:
        if proc:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            print(f"soak: server exit status {proc.returncode}")
        if tmp:
            tmp.cleanup()


if __name__ == "__main__":
    main()
