#!/usr/bin/env python3
"""HTTP + scheduler overhead benchmark for valley-server (prints figures, never asserts).

  1. requests/s and p50/p99 latency of 1-token chat completions at concurrency 1, 16, 64
     (keep-alive connections, one per client, a minimal asyncio HTTP/1.1 client so the
     client costs little);
  2. a streaming client: N concurrent streams of M tokens; TTFT, inter-token latency
     (p50/p99) and output tokens/s.

Usage:
  python3 bench/bench_http.py                       # starts build/valley-server (default model)
  python3 bench/bench_http.py --url http://127.0.0.1:8000 --model NAME
  python3 bench/bench_http.py --server build-http/valley-server --server-args "--model DIR"
The streaming part is importable: stream_bench(host, port, model, n, max_tokens, ...).
"""

import argparse
import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def open_conn(host, port):
    return await asyncio.open_connection(host, port)


async def post(reader, writer, host, path, body, key=None):
    """One request on a keep-alive connection; returns (status, body bytes)."""
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n")
    if key:
        head += f"Authorization: Bearer {key}\r\n"
    writer.write(head.encode() + b"\r\n" + data)
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length, chunked = None, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        if k.lower() == "content-length":
            length = int(v)
        elif k.lower() == "transfer-encoding" and "chunked" in v.lower():
            chunked = True
    if chunked:
        out = b""
        while True:
            n = int((await reader.readline()).strip(), 16)
            if n == 0:
                await reader.readline()
                break
            out += await reader.readexactly(n)
            await reader.readline()
        return status, out
    return status, await reader.readexactly(length or 0)


async def latency_bench(host, port, model, concurrency, seconds, key=None):
    """1-token chat completions from `concurrency` keep-alive clients for `seconds`."""
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1,
            "temperature": 0}
    lat, errors = [], 0
    end = time.perf_counter() + seconds

    async def client():
        nonlocal errors
        reader, writer = await open_conn(host, port)
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            status, _ = await post(reader, writer, host, "/v1/chat/completions", body, key)
            if status == 200:
                lat.append(time.perf_counter() - t0)
            else:
                errors += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(concurrency)])
    wall = time.perf_counter() - t0
    return {"concurrency": concurrency, "requests": len(lat), "errors": errors,
            "rps": len(lat) / wall, "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3}


async def one_stream(host, port, model, max_tokens, key=None, prompt="Tell me a long story."):
    """One streaming chat request over a raw socket; returns (ttft, [inter-token gaps], tokens)."""
    reader, writer = await open_conn(host, port)
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    data = json.dumps(body).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            + (f"Authorization: Bearer {key}\r\n" if key else "") + "Connection: close\r\n\r\n")
    t0 = time.perf_counter()
    writer.write(head.encode() + data)
    await writer.drain()
    ttft, last, gaps, tokens, buf = None, None, [], 0, b""
    while True:
        d = await reader.read(65536)
        if not d:
            break
        buf += d
        while b"\n\n" in buf:
            ev, _, buf = buf.partition(b"\n\n")
            i = ev.find(b"data: ")
            if i < 0:
                continue
            payload = ev[i + 6:]
            if payload.startswith(b"[DONE]"):
                continue
            j = json.loads(payload)
            if j.get("usage"):
                tokens = j["usage"]["completion_tokens"]
            if j.get("choices") and j["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                if ttft is None:
                    ttft = now - t0
                else:
                    gaps.append(now - last)
                last = now
    writer.close()
    return ttft, gaps, tokens


async def stream_bench(host, port, model, n, max_tokens, key=None):
    t0 = time.perf_counter()
    res = await asyncio.gather(*[one_stream(host, port, model, max_tokens, key) for _ in range(n)])
    wall = time.perf_counter() - t0
    ttfts = [r[0] for r in res if r[0] is not None]
    gaps = [g for r in res for g in r[1]]
    toks = sum(r[2] for r in res)
    return {"streams": n, "max_tokens": max_tokens, "ttft_p50_ms": pct(ttfts, 50) * 1e3,
            "ttft_p99_ms": pct(ttfts, 99) * 1e3, "itl_p50_ms": pct(gaps, 50) * 1e3,
            "itl_p99_ms": pct(gaps, 99) * 1e3, "output_tok_s": toks / wall, "wall_s": wall}


def start_server(exe, args):
    log = tempfile.NamedTemporaryFile(prefix="bench-http-", suffix=".log", delete=False)
    cmd = [exe, "--host", "127.0.0.1", "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(6000):
        m = re.search(r"listening on http://[^:]+:(\d+) \(model \"([^\"]+)\"\)",
                      Path(log.name).read_text(errors="replace"))
        if m:
            return proc, int(m.group(1)), m.group(2)
        if proc.poll() is not None:
            raise SystemExit(Path(log.name).read_text()[-2000:])
        time.sleep(0.05)
    raise SystemExit("server did not start")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", help="an already running server")
    ap.add_argument("--model", help="model name for --url")
    ap.add_argument("--api-key")
    ap.add_argument("--server", default=str(Path(os.environ.get("VLM_BUILD_DIR", "build")) / "valley-server"))
    ap.add_argument("--server-args", default="", help="extra arguments for the started server")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--stream-tokens", type=int, default=128)
    a = ap.parse_args()
    proc = None
    if a.url:
        m = re.match(r"https?://([^:/]+):(\d+)", a.url)
        host, port, model = m.group(1), int(m.group(2)), a.model
    else:
        proc, port, model = start_server(a.server, shlex.split(a.server_args))
        host = "127.0.0.1"
    try:
        print(f"# valley-server at {host}:{port}, model {model}, {os.cpu_count()} CPUs")
        for c in [int(x) for x in a.concurrency.split(",")]:
            r = asyncio.run(latency_bench(host, port, model, c, a.seconds, a.api_key))
            print(f"1-token chat  concurrency {c:3d}: {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms"
                  f"  p99 {r['p99_ms']:7.2f} ms  ({r['requests']} ok, {r['errors']} errors)")
        r = asyncio.run(stream_bench(host, port, model, a.streams, a.stream_tokens, a.api_key))
        print(f"streaming {r['streams']} x {r['max_tokens']} tokens: TTFT p50 {r['ttft_p50_ms']:.1f} ms"
              f" p99 {r['ttft_p99_ms']:.1f} ms, ITL p50 {r['itl_p50_ms']:.2f} ms"
              f" p99 {r['itl_p99_ms']:.2f} ms, {r['output_tok_s']:.1f} output tok/s"
              f" ({r['wall_s']:.1f} s)")
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


if __name__ == "__main__":
    main()
