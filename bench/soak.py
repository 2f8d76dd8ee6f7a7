#!/usr/bin/env python3
"""Soak: a bounded, closed-loop load generator against valley-server on loopback. Prints one
line per round (never asserts): throughput, latency percentiles, answers by kind and outcome,
the server's RSS and open file descriptors (from /proc), and what /metrics says is still held
once the round has drained (requests in flight, running, waiting; KV blocks in use; media
bytes), so growth across rounds shows.

Each of N clients (asyncio tasks, one keep-alive connection each, a minimal HTTP/1.1 client on
raw sockets so the client is not the bottleneck) sends, until the round's request count is
reached, a mix of:
  chat      non-streaming chat, a few tokens                      (weight 45)
  stream    streaming chat, read to [DONE]                         (20)
  image     chat with a 48x40 PNG data URL, half of them new images  (10)
  abort     streaming chat closed after its first chunk            (10)
  bad       invalid JSON (400), or a wrong API key (401)           (15)
Every answer is checked: its status and the JSON shape of its body (a chat.completion with a
message, finish reason and usage within max_tokens; chunks of chat.completion.chunk ending in
[DONE] with a finish reason; an OpenAI error object). An answer that fails a check is counted
as "<kind>:bad_<what>", a dropped connection as "<kind>:<exception>".

Models (--model-kind, for the server this script starts):
  small  (default) gqa4's geometry with the small synthesized tokenizer (vocabulary 640) and
         the vision tower: the HTTP, scheduler and preprocessing paths dominate
  gqa4   the gqa4 test model (tests/models.txt) with the Qwen3 tokenizer: vocabulary 151 936,
         where lm_head and the sampler cost most of each token (docs/PERF.md, "soak")
  --model-args "..." replaces the valley-make-model arguments of either.

Usage:
  python3 bench/soak.py                         # 5 rounds x 1000 on the small model
  python3 bench/soak.py --rounds 20 --requests 5000 --clients 16
  python3 bench/soak.py --model-kind gqa4 --rounds 6 --requests 500 --clients 8
  python3 bench/soak.py --url http://127.0.0.1:8000 --pid 1234 --model NAME [--key KEY]
  --malloc-stats: after each round, gdb calls malloc_stats() in the server (it prints to the
  server's stderr); the script prints glibc's "system bytes" (heap the allocator holds from
  the kernel) and "in use bytes" (live allocations) next to RSS. Needs gdb and ptrace rights.
Only 127.0.0.1 / localhost / ::1 URLs are accepted.
"""

import argparse
import asyncio
import base64
import json
import os
import random
import re
import shlex
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
import vlm_fixtures  # noqa: E402  (the committed Qwen3 tokenizer fixture)

ROOT = Path(__file__).resolve().parents[1]
KEY = "soak-key"
MODELS = {
    # the gqa4 test geometry (tests/models.txt), with the Qwen3 tokenizer
    "gqa4": ("--seed 1 --hidden 128 --layers 3 --heads 8 --kv-heads 2 --head-dim 32 --ffn 256 "
             "--vit-depth 2 --vit-dim 64 --vit-heads 4 --merger-hidden 128", True),
    # the same shape with the synthesized small tokenizer (no --tokenizer)
    "small": ("--seed 1 --hidden 128 --layers 3 --heads 8 --kv-heads 2 --head-dim 32 --ffn 256 "
              "--vit-depth 2 --vit-dim 64 --vit-heads 4 --merger-hidden 128", False),
}
MIX = [("chat", 45), ("stream", 20), ("image", 10), ("abort", 10), ("bad", 15)]
CHAT_PATH = "/v1/chat/completions"


def png_rows(w, h, seed):
    rows = bytearray()
    for y in range(h):
        rows.append(0)  # filter type: none
        for x in range(w):
            rows += bytes(((x * 7 + seed) & 255, (y * 5) & 255, (x ^ y) & 255))
    return rows


def png(w, h, rows):
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(rows), 1)) + chunk(b"IEND", b""))


def data_url(w, h, rows):
    return "data:image/png;base64," + base64.b64encode(png(w, h, rows)).decode()


# half the image requests send one of 4 images again (encoder and prefix caches hit), half
# an image never sent before (its first pixel numbers it: decode, resize, the tower all run)
IMAGES = [data_url(48, 40, png_rows(48, 40, s)) for s in range(4)]
FRESH = png_rows(48, 40, 99)
fresh_count = [0]


def image_url(rng):
    if rng.random() < 0.5:
        return rng.choice(IMAGES)
    fresh_count[0] += 1
    FRESH[1:4] = fresh_count[0].to_bytes(3, "little")
    return data_url(48, 40, FRESH)


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_figures(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss / 1024, len(os.listdir(f"/proc/{pid}/fd"))


class Bad(Exception):
    """An answer that fails a check; str() names the check."""


class Conn:
    """One keep-alive HTTP/1.1 connection; reopened after the server closes it."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.r = self.w = None

    async def open(self):
        if self.w is None:
            self.r, self.w = await asyncio.open_connection(self.host, self.port)

    def close(self):
        if self.w is not None:
            self.w.close()
            self.r = self.w = None

    async def send(self, path, data, key, extra=""):
        await self.open()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n" + extra
                + (f"Authorization: Bearer {key}\r\n" if key else "") + "\r\n")
        self.w.write(head.encode() + data)
        await self.w.drain()

    async def head(self):
        """Status line and headers: (status, {lower-case name: value})."""
        line = await self.r.readline()
        if not line:
            raise ConnectionResetError("closed before the status line")
        status = int(line.split()[1])
        hdrs = {}
        while True:
            line = await self.r.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            hdrs[k.strip().lower()] = v.strip()
        return status, hdrs

    async def chunks(self, hdrs):
        """The body's pieces as they arrive (chunked or Content-Length)."""
        if "chunked" in hdrs.get("transfer-encoding", "").lower():
            while True:
                n = int((await self.r.readline()).split(b";")[0].strip(), 16)
                if n == 0:
                    while (await self.r.readline()) not in (b"\r\n", b""):
                        pass
                    return
                data = await self.r.readexactly(n)
                await self.r.readexactly(2)
                yield data
        else:
            n = int(hdrs.get("content-length", "0"))
            if n:
                yield await self.r.readexactly(n)

    async def body(self, hdrs):
        out = b""
        async for piece in self.chunks(hdrs):
            out += piece
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return out


def check_error(status, want, body):
    if status != want:
        raise Bad(f"status_{status}")
    try:
        err = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        raise Bad("error_json") from None
    if not isinstance(err.get("message"), str) or not isinstance(err.get("type"), str):
        raise Bad("error_shape")


def check_completion(status, body, max_tokens):
    if status != 200:
        raise Bad(f"status_{status}")
    try:
        j = json.loads(body)
        ch = j["choices"][0]
        ok = (j["object"] == "chat.completion" and ch["message"]["role"] == "assistant"
              and isinstance(ch["message"]["content"], str)
              and ch["finish_reason"] in ("stop", "length")
              and 0 < j["usage"]["prompt_tokens"]
              and 0 <= j["usage"]["completion_tokens"] <= max_tokens)
    except (ValueError, KeyError, TypeError, IndexError):
        raise Bad("completion_json") from None
    if not ok:
        raise Bad("completion_shape")
    return j["usage"]["prompt_tokens"]


class Stream:
    """Server-sent events of a chat stream, checked as they arrive."""

    def __init__(self):
        self.buf = b""
        self.events = 0
        self.done = False
        self.finish = None

    def feed(self, data):
        self.buf += data
        while b"\n\n" in self.buf:
            ev, _, self.buf = self.buf.partition(b"\n\n")
            if not ev.startswith(b"data: "):
                raise Bad("sse_line")
            payload = ev[6:]
            if self.done:
                raise Bad("after_done")
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                j = json.loads(payload)
                ok = j["object"] == "chat.completion.chunk" and isinstance(j["choices"], list)
                if j["choices"] and j["choices"][0].get("finish_reason"):
                    self.finish = j["choices"][0]["finish_reason"]
            except (ValueError, KeyError, TypeError, IndexError):
                raise Bad("chunk_json") from None
            if not ok:
                raise Bad("chunk_shape")
            self.events += 1


async def one(c: Conn, kind, model, rng, key):
    """One request of `kind`; returns the outcome ("ok", "abort") or raises Bad."""
    if kind == "bad":
        if key and rng.random() < 0.5:
            data = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}],
                               "max_tokens": 2}).encode()
            await c.send(CHAT_PATH, data, "wrong-key")
            status, hdrs = await c.head()
            check_error(status, 401, await c.body(hdrs))
            return "ok401"
        await c.send(CHAT_PATH, b'{"model": "x", "messages": [', key)
        status, hdrs = await c.head()
        check_error(status, 400, await c.body(hdrs))
        return "ok400"
    max_tokens = rng.randint(1, 4)
    body = {"model": model, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": f"say something {rng.randrange(1000)}"}]}
    if kind == "image":
        body["messages"] = [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_url(rng)}},
            {"type": "text", "text": "what is this?"}]}]
    if kind in ("chat", "image"):
        await c.send(CHAT_PATH, json.dumps(body).encode(), key)
        status, hdrs = await c.head()
        prompt = check_completion(status, await c.body(hdrs), max_tokens)
        if kind == "image" and prompt < 16:  # a 48x40 image alone is more tokens than this
            raise Bad("image_not_counted")
        return "ok"
    body["stream"] = True
    if kind == "abort":
        body["max_tokens"] = 200
        body["ignore_eos"] = True
    await c.send(CHAT_PATH, json.dumps(body).encode(), key)
    status, hdrs = await c.head()
    if status != 200:
        raise Bad(f"status_{status}")
    if not hdrs.get("content-type", "").startswith("text/event-stream"):
        raise Bad("content_type")
    s = Stream()
    async for piece in c.chunks(hdrs):
        s.feed(piece)
        if kind == "abort" and s.events:
            c.close()  # mid-stream: the server must notice and free the request
            return "abort"
    if kind == "abort":
        raise Bad("ended_before_abort")
    if not s.done or s.finish not in ("stop", "length") or s.buf.strip():
        raise Bad("stream_end")
    if hdrs.get("connection", "").lower() == "close":
        c.close()
    return "ok"


async def run_round(host, port, model, key, n_req, n_clients, seed):
    left = [n_req]
    res = []  # (kind, outcome, seconds)

    async def client(i):
        rng = random.Random(seed * 1000 + i)
        kinds = [k for k, w in MIX for _ in range(w)]
        c = Conn(host, port)
        while left[0] > 0:
            left[0] -= 1
            kind = rng.choice(kinds)
            t0 = time.perf_counter()
            try:
                out = await asyncio.wait_for(one(c, kind, model, rng, key), 300)
            except Bad as e:
                out = "bad_" + str(e)
                c.close()
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
                out = type(e).__name__
                c.close()
            res.append((kind, out, time.perf_counter() - t0))
        c.close()

    t0 = time.perf_counter()
    await asyncio.gather(*[client(i) for i in range(n_clients)])
    return res, time.perf_counter() - t0


async def get(host, port, path, key):
    r, w = await asyncio.open_connection(host, port)
    w.write((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
             + (f"Authorization: Bearer {key}\r\n" if key else "") + "\r\n").encode())
    data = await r.read()
    w.close()
    return data.partition(b"\r\n\r\n")[2].decode(errors="replace")


HELD = [("valley:http_requests_inflight", "in"), ("vllm:num_requests_running", "run"),
        ("vllm:num_requests_waiting", "wait"), ("valley:kv_blocks_used", "kv"),
        ("valley:media_inflight_bytes", "media")]


def held(metrics_text):
    """What the server still holds after a round: {short name: value} from /metrics."""
    out = {}
    for name, short in HELD:
        m = re.search(r"^" + re.escape(name) + r"(?:\{[^}]*\})? ([0-9.e+-]+)$", metrics_text, re.M)
        out[short] = float(m.group(1)) if m else float("nan")
    return out


def malloc_stats(pid, log_path):
    """gdb calls malloc_stats() in the server; returns glibc's total (system, in use) bytes."""
    before = Path(log_path).stat().st_size
    subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx", "-ex", "call (void)malloc_stats()"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    with open(log_path, errors="replace") as f:
        f.seek(before)
        text = f.read()
    m = re.search(r"Total \(incl\. mmap\):\s*system bytes\s*=\s*(\d+)\s*in use bytes\s*=\s*(\d+)",
                  text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def loopback(url):
    host = urlparse(url).hostname
    return host in ("127.0.0.1", "localhost", "::1")


def start_server(a, tmpdir):
    args, real_tokenizer = MODELS[a.model_kind]
    if a.model_args:
        args = a.model_args
    mdir = Path(tmpdir) / "model"
    build = Path(a.server).parent
    cmd = [str(build / "valley-make-model"), "--out", str(mdir), *shlex.split(args)]
    if real_tokenizer:
        cmd += ["--tokenizer",
                str(Path(a.fixtures or vlm_fixtures.fixtures_dir()) / "qwen3-tokenizer")]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    log_path = Path(tmpdir) / "server.log"
    log = open(log_path, "w+")
    scmd = [a.server, "--model", str(mdir), "--host", "127.0.0.1", "--port", "0",
            "--served-model-name", a.model, "--api-key", KEY, "--kv-cache-memory", "256MiB",
            "--max-model-len", "2048", "--threads", str(a.threads), *shlex.split(a.server_args)]
    # idle OpenMP workers sleep instead of spinning (docs/PERF.md, "engine"): on a shared
    # machine spinning workers take the cores the HTTP threads and the client need
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "passive"))
    proc = subprocess.Popen(scmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        m = re.search(r"listening on http://[^:]+:(\d+)", log_path.read_text(errors="replace"))
        if m:
            shown = [*cmd, ";", f"OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}", *scmd]
            return proc, int(m.group(1)), log_path, " ".join(shlex.quote(x) for x in shown)
        time.sleep(0.1)
    proc.kill()
    sys.exit("soak: the server did not start:\n" + log_path.read_text()[-2000:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=1000, help="requests per round")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--url")
    ap.add_argument("--pid", type=int, help="the server's pid (with --url), for RSS and fds")
    ap.add_argument("--model", default="tiny", help="the served model name")
    ap.add_argument("--model-kind", choices=sorted(MODELS), default="small")
    ap.add_argument("--model-args", help="valley-make-model arguments (replace the kind's)")
    ap.add_argument("--key", help="the API key of a --url server")
    ap.add_argument("--server", default=str(ROOT / "build" / "valley-server"))
    ap.add_argument("--server-args", default="", help="more arguments for the started server")
    ap.add_argument("--threads", type=int, default=2, help="--threads of the started server")
    ap.add_argument("--fixtures",
                    help="folder holding qwen3-tokenizer/ (default: the committed one)")
    ap.add_argument("--malloc-stats", action="store_true",
                    help="glibc malloc_stats() through gdb after each round (started server)")
    a = ap.parse_args()
    if a.rounds > 1000 or a.requests > 1_000_000 or a.clients > 256:
        sys.exit("soak: bounded: at most 1000 rounds, 1e6 requests per round, 256 clients")
    proc = tmp = log_path = None
    if a.url:
        if not loopback(a.url):
            sys.exit("soak: loopback URLs only")
        if not a.pid:
            sys.exit("soak: --pid is needed with --url (RSS and fds are read from /proc)")
        if a.malloc_stats:
            sys.exit("soak: --malloc-stats reads the started server's stderr; not with --url")
        u = urlparse(a.url)
        host, port, pid, key = u.hostname, u.port or 80, a.pid, a.key
    else:
        tmp = tempfile.TemporaryDirectory(prefix="soak-")
        proc, port, log_path, cmdline = start_server(a, tmp.name)
        host, pid, key = "127.0.0.1", proc.pid, KEY
        print(f"soak: {cmdline}")
    try:
        print(f"soak: {a.rounds} rounds x {a.requests} requests, {a.clients} clients, "
              f"mix {', '.join(f'{k} {w}%' for k, w in MIX)}; server pid {pid} on port {port}; "
              f"load average {os.getloadavg()[0]:.1f}")
        rss0, fd0 = proc_figures(pid)
        ms = "  sys_MiB  use_MiB" if a.malloc_stats else ""
        print(f"round  req/s  p50_ms  p90_ms  p99_ms  cpu_ms/req srv cli  rss_MiB  fds{ms}  "
              f"held after the round (in/run/wait/kv/media)  outcomes   "
              f"(start: {rss0:.1f} MiB, {fd0} fds)")
        total = {}
        for rnd in range(1, a.rounds + 1):
            c0, s0 = time.process_time(), cpu_seconds(pid)
            res, took = asyncio.run(run_round(host, port, a.model, key, a.requests, a.clients, rnd))
            cli, srv = time.process_time() - c0, cpu_seconds(pid) - s0
            lat = [dt * 1000 for kind, out, dt in res if out == "ok" and kind in ("chat", "image")]
            counts = {}
            for kind, out, _ in res:
                k = f"{kind}:{out}"
                counts[k] = counts.get(k, 0) + 1
                total[k] = total.get(k, 0) + 1
            time.sleep(0.5)  # let aborted requests and closed connections settle
            h = held(asyncio.run(get(host, port, "/metrics", key)))
            rss, fds = proc_figures(pid)
            extra = ""
            if a.malloc_stats:
                sysb, used = malloc_stats(pid, log_path)
                extra = f" {sysb / 2**20:8.3f} {used / 2**20:8.3f}"
            hs = "/".join(f"{h[s]:g}" for _, s in HELD)
            outs = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            print(f"{rnd:5d} {len(res) / took:6.1f} {pct(lat, 50):7.1f} {pct(lat, 90):7.1f} "
                  f"{pct(lat, 99):7.1f}      {srv * 1000 / len(res):6.2f} "
                  f"{cli * 1000 / len(res):4.2f} {rss:8.1f} {fds:4d}{extra}  {hs:<12s}  {outs}",
                  flush=True)
        failed = {k: v for k, v in total.items() if not k.split(":")[1].startswith(("ok", "abort"))}
        print(f"soak: {sum(total.values())} requests, {sum(failed.values())} failed checks"
              + (f": {failed}" if failed else ""))
    finally:
        if proc:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            print(f"soak: server exit status {proc.returncode}")
        if tmp:
            tmp.cleanup()


if __name__ == "__main__":
    main()
