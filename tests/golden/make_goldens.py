#!/usr/bin/env python3
"""Golden outputs of the Qwen3 decoder (text only) for tests/model/test_forward.c.

Developer script (needs torch, transformers==4.51.2, safetensors, tokenizers; CI never runs
it, CI reads what it writes). For each configuration (gqa4: GQA ratio 4, mha: ratio 1) it
regenerates the test checkpoint with valley-make-model (arguments from tests/models.txt, the
Qwen3 tokenizer fixture of tests/fixtures), loads the decoder weights into transformers'
Qwen3ForCausalLM in float32 (eager attention) and records, for every prompt:

  * the prompt ids (tokenized here with the fixture tokenizer.json);
  * at EVERY prompt position: the final hidden state after model.norm (hidden floats, in
    <name>.bin), argmax, max|logit|, logsumexp and the top-8 (id, logit) of the HF logits;
  * the greedy continuation of 32 tokens (HF generate, do_sample=False) with, per step, the
    gap between the two best logits (how safe the argmax is).

Why hidden states and not logits: a logits row is vocab (151936) floats, 600 KB, so full
rows for every position would be hundreds of MB. logits = lm_head · h is one exactly defined
product of the checkpoint's own weights, so the test rebuilds full reference rows from h in
double precision and compares all vocab entries at all positions; the stored top-8 and lse
(taken from HF's own logits) check that rebuild.

  python3 tests/golden/make_goldens.py --make-model build-engine/valley-make-model
"""
import argparse
import json
import os
import shlex
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file as st_load_numpy
from tokenizers import Tokenizer
from transformers import Qwen3Config, Qwen3ForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import vlm_fixtures  # noqa: E402  (the committed Qwen3 tokenizer fixture)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CONFIGS = ["gqa4", "mha"]
N_GEN = 32
TOPK = 8

LONG_PARA = (
    "The river bends twice before it reaches the old mill, and every spring the water rises "
    "high enough to turn the wheel again, although nobody has ground flour there for forty "
    "years. Children from the village count the ducks, argue about the herons, and write "
    "their names on the wet stones with sticks. "
)
PROMPTS = [
    ("single", None),  # one token, filled below
    ("hello", "Hello, world! How are you today?"),
    ("chat", "<|im_start|>user\nWrite a haiku about paged attention.<|im_end|>\n<|im_start|>assistant\n"),
    ("code", "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"),
    ("numbers", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20"),
    ("long", LONG_PARA * 14),
]


def g7(v):
    """a float with 8 significant digits (JSON size; well under the 1e-4 tolerance)"""
    return float("%.8g" % float(v))


def model_args(name):
    with open(os.path.join(ROOT, "tests", "models.txt")) as f:
        for line in f:
            if line.startswith(name + ":"):
                return shlex.split(line.split(":", 1)[1])
    raise SystemExit(f"{name} not in tests/models.txt")


def bf16_to_f32(a):
    """safetensors.numpy has no bfloat16: raw uint16 -> float32."""
    return (a.astype(np.uint32) << 16).view(np.float32)


def load_state(model_dir):
    sd = {}
    files = [f for f in os.listdir(model_dir) if f.endswith(".safetensors")]
    for fn in files:
        path = os.path.join(model_dir, fn)
        with open(path, "rb") as f:
            hlen = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(hlen))
            base = 8 + hlen
            for name, info in header.items():
                if name == "__metadata__" or name.startswith("model.qwen2vl_vision_tower"):
                    continue
                s, e = info["data_offsets"]
                f.seek(base + s)
                raw = f.read(e - s)
                shape = info["shape"]
                if info["dtype"] == "BF16":
                    arr = bf16_to_f32(np.frombuffer(raw, dtype=np.uint16)).reshape(shape)
                elif info["dtype"] == "F32":
                    arr = np.frombuffer(raw, dtype=np.float32).reshape(shape)
                elif info["dtype"] == "F16":
                    arr = np.frombuffer(raw, dtype=np.float16).astype(np.float32).reshape(shape)
                else:
                    raise SystemExit(f"unexpected dtype {info['dtype']} for {name}")
                sd[name] = torch.from_numpy(arr.copy())
    return sd


def build_hf(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    cfg = Qwen3Config(
        vocab_size=c["vocab_size"],
        hidden_size=c["hidden_size"],
        intermediate_size=c["intermediate_size"],
        num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=c["num_attention_heads"],
        num_key_value_heads=c["num_key_value_heads"],
        head_dim=c.get("head_dim", c["hidden_size"] // c["num_attention_heads"]),
        rms_norm_eps=c.get("rms_norm_eps", 1e-6),
        rope_theta=c.get("rope_theta", 1e6),
        max_position_embeddings=c.get("max_position_embeddings", 40960),
        tie_word_embeddings=c.get("tie_word_embeddings", False),
        attention_bias=False,
        use_sliding_window=False,
        sliding_window=None,
        torch_dtype=torch.float32,
    )
    cfg._attn_implementation = "eager"
    model = Qwen3ForCausalLM(cfg).to(torch.float32).eval()
    sd = load_state(model_dir)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not (cfg.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    if cfg.tie_word_embeddings:
        model.tie_weights()
    return model, c


def run_config(name, make_model, tok_dir, out_dir):
    with tempfile.TemporaryDirectory() as tmp:
        mdir = os.path.join(tmp, name)
        cmd = [make_model, "--out", mdir, "--tokenizer", tok_dir] + model_args(name)
        subprocess.run(cmd, check=True)
        model, c = build_hf(mdir)

    tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    prompts = []
    hidden_blobs = []
    row = 0
    for pname, text in PROMPTS:
        ids = [9707] if text is None else tok.encode(text, add_special_tokens=False).ids
        x = torch.tensor([ids], dtype=torch.long)
        with torch.no_grad():
            out = model.model(input_ids=x)
            h = out.last_hidden_state[0]  # after model.norm
            logits = model.lm_head(h).double()
            # explicit mask: generate() would otherwise mask every id equal to pad_token_id
            # (id 0 is "!", which real prompts contain)
            gen = model.generate(
                x, attention_mask=torch.ones_like(x), max_new_tokens=N_GEN, do_sample=False, num_beams=1, eos_token_id=None,
                pad_token_id=0, output_scores=True, return_dict_in_generate=True,
                min_new_tokens=N_GEN)
        new = gen.sequences[0, len(ids):].tolist()
        gaps = []
        for s in gen.scores:
            v, _ = torch.topk(s[0].double(), 2)
            gaps.append(float(v[0] - v[1]))
        top_v, top_i = torch.topk(logits, TOPK, dim=-1)
        lse = torch.logsumexp(logits, dim=-1)
        mx = logits.abs().max(dim=-1).values
        prompts.append({
            "name": pname,
            "ids": ids,
            "hidden_row0": row,
            "argmax": logits.argmax(dim=-1).tolist(),
            "max_abs": [g7(v) for v in mx],
            "lse": [g7(v) for v in lse],
            "top_ids": top_i.tolist(),
            "top_logits": [[g7(v) for v in r] for r in top_v],
            "greedy": new,
            "greedy_gap": [g7(v) for v in gaps],
        })
        hidden_blobs.append(h.float().numpy().astype("<f4"))
        row += len(ids)
        print(f"{name}/{pname}: {len(ids)} tokens, greedy {new[:8]}..., min gap {min(gaps):.4g}",
              file=sys.stderr)

    hidden = np.concatenate(hidden_blobs, axis=0)
    with open(os.path.join(out_dir, f"{name}.bin"), "wb") as f:
        f.write(hidden.tobytes())
    meta = {
        "config": name,
        "make_model_args": model_args(name),
        "hidden_size": c["hidden_size"],
        "vocab_size": c["vocab_size"],
        "n_gen": N_GEN,
        "topk": TOPK,
        "hidden_file": f"{name}.bin",
        "hidden_rows": int(hidden.shape[0]),
        "reference": "transformers %s Qwen3ForCausalLM float32 eager" % __import__("transformers").__version__,
        "prompts": prompts,
    }
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(meta, f, separators=(",", ":"))
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-model", required=True, help="path to valley-make-model")
    ap.add_argument("--tokenizer", help="tokenizer folder (default: the committed fixture)")
    ap.add_argument("--out", default=os.path.join(HERE, "text"))
    ap.add_argument("--configs", nargs="*", default=CONFIGS)
    a = ap.parse_args()
    a.tokenizer = a.tokenizer or str(vlm_fixtures.tokenizer_dir())
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    for name in a.configs:
        run_config(name, os.path.abspath(a.make_model), os.path.abspath(a.tokenizer), a.out)


if __name__ == "__main__":
    main()
