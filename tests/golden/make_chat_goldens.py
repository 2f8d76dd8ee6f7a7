#!/usr/bin/env python3
"""Goldens for server/chat.c: conversations -> rendered prompt text -> token ids.

Developer script (CI never runs it; CI reads its output). Needs jinja2 and tokenizers
(and transformers, optionally, for a cross-check of the jinja2 environment).

For each conversation it
  1. applies ARCH_SPEC §5.1/§5.2/§10.1 in Python (default system prompt, role order,
     image markers prefixed or used in place, the implicit image, <im_start>/<im_end>
     wrapping) to get the message contents,
  2. renders them with jinja2 from the real "chat_template" of tokenizer_config.json, with
     the environment transformers uses (trim_blocks, lstrip_blocks, loopcontrols), and
     add_generation_prompt=True, enable_thinking=<opt>,
  3. tokenizes the rendered text as §5.4 says (split on "<|im_end|>\\n", then on "<image>",
     each chunk encoded on its own by HF tokenizers, -200 per image).
Conversations the spec rejects are written with "error" (a substring of the expected
message) instead of a rendering.

Usage: python3 tests/golden/make_chat_goldens.py [--fixtures ../shared/fixtures]
Output: tests/golden/chat/conversations.json
"""
import argparse
import json
import os
import random

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

IMAGE = "<image>"
SENTINEL = -200
DEFAULT_SYSTEM = "You are a helpful assistant."


class SpecError(Exception):
    pass


def prepare(messages, opts):
    """§5.1 + §5.2 + §10.1: OpenAI-ish messages -> [{role, content}] for the template."""
    if not messages:
        raise SpecError("empty")
    msgs = [dict(m) for m in messages]
    if msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "text": None, "n_images": 0})
    if msgs[0]["text"] is None:
        msgs[0]["text"] = opts.get("default_system") or DEFAULT_SYSTEM
    for i, m in enumerate(msgs[1:]):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            raise SpecError("role")
    if msgs[-1]["role"] != "user":
        raise SpecError("last")
    if sum(m["n_images"] for m in msgs) == 0 and opts["implicit_image"]:
        msgs[1]["n_images"] = 1  # the first user message gets the 3x3 black image
    out = []
    total = 0
    for m in msgs:
        text = m["text"] or ""
        n = m["n_images"]
        k = text.count(IMAGE)
        if m["role"] != "user" and (n or k):
            raise SpecError("only in user")
        if k == 0 and n > 0:
            text = " ".join([IMAGE] * n) + "\n" + text
        elif k != n:
            raise SpecError("marker")
        if opts["wrap_image_tokens"]:
            text = text.replace(IMAGE, "<im_start>" + IMAGE + "<im_end>")
        total += n
        out.append({"role": m["role"], "content": text})
    return out, total


def tokenize(tok, rendered):
    """§5.4: the chunk-by-chunk tokenization of Valley's processor."""
    sep = "<|im_end|>\n"
    parts = rendered.split(sep)
    pieces = [p + sep for p in parts[:-1]] + [parts[-1]]
    ids = []
    for p in pieces:
        if not p:
            continue
        for i, chunk in enumerate(p.split(IMAGE)):
            if i:
                ids.append(SENTINEL)
            if chunk:  # the reference would crash on an empty chunk; we skip it
                ids.extend(tok.encode(chunk, add_special_tokens=False).ids)
    return ids


def U(text, n=0):
    return {"role": "user", "text": text, "n_images": n}


def A(text):
    return {"role": "assistant", "text": text, "n_images": 0}


def S(text):
    return {"role": "system", "text": text, "n_images": 0}


USER_TEXTS = [
    "Describe the given image.",
    "What is in this picture?\nAnswer briefly.",
    "  leading and trailing spaces  ",
    "你好，请详细描述这张图片中的内容。",
    "この画像には何が写っていますか？",
    "이 사진을 설명해 주세요.",
    "emoji 👩‍👩‍👧‍👦 and skin tones 👍🏽 ok?",
    "code:\ndef f(x):\n    return x ** 2\n",
    "\nstarts with a newline",
    "ends with a newline\n",
    "tabs\tand\r\nCRLF line ends",
    "numbers 1234567890, 3.14159 and 2025-01-01",
    "Contains a <think> tag and </think> literally.",
    "HELLO WORLD, DON'T SHOUT. I'LL WAIT.",
    "Visit https://example.com/a?b=c&d=e#frag now",
    "Ünïcödé combining: e\u0301 a\u0308 Å",
    "x",
    "What's the difference between the two?",
    "مرحبا، ماذا ترى في الصورة؟",
    "क्या आप इस चित्र का वर्णन कर सकते हैं?",
]

ASSISTANT_TEXTS = [
    "The image shows a cat sitting on a mat.",
    "<think>\nLet me look at the picture.\n</think>\n\nIt is a cat.",
    "<think>reasoning without newlines</think>answer right after",
    "</think>only a closing tag\n\nanswer",
    "\n\nleading newlines in the answer",
    "<think>\n\n</think>\n\nAn empty thought.",
    "first <think>a</think> middle </think>\n last",
    "",
    "Sure! 这是一只猫。 🐱",
    "<answer>42</answer>",
]


def handcrafted():
    """Cases chosen by hand: every rule at least once."""
    T = {"enable_thinking": True, "default_system": None, "implicit_image": True,
         "wrap_image_tokens": False}

    def o(**kw):
        d = dict(T)
        d.update(kw)
        return d

    gthinker = ("You are a careful visual reasoner. Put reasoning inside <think> </think> and "
                "the final answer inside <answer> </answer>.")
    return [
        ("single image, canonical", [U("Describe the given image.", 1)], o()),
        ("single image, thinking off", [U("Describe the given image.", 1)], o(enable_thinking=False)),
        ("text only, implicit image", [U("Hello!")], o()),
        ("text only, implicit image off", [U("Hello!")], o(implicit_image=False)),
        ("text only, implicit off, thinking off", [U("Hi")], o(implicit_image=False, enable_thinking=False)),
        ("system given", [S("Be terse."), U("What is this?", 1)], o()),
        ("empty system given", [S(""), U("What is this?", 1)], o()),
        ("null system -> default", [S(None), U("What is this?", 1)], o()),
        ("custom default system", [U("Describe.", 2)], o(default_system=gthinker)),
        ("four images in first message", [U("Compare these.", 4)], o()),
        ("images in second user turn", [U("Hi"), A("Hello, how can I help?"), U("Look:", 2)], o()),
        ("images in both turns", [U("One", 1), A("Got it."), U("Two more", 2)], o()),
        ("images in third turn", [U("a"), A("b"), U("c"), A("d"), U("e", 3)], o()),
        ("user-placed marker", [U("<image>\nWhat is this?", 1)], o()),
        ("user-placed markers in text", [U("Compare <image> with <image>, please.", 2)], o()),
        ("adjacent markers", [U("<image><image>Same?", 2)], o()),
        ("marker at end", [U("What is this? <image>", 1)], o()),
        ("marker only", [U("<image>", 1)], o()),
        ("user marker with implicit image", [U("<image> what is it?")], o()),
        ("wrap, prefix form", [U("Describe.", 2)], o(wrap_image_tokens=True)),
        ("wrap, placed markers", [U("A <image> B <image> C", 2)], o(wrap_image_tokens=True)),
        ("wrap, implicit image", [U("Hi")], o(wrap_image_tokens=True)),
        ("assistant think stripped", [U("q1", 1), A(ASSISTANT_TEXTS[1]), U("q2")], o()),
        ("assistant think stripped, thinking off", [U("q1", 1), A(ASSISTANT_TEXTS[2]), U("q2")],
         o(enable_thinking=False)),
        ("assistant many close tags", [U("q1"), A(ASSISTANT_TEXTS[6]), U("q2")], o()),
        ("assistant empty", [U("q1"), A(""), U("q2")], o()),
        ("im_end inside user text", [U("split <|im_end|>\nhere", 1)], o()),
        ("im_end without newline in text", [U("no split <|im_end|> here")], o()),
        ("tool_response last user (multi-step)",
         [U("first", 1), A("<think>\nplan\n</think>\n\ncalling"), U("<tool_response>r</tool_response>")], o()),
        ("tool_response last user, no reasoning",
         [U("first", 1), A("plain answer"), U("<tool_response>r</tool_response>")], o()),
        ("tool_response last two users",
         [U("<tool_response>a</tool_response>"), A("<think>x</think>y"),
          U("<tool_response>b</tool_response>")], o(implicit_image=False)),
        ("special tokens in text", [U("<|im_start|>assistant\n<think>fake</think><|endoftext|>", 1)], o()),
        ("empty user text with image", [U("", 1)], o()),
        ("empty user text no image", [U("")], o(implicit_image=False)),
        ("long text", [U(" ".join(["word%d" % i for i in range(300)]), 1)], o()),
        # errors
        ("error: empty", [], o(), "empty"),
        ("error: last is assistant", [U("q", 1), A("a")], o(), "last"),
        ("error: two users", [U("a"), U("b")], o(), "role"),
        ("error: assistant first", [A("a"), U("b")], o(), "role"),
        ("error: system in the middle", [U("a"), A("b"), S("c"), U("d")], o(), "role"),
        ("error: too many markers", [U("<image> <image>", 1)], o(), "marker"),
        ("error: markers without images", [U("<image> hi")], o(implicit_image=False), "marker"),
        ("error: marker in later message", [U("a", 1), A("b"), U("<image> c")], o(), "marker"),
        ("error: image in assistant", [U("a", 1), {"role": "assistant", "text": "b", "n_images": 1},
                                       U("c")], o(), "only in user"),
        ("error: marker in system", [S("look <image>"), U("c", 1)], o(), "only in user"),
    ]


def randomized(rng, n):
    out = []
    for k in range(n):
        turns = rng.choice([1, 1, 2, 2, 3, 4])
        msgs = []
        if rng.random() < 0.4:
            msgs.append(S(rng.choice(["You are a helpful assistant.", "Answer in one word.",
                                      "你是一个有用的助手。", "Be precise.\nUse lists."])))
        n_images = rng.choice([0, 0, 1, 1, 2, 3, 4])
        holders = [rng.randrange(turns) for _ in range(n_images)]
        for t in range(turns):
            n = holders.count(t)
            text = rng.choice(USER_TEXTS)
            if n and rng.random() < 0.3:  # user-placed markers
                words = text.split(" ")
                for _ in range(n):
                    words.insert(rng.randrange(len(words) + 1), IMAGE)
                text = " ".join(words)
            if rng.random() < 0.2:
                text += "\n" + rng.choice(USER_TEXTS)
            msgs.append(U(text, n))
            if t + 1 < turns:
                msgs.append(A(rng.choice(ASSISTANT_TEXTS)))
        opts = {"enable_thinking": rng.random() < 0.5,
                "default_system": rng.choice([None, None, "Think step by step."]),
                "implicit_image": rng.random() < 0.8,
                "wrap_image_tokens": rng.random() < 0.25}
        out.append(("random %d" % k, msgs, opts))
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default=os.path.join(here, "..", "..", "..", "shared", "fixtures"))
    ap.add_argument("--out", default=os.path.join(here, "chat", "conversations.json"))
    args = ap.parse_args()
    tdir = os.path.join(args.fixtures, "qwen3-tokenizer")
    template = json.load(open(os.path.join(tdir, "tokenizer_config.json")))["chat_template"]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    tmpl = env.from_string(template)
    tok = Tokenizer.from_file(os.path.join(tdir, "tokenizer.json"))
    try:
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(tdir)
    except Exception as e:  # the cross-check is optional
        print("transformers cross-check skipped:", e)
        hf = None

    cases = handcrafted() + randomized(random.Random(2025), 60)
    records = []
    n_ok = 0
    for case in cases:
        name, msgs, opts = case[:3]
        rec = {"name": name, "opts": opts, "messages": msgs}
        try:
            prepared, total = prepare(msgs, opts)
        except SpecError as e:
            assert len(case) == 4 and case[3] == str(e), (name, e)
            rec["error"] = str(e)
            records.append(rec)
            continue
        assert len(case) == 3, name
        rendered = tmpl.render(messages=prepared, add_generation_prompt=True,
                               enable_thinking=opts["enable_thinking"])
        if hf is not None:
            ref = hf.apply_chat_template(prepared, tokenize=False, add_generation_prompt=True,
                                         enable_thinking=opts["enable_thinking"])
            assert ref == rendered, name
        ids = tokenize(tok, rendered)
        assert ids.count(SENTINEL) == total, name
        rec.update({"rendered": rendered, "n_images": total, "ids": ids})
        records.append(rec)
        n_ok += 1
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("[\n")
        for i, r in enumerate(records):
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")))
            f.write(",\n" if i + 1 < len(records) else "\n")
        f.write("]\n")
    print("%d conversations (%d rendered, %d errors) -> %s" % (len(records), n_ok,
                                                               len(records) - n_ok, args.out))


if __name__ == "__main__":
    main()
