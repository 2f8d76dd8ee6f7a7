#!/usr/bin/env python3
"""Goldens for Valley2's prompt (server/chat.c with chat_opts.qwen25): conversations ->
rendered text -> token ids, from the chat template of a Valley2 test checkpoint.

Developer script (the reference venv: jinja2, tokenizers, transformers; CI never runs it).
It regenerates the "valley2" checkpoint of tests/models.txt with valley-make-model, takes the
chat_template of its tokenizer_config.json (the Qwen2.5 ChatML rendering) and, for the
conversations of make_chat_goldens.py (hand-made, tool use, randomized):

  1. prepares the messages as docs/MODEL.md says (the default system prompt "You are a
     helpful assistant." that Valley's processor passes, markers, wrapping) -- no implicit
     image: Valley2's towers do not run yet, so the server sends text-only prompts as they
     are;
  2. renders them with jinja2 in transformers' environment, checked against
     AutoTokenizer(folder).apply_chat_template;
  3. tokenizes them chunk by chunk ("Chunked tokenization").

Writes tests/golden/chat/valley2.json (ids from the fixture tokenizer.json, for
tests/unit/test_chat.c) and tests/golden/chat/valley2_api.json (a few text conversations
with the ids of AutoTokenizer on the folder's slow files, the reference tokenizer, for
tests/api/test_valley2.py).

  /work/refvenv/bin/python tests/golden/make_valley2_chat_goldens.py --make-model build/valley-make-model
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
import make_chat_goldens as mc  # noqa: E402
import make_goldens as mg  # noqa: E402
import vlm_fixtures  # noqa: E402

# conversations for the API test: (name, messages, opts)
API_CASES = [
    ("one user message", [mc.U("Hello! Who are you?")], {}),
    ("own system prompt", [mc.S("You answer in French."), mc.U("What is the capital of Italy?")], {}),
    ("multi-turn, reasoning text kept whole",
     [mc.U("Hi"), mc.A("<think>\nthe user greets\n</think>\n\nHello, how can I help?"),
      mc.U("Tell me a joke about GPUs.")], {}),
    ("unicode and code", [mc.U("你好！\ndef f(x):\n    return x ** 2\n")], {}),
]


def write_json(path, records):
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n")
        for i, r in enumerate(records):
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")))
            f.write(",\n" if i + 1 < len(records) else "\n")
        f.write("]\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-model", required=True, help="path to valley-make-model")
    ap.add_argument("--fixtures", help="folder holding qwen3-tokenizer/ (default: the committed one)")
    a = ap.parse_args()
    tdir = os.path.join(a.fixtures or str(vlm_fixtures.fixtures_dir()), "qwen3-tokenizer")
    from transformers import AutoTokenizer
    with tempfile.TemporaryDirectory() as tmp:
        mdir = os.path.join(tmp, "valley2")
        subprocess.run([os.path.abspath(a.make_model), "--out", mdir, "--tokenizer", tdir]
                       + mg.model_args("valley2"), check=True)
        assert not os.path.exists(os.path.join(mdir, "tokenizer.json"))
        template = json.load(open(os.path.join(mdir, "tokenizer_config.json")))["chat_template"]
        hf = AutoTokenizer.from_pretrained(mdir)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = mc.hf_tojson
    tmpl = env.from_string(template)
    tok = Tokenizer.from_file(os.path.join(tdir, "tokenizer.json"))

    class HfTok:  # the reference tokenizer, shaped like tokenizers.Tokenizer for mc.tokenize
        def encode(self, s, add_special_tokens=False):
            return type("E", (), {"ids": hf.encode(s, add_special_tokens=False)})()

    def render(msgs, opts, tools):
        opts = dict(opts, implicit_image=False, qwen25=True)
        prepared, total = mc.prepare(msgs, opts)
        tool_dicts = [mc.model_dump_tool(t) for t in tools] if tools else None
        gen = opts.get("add_generation_prompt", True)
        cont = opts.get("continue_final_message", False)
        text = tmpl.render(messages=prepared, tools=tool_dicts, add_generation_prompt=gen)
        ref = hf.apply_chat_template(prepared, tools=tool_dicts, tokenize=False,
                                     add_generation_prompt=gen, continue_final_message=cont)
        if cont:
            text = mc.continue_final(text, prepared[-1]["content"])
        assert ref == text, (ref, text)
        return opts, text, total

    cases = [c if len(c) == 3 or isinstance(c[3], (list, type(None))) else c[:3] + (None,) + c[3:]
             for c in mc.handcrafted()] + [c + (None,) for c in mc.randomized(random.Random(2026), 40)]
    records, n_ok = [], 0
    for case in cases:
        name, msgs, opts = case[:3]
        tools = case[3] if len(case) > 3 else None
        rec = {"name": name, "messages": msgs}
        if tools is not None:
            rec["tools"] = tools
        try:
            rec["opts"], text, total = render(msgs, opts, tools)
        except mc.SpecError as e:
            rec["opts"] = dict(opts, implicit_image=False, qwen25=True)
            rec["error"] = str(e)
            records.append(rec)
            continue
        ids = mc.tokenize(tok, text)
        assert ids.count(mc.SENTINEL) == total, name
        rec.update({"rendered": text, "n_images": total, "ids": ids})
        records.append(rec)
        n_ok += 1
    write_json(os.path.join(HERE, "chat", "valley2.json"), records)
    print("%d conversations (%d rendered) -> chat/valley2.json" % (len(records), n_ok))

    api = []
    for name, msgs, opts in API_CASES:
        o, text, total = render(msgs, dict({"enable_thinking": True, "default_system": None,
                                            "wrap_image_tokens": True}, **opts), None)
        assert total == 0
        api.append({"name": name, "messages": msgs, "rendered": text,
                    "ids": mc.tokenize(HfTok(), text)})
    write_json(os.path.join(HERE, "chat", "valley2_api.json"), api)
    print("%d API conversations -> chat/valley2_api.json" % len(api))


if __name__ == "__main__":
    main()
