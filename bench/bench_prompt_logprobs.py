#!/usr/bin/env python3
"""What scoring a prompt costs (prints figures, never asserts): the latency of one
completions request on an N-token prompt, plain (max_tokens 1) and with the prompt tokens'
logprobs (echo + logprobs + max_tokens 0, as lm-eval-harness's loglikelihood asks, and vLLM's
prompt_logprobs). The extra cost is the head (final norm + lm_head) over every prompt
position instead of the last one, plus an O(vocab) log-softmax per position on the host.

Usage:
  python3 bench/bench_prompt_logprobs.py --model DIR [--tokens 1000] [--server build/valley-server]
  python3 bench/bench_prompt_logprobs.py --url http://127.0.0.1:8000 --name NAME
"""

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import httpx


def best_of(url, body, k, headers):
    best = float("inf")
    for _ in range(k):
        t0 = time.perf_counter()
        httpx.post(url, json=body, timeout=600, headers=headers).raise_for_status()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", help="an already running server")
    ap.add_argument("--name", default="tiny", help="served model name")
    ap.add_argument("--model", help="model folder for the started server")
    ap.add_argument("--server", default=str(Path(os.environ.get("VLM_BUILD_DIR", "build")) / "valley-server"))
    ap.add_argument("--api-key")
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    proc = None
    if not a.url:
        log = tempfile.NamedTemporaryFile(prefix="bench-plp-", suffix=".log", delete=False)
        proc = subprocess.Popen([a.server, "--model", a.model, "--host", "127.0.0.1", "--port", "0",
                                 "--served-model-name", a.name, "--max-model-len",
                                 str(max(2048, a.tokens + 16))],
                                stdout=subprocess.DEVNULL, stderr=log)
        for _ in range(1200):
            m = re.search(r"listening on (http://[^\s]+)", Path(log.name).read_text(errors="replace"))
            if m:
                a.url = m.group(1).rstrip("/")
                break
            time.sleep(0.1)
    try:
        url = a.url + "/v1/completions"
        headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}
        ids = [(i * 7919) % 5000 + 100 for i in range(a.tokens)]
        base = {"model": a.name, "prompt": ids, "temperature": 0}
        rows = [("plain (max_tokens 1)", {**base, "max_tokens": 1}),
                ("echo + logprobs 1, max_tokens 0", {**base, "max_tokens": 0, "echo": True,
                                                     "logprobs": 1}),
                ("echo + logprobs 5, max_tokens 0", {**base, "max_tokens": 0, "echo": True,
                                                     "logprobs": 5}),
                ("prompt_logprobs 0, max_tokens 1", {**base, "max_tokens": 1,
                                                     "prompt_logprobs": 0})]
        print(f"{a.tokens}-token prompt, best of {a.repeat}:")
        for name, body in rows:
            t = best_of(url, body, a.repeat, headers)
            print(f"  {name:34s} {t * 1e3:9.1f} ms  ({t * 1e6 / a.tokens:7.1f} us/token)")
    finally:
        if proc:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
