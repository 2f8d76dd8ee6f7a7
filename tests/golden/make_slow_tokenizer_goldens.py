#!/usr/bin/env python3
"""Makes the slow-tokenizer goldens: the ids transformers' AutoTokenizer gives when a folder
has only the slow files (vocab.json, merges.txt, added_tokens.json, special_tokens_map.json,
tokenizer_config.json) and no tokenizer.json, for tests/unit/test_tokenizer_slow.c.

    /work/refvenv/bin/python tests/golden/make_slow_tokenizer_goldens.py [SLOW_DIR]

Without SLOW_DIR, the folder is written by build/valley-make-model (--build-dir to change)
from the Qwen3 tokenizer fixture ($VLM_FIXTURES/qwen3-tokenizer, or --fixtures DIR) with
--slow-tokenizer --valley-tokens: Qwen3's 151669 ids plus the 10 Valley added tokens.

Checks, and refuses to write anything unless they hold:
  * the folder has no tokenizer.json, so AutoTokenizer converts the slow files;
  * on every text of tests/golden/tokenizer/corpus.jsonl, AutoTokenizer's ids equal the
    committed ids (made from tokenizer.json with the `tokenizers` library), so the C test
    compares the slow-file loader against corpus.jsonl directly.
Writes tests/golden/tokenizer/slow_added.jsonl: first a header line
    {"corpus_lines": N, "corpus_equal": true, "n_ids": len(tokenizer),
     "added": {content: id}, "special": [ids of the special added tokens]}
then one line per string holding added tokens (each Qwen3 and Valley added token alone,
adjacent, inside words, with spaces and newlines around, cut short, followed by combining
marks):
    {"text": s, "ids": [...], "decoded": decode(ids),
     "decoded_skip": decode(ids, skip_special_tokens=True)}
Needs a Python with transformers 4.51.2 (developer only; CI reads the committed file).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "tokenizer", "corpus.jsonl")
OUT = os.path.join(HERE, "tokenizer", "slow_added.jsonl")

VALLEY = ["<im_start>", "<im_end>", "<vi_start>", "<vi_end>", "<cor>", "</cor>", "<im_patch>",
          "<vi_frame>", "<box_start>", "<box_end>"]


def make_folder(args, tmp):
    fixtures = args.fixtures or os.environ.get("VLM_FIXTURES")
    if not fixtures:
        sys.exit("give SLOW_DIR, --fixtures DIR or VLM_FIXTURES (the Qwen3 tokenizer fixture)")
    out = os.path.join(tmp, "slow")
    subprocess.run([os.path.join(args.build_dir, "valley-make-model"), "--out", out,
                    "--tokenizer", os.path.join(fixtures, "qwen3-tokenizer"), "--slow-tokenizer",
                    "--valley-tokens", "--no-vision", "--hidden", "32", "--layers", "1",
                    "--heads", "2", "--kv-heads", "1", "--head-dim", "16", "--ffn", "32"],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def added_strings(added):
    """Strings holding every added token in the ways a prompt can hold them."""
    out = []
    for t in added:
        out += [t, "x" + t + "y", " " + t + " ", "\n" + t + "\n", t + t, "word" + t + "word",
                "  " + t + "\n\n", t[:-1], t[1:], t + "\u0301", "\u00e9" + t, t + " " + t,
                "<" + t + ">", t.upper()]
    out.append("".join(added))
    out.append(" ".join(added))
    out.append("\n".join(reversed(added)))
    out += [
        "<im_start><image><im_end>",
        "<im_start><|vision_start|><|image_pad|><|vision_end|><im_end>",
        "<|im_start|>user\n<im_start><image><im_end>\nWhat is this?<|im_end|>\n"
        "<|im_start|>assistant\n",
        "<vi_start><vi_frame><vi_frame><vi_end>", "<cor><box_start>(1,2),(3,4)<box_end></cor>",
        "<im_patch>" * 8, "<im_start<im_end>>", "<im_start><im_start>>", "<<im_start>", "<im_end",
        "im_start>", "<im start>", "<IM_START>", "< im_start>", "<im_start >",
        "text<im_end>\u0338 more", "a<box_start>b<box_end>c", "<think>\n<im_start>\n</think>\n",
    ]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("slow_dir", nargs="?")
    ap.add_argument("--fixtures")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = args.slow_dir or make_folder(args, tmp)
        if os.path.exists(os.path.join(d, "tokenizer.json")):
            sys.exit(f"{d} has a tokenizer.json: not a slow-tokenizer folder")
        tok = AutoTokenizer.from_pretrained(d)

        rows = [json.loads(line) for line in open(CORPUS, encoding="utf-8")]
        for r in rows:
            text = bytes.fromhex(r["hex"]).decode() if "hex" in r else r["text"]
            got = tok(text, add_special_tokens=False)["input_ids"]
            if got != r["ids"]:
                sys.exit(f"AutoTokenizer differs from corpus.jsonl on {text[:60]!r}: "
                         f"{got[:12]} vs {r['ids'][:12]}")

        decoder = tok.added_tokens_decoder
        added = [decoder[i].content for i in sorted(decoder)]
        for v in VALLEY:
            if v not in added:
                sys.exit(f"{d}: no added token {v} (write the folder with --valley-tokens)")
        header = {"corpus_lines": len(rows), "corpus_equal": True, "n_ids": len(tok),
                  "added": {decoder[i].content: i for i in sorted(decoder)},
                  "special": [i for i in sorted(decoder) if decoder[i].special]}
        lines = [json.dumps(header, ensure_ascii=False)]
        for s in added_strings(added):
            ids = tok(s, add_special_tokens=False)["input_ids"]
            lines.append(json.dumps({"text": s, "ids": ids, "decoded": tok.decode(ids),
                                     "decoded_skip": tok.decode(ids, skip_special_tokens=True)},
                                    ensure_ascii=False))
    with open(OUT, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{OUT}: {len(lines) - 1} strings; corpus.jsonl ({len(rows)} texts) equal")


if __name__ == "__main__":
    main()
