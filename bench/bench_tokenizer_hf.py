#!/usr/bin/env python3
"""HF `tokenizers` throughput on the golden corpus, single thread, one string per call: the
baseline for bench/bench_tokenizer.c.

    TOKENIZERS_PARALLELISM=false python3 bench/bench_tokenizer_hf.py [TOKENIZER_JSON [CORPUS [SECONDS]]]
"""
import json
import os
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
from tokenizers import Tokenizer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
import vlm_fixtures  # noqa: E402

tok_path = sys.argv[1] if len(sys.argv) > 1 else str(vlm_fixtures.tokenizer_dir() / "tokenizer.json")
corpus = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "..", "tests", "golden", "tokenizer", "corpus.jsonl")
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0

t0 = time.perf_counter()
tok = Tokenizer.from_file(tok_path)
load_ms = (time.perf_counter() - t0) * 1e3
rows = [json.loads(line) for line in open(corpus, encoding="utf-8")]
texts = [r["text"] for r in rows if "hex" not in r]
nbytes = sum(len(s.encode()) for s in texts)

passes, ntok = 0, 0
c0 = time.thread_time()
t0 = time.perf_counter()
while True:
    for s in texts:
        ntok += len(tok.encode(s, add_special_tokens=False).ids)
    passes += 1
    if time.perf_counter() - t0 >= seconds:
        break
enc, enc_cpu = time.perf_counter() - t0, time.thread_time() - c0

ids = [tok.encode(s, add_special_tokens=False).ids for s in texts]
dpasses = 0
c0 = time.thread_time()
t0 = time.perf_counter()
while True:
    for x in ids:
        tok.decode(x, skip_special_tokens=False)
    dpasses += 1
    if time.perf_counter() - t0 >= seconds:
        break
dec, dec_cpu = time.perf_counter() - t0, time.thread_time() - c0

print(f"HF tokenizers load: {load_ms:.0f} ms")
print(f"corpus: {len(texts)} strings, {nbytes} bytes, {sum(map(len, ids))} tokens")
print(f"encode (1 thread, 1 string/call): {nbytes * passes / enc_cpu / 1e6:.2f} MB/s per CPU second "
      f"({nbytes * passes / enc / 1e6:.2f} wall), {ntok / enc_cpu:.0f} tokens/s, {passes} passes")
print(f"decode (1 thread, 1 string/call): {nbytes * dpasses / dec_cpu / 1e6:.2f} MB/s of text per CPU second "
      f"({nbytes * dpasses / dec / 1e6:.2f} wall)")
