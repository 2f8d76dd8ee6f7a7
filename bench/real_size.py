#!/usr/bin/env python3
"""The real-size run (issue 17, item 4): a full-geometry checkpoint served on the CPU.

Starts valley-server on a model folder (e.g. the random-weight `valley-make-model --preset
valley2.5` one), then sends one image (a generated photo-like JPEG of --image-size pixels a
side, 1 MP by default) with a short text, streamed, --max-tokens tokens, twice:

  1. cold:  the vision tower runs, then the prefill, then the decode;
  2. warm:  the same request again. Prefix caching is off and the encoder cache on, so the
            image's embedding is reused and the whole prompt is prefilled again.

The difference of the two times to first token is the vision tower's time; the second one
is the prefill (plus one sampled token). Decode speed is read from the stream's chunk times.
Peak and final resident memory come from /proc/<pid>/status (VmHWM, RssAnon, RssFile).

Prints one table; nothing is asserted. Standard library only (no openai package needed).

    python3 bench/real_size.py --model /path/to/valley25 [--server build/valley-server]
        [--threads 0] [--numerics fast] [--image-size 1000] [--max-tokens 32]
"""
import argparse
import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
import zlib
import struct


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def png_bytes(w, h):
    """A smooth RGB gradient with some texture, as PNG (no imaging library needed)."""
    rows = []
    for y in range(h):
        row = bytearray([0])
        for x in range(w):
            row += bytes(((x * 255) // w, (y * 255) // h, ((x ^ y) * 7) & 255))
        rows.append(bytes(row))
    raw = b"".join(rows)

    def chunk(tag, data):
        c = struct.pack(">I", len(data)) + tag + data
        return c + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    return out


def stream_chat(port, body):
    """Sends a streamed chat request; returns (t_first_token, [t of each content chunk], usage)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    t0 = time.monotonic()
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"HTTP {resp.status}: {resp.read()[:500]!r}")
    times, usage = [], None
    buf = b""
    while True:
        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(1)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            if not ev.startswith(b"data: "):
                continue
            data = ev[6:]
            if data == b"[DONE]":
                conn.close()
                return times, usage, t0
            obj = json.loads(data)
            if obj.get("usage"):
                usage = obj["usage"]
            for ch in obj.get("choices", []):
                if ch.get("delta", {}).get("content"):
                    times.append(time.monotonic() - t0)
    conn.close()
    return times, usage, t0


def metric(port, name):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--server", default=os.path.join(os.path.dirname(__file__), "..", "build",
                                                     "valley-server"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--numerics", default="fast", choices=["fast", "exact"])
    ap.add_argument("--image-size", type=int, default=1000)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--kv-cache-memory", default="1GiB")
    ap.add_argument("--max-model-len", type=int, default=4096)
    a = ap.parse_args()

    port = free_port()
    cmd = [a.server, "--model", a.model, "--host", "127.0.0.1", "--port", str(port),
           "--threads", str(a.threads), "--numerics", a.numerics,
           "--kv-cache-memory", a.kv_cache_memory, "--max-model-len", str(a.max_model_len),
           "--no-enable-prefix-caching", "--max-step-ms", "0"]
    print("server:", " ".join(cmd), flush=True)
    t_start = time.monotonic()
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            if srv.poll() is not None:
                raise SystemExit("server exited:\n" + srv.stderr.read()[-4000:])
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/ready")
                ok = conn.getresponse().status == 200
                conn.close()
                if ok:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        t_load = time.monotonic() - t_start
        st_loaded = proc_status(srv.pid)

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/v1/models")
        model_id = json.loads(conn.getresponse().read())["data"][0]["id"]
        conn.close()
        img = base64.b64encode(png_bytes(a.image_size, a.image_size)).decode()
        body = {
            "model": model_id, "stream": True, "max_tokens": a.max_tokens, "temperature": 0,
            "ignore_eos": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + img}},
                {"type": "text", "text": "Describe this picture in one paragraph."}]}],
        }
        runs = []
        for label in ("cold (tower + prefill)", "warm (encoder cache hit, prefill only)"):
            misses0 = metric(port, "valley:encoder_cache_misses_total")
            times, usage, _ = stream_chat(port, body)
            misses = metric(port, "valley:encoder_cache_misses_total") - misses0
            runs.append((label, times, usage, misses))
            print(f"{label}: ttft {times[0]:.2f} s, {len(times)} chunks, usage {usage}, "
                  f"encoder misses {misses:.0f}", flush=True)
        st_end = proc_status(srv.pid)
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=60)
        except subprocess.TimeoutExpired:
            srv.kill()

    gib = 1 << 30
    weights = sum(os.path.getsize(os.path.join(a.model, f)) for f in os.listdir(a.model)
                  if f.endswith(".safetensors"))
    cold, warm = runs[0], runs[1]
    prompt = cold[2]["prompt_tokens"] if cold[2] else 0
    tower = cold[1][0] - warm[1][0]
    prefill = warm[1][0]
    print()
    print(f"| figure | value |")
    print(f"|---|---|")
    print(f"| weights on disk | {weights / gib:.2f} GiB |")
    print(f"| load (start to /ready) | {t_load:.1f} s |")
    print(f"| RSS after load (anon / file) | {st_loaded['RssAnon'] / gib:.2f} / "
          f"{st_loaded['RssFile'] / gib:.2f} GiB |")
    print(f"| prompt tokens (image + text + template) | {prompt} |")
    print(f"| vision tower, {a.image_size}x{a.image_size} image (cold TTFT - warm TTFT) | "
          f"{tower:.1f} s |")
    print(f"| prefill of {prompt} tokens + first token (warm TTFT) | {prefill:.1f} s "
          f"({prompt / prefill:.1f} tok/s) |")
    for label, times, _, _ in runs:
        if len(times) > 1:
            dt = times[-1] - times[0]
            print(f"| decode, {label.split()[0]} run ({len(times) - 1} tokens after the first) | "
                  f"{(len(times) - 1) / dt:.2f} tok/s ({dt / (len(times) - 1) * 1000:.0f} ms/token) |")
    print(f"| peak RSS (VmHWM) | {st_end['VmHWM'] / gib:.2f} GiB "
          f"(weights + {(st_end['VmHWM'] - weights) / gib:+.2f} GiB) |")
    print(f"| RSS at end (anon / file) | {st_end['RssAnon'] / gib:.2f} / "
          f"{st_end['RssFile'] / gib:.2f} GiB |")


if __name__ == "__main__":
    main()
