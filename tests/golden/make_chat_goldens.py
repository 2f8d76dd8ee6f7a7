#!/usr/bin/env python3
"""Goldens for server/chat.c: conversations -> rendered prompt text -> token ids.

Developer script (CI never runs it; CI reads its output). Needs jinja2 and tokenizers
(and transformers, optionally, for a cross-check of the jinja2 environment).

For each conversation it
  1. applies docs/MODEL.md, "Prompt construction" and "OpenAI messages to prompt" in
     Python (default system prompt, role order,
     image markers prefixed or used in place, the implicit image, <im_start>/<im_end>
     wrapping) to get the message contents,
  2. renders them with jinja2 from the real "chat_template" of tokenizer_config.json, with
     the environment transformers uses (trim_blocks, lstrip_blocks, loopcontrols), and
     add_generation_prompt=True, enable_thinking=<opt>,
  3. tokenizes the rendered text as "Chunked tokenization" says (split on "<|im_end|>\\n", then on "<image>",
     each chunk encoded on its own by HF tokenizers, -200 per image).
Conversations the spec rejects are written with "error" (a substring of the expected
message) instead of a rendering.

Also writes tests/golden/chat/release.json: conversations on the release-shaped tokenizer
(Qwen3's + the 10 Valley added tokens), images wrapped as <im_start><image><im_end>, and for
each image its token count through both resizes (fetch_image with its own limits, then the
processor with mm_processor_kwargs), plus the ids as /tokenize shows them (<|image_pad|> per
image token).

Usage: python3 tests/golden/make_chat_goldens.py [--fixtures DIR]  (default: tests/fixtures)
           [--release-model build/models/release]
Output: tests/golden/chat/conversations.json, tests/golden/chat/release.json
"""
import argparse
import json
import os
import random
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import vlm_fixtures  # noqa: E402  (the committed Qwen3 tokenizer fixture)

IMAGE = "<image>"
SENTINEL = -200
DEFAULT_SYSTEM = "You are a helpful assistant."


class SpecError(Exception):
    pass


# Which role may follow which (server/chat.c role_may_follow); "start" = first after system.
# Any order the template renders (custom roles too: it drops them), but a tool message
# answers an assistant message or continues a run of tool messages.
def may_follow(role, prev):
    return prev in ("assistant", "tool") if role == "tool" else True


def prepare(messages, opts):
    """MODEL.md "Prompt construction" + "OpenAI messages to prompt": OpenAI-ish messages -> [{role, content[, tool_calls]}] for the
    template, with tool calls as vLLM passes them (arguments json.loads'ed; "" -> {})."""
    if not messages:
        raise SpecError("empty")
    msgs = [dict(m) for m in messages]
    if msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "text": None, "n_images": 0})
    if msgs[0]["text"] is None:
        msgs[0]["text"] = opts.get("default_system") or DEFAULT_SYSTEM
    for i, m in enumerate(msgs[1:]):
        prev = "start" if i == 0 else msgs[i]["role"]
        if not may_follow(m["role"], prev):
            raise SpecError("role")
        if m.get("tool_calls") and m["role"] != "assistant":
            raise SpecError("tool calls")
    prefill = not opts.get("add_generation_prompt", True) or opts.get("continue_final_message")
    if msgs[-1]["role"] not in ("user", "tool") and not (prefill and
                                                         msgs[-1]["role"] == "assistant"):
        raise SpecError("last")
    if opts.get("continue_final_message") and msgs[-1]["role"] != "assistant":
        raise SpecError("continue_final_message")
    users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
    if sum(m["n_images"] for m in msgs) == 0 and opts["implicit_image"] and users:
        msgs[users[0]] = dict(msgs[users[0]], n_images=1)  # the first user message: 3x3 black
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
        msg = {"role": m["role"], "content": text}
        if m.get("tool_calls"):
            msg["tool_calls"] = [{"id": "call_%d" % k, "type": "function",
                                  "function": {"name": c["name"],
                                               "arguments": json.loads(c["arguments"])
                                               if c["arguments"] else {}}}
                                 for k, c in enumerate(m["tool_calls"])]
        out.append(msg)
    return out, total


def model_dump_tool(tool):
    """What vLLM passes to the template: tool.model_dump() of its pydantic model (declared
    fields first, absent optional ones None, then the client's extra fields in order)."""
    f = tool["function"]
    fd = {"name": f["name"], "description": f.get("description"),
          "parameters": f.get("parameters")}
    fd.update({k: v for k, v in f.items() if k not in fd})
    d = {"type": "function", "function": fd}
    d.update({k: v for k, v in tool.items() if k not in d})
    return d


def continue_final(rendered, final):
    """transformers' continue_final_message cut (tokenization_utils_base.py, 4.51)."""
    if final.strip() not in rendered:
        raise SpecError("does not appear")
    loc = rendered.rindex(final.strip())
    if rendered[loc:loc + len(final.lstrip())] == final:
        return rendered[:loc + len(final.lstrip())]
    return rendered[:loc + len(final.strip())]


def hf_tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """transformers' replacement of jinja's tojson filter (no HTML escaping, no sorting)."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def tokenize(tok, rendered):
    """MODEL.md "Chunked tokenization": the chunk-by-chunk tokenization of Valley's processor."""
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
        # prefill: add_generation_prompt false / continue_final_message (vLLM, transformers)
        ("prefill: ends on assistant", [U("Describe.", 1), A("It is a cat.")],
         o(add_generation_prompt=False)),
        ("prefill: ends on assistant, thinking off, implicit image",
         [U("Hi"), A("<think>\nhm\n</think>\n\nHello!")],
         o(add_generation_prompt=False, enable_thinking=False)),
        ("prefill: ends on user, no generation prompt", [U("Hi", 2)],
         o(add_generation_prompt=False)),
        ("continue: partial answer", [U("Describe.", 1), A("The image shows")],
         o(add_generation_prompt=False, continue_final_message=True)),
        ("error: continue without a final assistant message", [U("Count to five.")],
         o(add_generation_prompt=False, continue_final_message=True), "continue_final_message"),
        ("continue: reasoning then partial answer",
         [U("What is 2+2?"), A("<think>\nadd them\n</think>\n\nThe answer is")],
         o(add_generation_prompt=False, continue_final_message=True)),
        ("continue: trailing space kept", [U("a", 1), A("The answer is ")],
         o(add_generation_prompt=False, continue_final_message=True)),
        ("continue: leading newlines", [U("a"), A("\n\nafter newlines")],
         o(add_generation_prompt=False, continue_final_message=True, enable_thinking=False)),
        ("continue: images in two turns",
         [U("one", 1), A("<think>x</think>ok"), U("two", 2), A("Partial")],
         o(add_generation_prompt=False, continue_final_message=True, wrap_image_tokens=True)),
        ("continue: after a system message", [S("Be terse."), U("q", 1), A("Sure")],
         o(add_generation_prompt=False, continue_final_message=True)),
        ("error: continue, final text dropped by the template",
         [U("q"), A("<think>only thoughts</think>")],
         o(add_generation_prompt=False, continue_final_message=True), "does not appear"),
        ("error: empty", [], o(), "empty"),
        ("error: last is assistant", [U("q", 1), A("a")], o(), "last"),
        # orders the template renders (vLLM passes them on), the image rules unchanged
        ("two users", [U("a"), U("b")], o()),
        ("two users with images", [U("first", 1), U("second <image>", 1)], o(enable_thinking=False)),
        ("assistant first, implicit image on the first user", [A("a"), U("b")], o()),
        ("two assistants", [U("q", 2), A("one"), A("<think>x</think>two"), U("again")], o()),
        ("system in the middle", [U("a"), A("b"), S("c"), U("d")], o()),
        ("system in the middle with images", [S("Be brief."), U("a", 1), A("b"), S("Now in French."),
                                              U("d <image>", 1)], o(wrap_image_tokens=True)),
        ("custom role dropped", [U("a", 1), {"role": "critic", "text": "bad", "n_images": 0},
                                 U("b")], o()),
        ("custom role first", [{"role": "narrator", "text": "Once", "n_images": 0}, U("go")],
         o(enable_thinking=False)),
        ("consecutive roles, prefill", [U("a"), U("b", 1), A("c"), A("partial")],
         o(add_generation_prompt=False, continue_final_message=True)),
        ("error: image in a custom role", [U("a"), {"role": "critic", "text": "x", "n_images": 1},
                                           U("b")], o(), "only in user"),
        ("error: ends with a custom role", [U("a"), {"role": "critic", "text": "x",
                                                     "n_images": 0}], o(), "last"),
        ("error: too many markers", [U("<image> <image>", 1)], o(), "marker"),
        ("error: markers without images", [U("<image> hi")], o(implicit_image=False), "marker"),
        ("error: marker in later message", [U("a", 1), A("b"), U("<image> c")], o(), "marker"),
        ("error: image in assistant", [U("a", 1), {"role": "assistant", "text": "b", "n_images": 1},
                                       U("c")], o(), "only in user"),
        ("error: marker in system", [S("look <image>"), U("c", 1)], o(), "only in user"),
    ] + tool_cases(o)


def T(role, text, calls=None):
    m = {"role": role, "text": text, "n_images": 0}
    if calls is not None:
        m["tool_calls"] = [{"name": n, "arguments": a} for n, a in calls]
    return m


def fn(name, description=None, parameters=None, **extra):
    f = {"name": name}
    if description is not None:
        f["description"] = description
    if parameters is not None:
        f["parameters"] = parameters
    f.update(extra)
    return {"type": "function", "function": f}


WEATHER = fn("get_weather", "Get the current weather in a given location", {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City and state, e.g. 'San Francisco, CA'"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["location"]})
SEARCH = fn("web_search", "Search the web.", {
    "type": "object",
    "properties": {
        "query": {"type": "string"},
        "filters": {"type": "object", "properties": {
            "site": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
            "date": {"type": "object", "properties": {"from": {"type": "string",
                                                                "format": "date"},
                                                       "to": {"type": "string"}}}},
            "additionalProperties": False},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
        "temperature": {"type": "number", "minimum": 0, "maximum": 0.75, "default": 0.25}},
    "required": ["query"]})
BARE = fn("ping")
STRICT = fn("calc", parameters={"type": "object", "properties": {"expr": {"type": "string"}}},
            strict=True)
UNICODE = fn("翻译", "Übersetze den Text → 中文 🌍; escapes: \"q\" \\ tab\t nl\n "
             "ctl\u0001 del\u007f </script> & <b>", {
                 "type": "object",
                 "properties": {"text": {"type": "string", "description": "テキスト"},
                                "tiny": {"type": "number", "default": 1.5e-07},
                                "huge": {"type": "number", "default": 2.5e+20},
                                "neg": {"type": "integer", "default": -42},
                                "flag": {"type": "boolean", "default": True},
                                "none": {"default": None}}})
NUMBERS = fn("numbers", "Number literals as Python writes them.", {
    "type": "object",
    "properties": {"a": {"type": "number", "default": 1.0, "maximum": 100.0, "minimum": -0.0},
                   "b": {"type": "integer", "default": 12345678901234567890, "multipleOf": 1e5},
                   "c": {"type": "number", "enum": [0.1, 1e-05, 1e16, 3.0e-10, -2]}}})
EXTRA_TOP = dict(fn("lookup", "Look up a key.", {"type": "object", "properties": {}}),
                 extra_field={"nested": [1, 2, {"a": "b"}]})


def tool_cases(o):
    W = '{"location": "Paris, France", "unit": "celsius"}'
    return [
        ("tools: one tool", [U("What's the weather in Paris?")], o(), [WEATHER]),
        ("tools: one tool, thinking off", [U("Weather in Oslo?")], o(enable_thinking=False),
         [WEATHER]),
        ("tools: several tools, nested schemas", [U("Find news about Mars.")], o(),
         [WEATHER, SEARCH, BARE]),
        ("tools: no description/parameters, extra fields", [U("ping")], o(),
         [BARE, STRICT, EXTRA_TOP]),
        ("tools: unicode and escapes", [U("翻译这个")], o(implicit_image=False), [UNICODE]),
        ("tools: system given", [S("You are a weather bot."), U("Paris?")], o(), [WEATHER]),
        ("tools: empty system", [S(""), U("Paris?")], o(), [WEATHER]),
        ("tools: custom default system", [U("Paris?", 1)], o(default_system="Think step by step."),
         [WEATHER]),
        ("tools: call without content, tool result last",
         [U("Weather in Paris?"), T("assistant", None, [("get_weather", W)]),
          T("tool", '{"temperature": 21, "condition": "sunny"}')], o(), [WEATHER]),
        ("tools: call with content",
         [U("Weather in Paris?"), T("assistant", "Let me check.", [("get_weather", W)]),
          T("tool", "21 C, sunny")], o(enable_thinking=False), [WEATHER]),
        ("tools: parallel calls and results",
         [U("Weather in Paris and Rome?"),
          T("assistant", "", [("get_weather", W),
                              ("get_weather", '{"location":"Rome, Italy","unit":"celsius"}')]),
          T("tool", "Paris: 21 C"), T("tool", "Rome: 25 C")], o(), [WEATHER]),
        ("tools: multi-turn, then a new question",
         [U("Weather in Paris?", 1), T("assistant", None, [("get_weather", W)]),
          T("tool", "21 C"), A("It is 21 C in Paris."), U("And search for Mars news.")],
         o(), [WEATHER, SEARCH]),
        ("tools: reasoning kept after the last query",
         [U("Weather in Paris?"),
          T("assistant", "<think>\nI should call the tool.\n</think>\n\n", [("get_weather", W)]),
          T("tool", "21 C")], o(), [WEATHER]),
        ("tools: reasoning dropped before the last query",
         [U("Weather in Paris?"),
          T("assistant", "<think>\nplan\n</think>\n\nChecking.", [("get_weather", W)]),
          T("tool", "21 C"), A("<think>ok</think>It is 21 C."), U("Thanks! Rome?")],
         o(enable_thinking=False), [WEATHER]),
        ("tools: second step keeps reasoning of both assistant turns",
         [U("Weather in Paris, then search."),
          T("assistant", "<think>first</think>", [("get_weather", W)]), T("tool", "21 C"),
          T("assistant", "<think>second</think>\n\nNow searching.",
            [("web_search", '{"query": "Paris events", "filters": {"site": ["a.fr", "b.fr"]}, '
                            '"top_k": 3, "temperature": 0.5}')]),
          T("tool", "[]")], o(), [WEATHER, SEARCH]),
        ("tools: unicode arguments and results",
         [U("翻译 hello"),
          T("assistant", None, [("翻译", '{"text": "hello \\u00e9 \\ud83c\\udf0d \\"q\\" </x>", '
                                         '"tiny": 1e-9, "huge": 1.5e300, "neg": -7, '
                                         '"flag": false, "none": null, "list": [1, [2, [3]]]}')]),
          T("tool", "你好 🌍\n<b>bold</b>")], o(implicit_image=False), [UNICODE]),
        ("tools: number literals in schemas and arguments",
         [U("numbers"),
          T("assistant", None, [("numbers", '{"a": 2.0, "b": 12345678901234567890, "c": 1E5, '
                                            '"d": -0, "e": 1.50, "f": [1e2, -0.0]}')]),
          T("tool", "ok")], o(), [NUMBERS]),
        ("tools: empty arguments become {}",
         [U("ping it"), T("assistant", None, [("ping", "")]), T("tool", "")], o(), [BARE]),
        ("tools: image in the user turn",
         [U("Where was this photo taken? Check the weather there.", 1),
          T("assistant", None, [("get_weather", W)]), T("tool", "21 C")],
         o(wrap_image_tokens=True), [WEATHER]),
        ("tools: user after tool results",
         [U("Weather?"), T("assistant", None, [("get_weather", W)]), T("tool", "21 C"),
          U("Never mind, what about Rome?", 2)], o(), [WEATHER]),
        ("tool calls without tools", [U("hi"), T("assistant", "ok", [("get_weather", W)]),
                                      T("tool", "21 C")], o(), None),
        ("error: tool first", [T("tool", "x")], o(), [WEATHER], "role"),
        ("error: tool after user", [U("a"), T("tool", "x")], o(), [WEATHER], "role"),
        ("error: tool call on a user message", [T("user", "a", [("get_weather", W)])], o(),
         [WEATHER], "tool calls"),
        ("error: image marker in a tool message",
         [U("a"), T("assistant", None, [("get_weather", W)]), T("tool", "<image>")], o(),
         [WEATHER], "only in user"),
        ("error: ends with an assistant tool call",
         [U("a"), T("assistant", None, [("get_weather", W)])], o(), [WEATHER], "last"),
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


# ---- The release-shaped tokenizer and images (tests/golden/chat/release.json) ------------
# The released folder's tokenizer is Qwen3's plus 10 Valley added tokens (special) at ids
# 151669.., images are wrapped as <im_start><image><im_end> (the processor's default), and
# each image goes through fetch_image's smart_resize with its own limits, then the
# processor's with the user's (mm_processor_kwargs): docs/MODEL.md, "Image preprocessing".
VALLEY_TOKENS = ["<im_start>", "<im_end>", "<vi_start>", "<vi_end>", "<cor>", "</cor>",
                 "<im_patch>", "<vi_frame>", "<box_start>", "<box_end>"]
IMAGE_PAD = 151655  # <|image_pad|>: what /tokenize shows at image positions
FETCH_MIN, FETCH_MAX, FACTOR = 3136, 12845056, 28


def py_round(x):
    return round(x)  # Python's round: half to even, as the reference


def smart_resize(h, w, min_pixels, max_pixels, fetch):
    """qwen-vl-utils 0.0.8 (fetch=True: sides clamped to >= 28) or transformers 4.51.2."""
    import math
    f = FACTOR
    hb, wb = py_round(h / f) * f, py_round(w / f) * f
    if fetch:
        hb, wb = max(f, hb), max(f, wb)
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = math.floor(h / beta / f) * f, math.floor(w / beta / f) * f
        if fetch:
            hb, wb = max(f, hb), max(f, wb)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / f) * f, math.ceil(w * beta / f) * f
    return hb, wb


def image_tokens(w, h, mm, stages):
    """LLM tokens of a w x h image: two stages (the reference) or one (user limits given to
    fetch_image too, for comparison)."""
    mn = mm.get("min_pixels", FETCH_MIN)
    mx = mm.get("max_pixels", FETCH_MAX)
    if stages == 2:
        h1, w1 = smart_resize(h, w, FETCH_MIN, FETCH_MAX, True)
    else:
        h1, w1 = smart_resize(h, w, mn, mx, True)
    h2, w2 = smart_resize(h1, w1, mn, mx, False)
    return (h2 // FACTOR) * (w2 // FACTOR), [w2, h2]


def release_tokenizer(tdir):
    from tokenizers import AddedToken
    tok = Tokenizer.from_file(os.path.join(tdir, "tokenizer.json"))
    base = tok.get_vocab_size(with_added_tokens=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in VALLEY_TOKENS])
    for i, t in enumerate(VALLEY_TOKENS):
        assert tok.token_to_id(t) == base + i == 151669 + i, t
    return tok


def release_cases():
    """(name, messages, opts, image sizes in order [w, h], mm_processor_kwargs)."""
    def o(think=True):
        return {"enable_thinking": think, "default_system": None, "implicit_image": True,
                "wrap_image_tokens": True}
    return [
        ("one image, thinking on", [U("Describe the given image.", 1)], o(), [[640, 480]], {}),
        ("one image, thinking off", [U("Describe the given image.", 1)], o(False), [[640, 480]], {}),
        ("text only: the implicit image, wrapped", [U("Hello!")], o(), [], {}),
        ("text only, thinking off", [U("Hi")], o(False), [], {}),
        ("1080p at max_pixels 200704: 1932x1092 then 588x336", [U("What is in this frame?", 1)],
         o(), [[1920, 1080]], {"max_pixels": 200704}),
        ("900x506 at max_pixels 200704: two stages 252 tokens, one stage would give 231",
         [U("Describe.", 1)], o(False), [[900, 506]], {"max_pixels": 200704}),
        ("two images at min_pixels 50176, placed markers",
         [U("Compare <image> with <image>, please.", 2)], o(), [[64, 48], [100, 37]],
         {"min_pixels": 50176}),
        ("images in the second user turn", [U("Hi"), A("Hello, how can I help?"),
                                            U("Look:", 2)], o(), [[233, 317], [400, 300]], {}),
    ]


def release_goldens(tmpl, tdir, out_path, hf_release_dir):
    tok = release_tokenizer(tdir)
    hf = None
    if hf_release_dir:  # the slow-file folder valley-make-model --layout release writes
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(hf_release_dir)
        assert not os.path.exists(os.path.join(hf_release_dir, "tokenizer.json"))
    records = []
    for name, msgs, opts, sizes, mm in release_cases():
        prepared, total = prepare(msgs, opts)
        rendered = tmpl.render(messages=prepared, tools=None, add_generation_prompt=True,
                               enable_thinking=opts["enable_thinking"])
        ids = tokenize(tok, rendered)
        if hf is not None:
            class HfIds:
                def __init__(self, t):
                    self.ids = t
            ref = tokenize(type("T", (), {"encode": lambda self, s, add_special_tokens=False:
                                          HfIds(hf.encode(s, add_special_tokens=False))})(),
                           rendered)
            assert ref == ids, name
        # each wrapped image is exactly <im_start> -200 <im_end>
        for k, t in enumerate(ids):
            if t == SENTINEL:
                assert ids[k - 1] == 151669 and ids[k + 1] == 151670, name
        images = sizes if sizes else [[3, 3]]  # the implicit 3x3 black image
        assert len(images) == total, name
        per, one, resized = [], [], []
        for w, h in images:
            n2, r2 = image_tokens(w, h, mm if sizes else {}, 2)
            n1, _ = image_tokens(w, h, mm if sizes else {}, 1)
            per.append(n2)
            one.append(n1)
            resized.append(r2)
        expanded, k = [], 0
        for t in ids:
            if t == SENTINEL:
                expanded.extend([IMAGE_PAD] * per[k])
                k += 1
            else:
                expanded.append(t)
        rec = {"name": name, "opts": opts, "messages": msgs, "images": sizes,
               "mm_processor_kwargs": mm, "rendered": rendered, "n_images": total, "ids": ids,
               "image_tokens": per, "resized": resized, "one_stage_image_tokens": one,
               "expanded": expanded}
        records.append(rec)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("[\n")
        for i, r in enumerate(records):
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")))
            f.write(",\n" if i + 1 < len(records) else "\n")
        f.write("]\n")
    print("%d release conversations%s -> %s" % (len(records),
                                               " (AutoTokenizer cross-check)" if hf else "",
                                               out_path))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", help="folder holding qwen3-tokenizer/ (default: the committed one)")
    ap.add_argument("--out", default=os.path.join(here, "chat", "conversations.json"))
    ap.add_argument("--release-out", default=os.path.join(here, "chat", "release.json"))
    ap.add_argument("--release-model",
                    help="a folder from valley-make-model --layout release: its slow tokenizer "
                         "files are read with transformers' AutoTokenizer as a cross-check")
    args = ap.parse_args()
    tdir = os.path.join(args.fixtures or str(vlm_fixtures.fixtures_dir()), "qwen3-tokenizer")
    template = json.load(open(os.path.join(tdir, "tokenizer_config.json")))["chat_template"]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = hf_tojson
    tmpl = env.from_string(template)
    tok = Tokenizer.from_file(os.path.join(tdir, "tokenizer.json"))
    try:
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(tdir)
    except Exception as e:  # the cross-check is optional
        print("transformers cross-check skipped:", e)
        hf = None

    # a case is (name, messages, opts[, tools][, error]); tools: the client's list or None
    cases = [c if len(c) == 3 or isinstance(c[3], (list, type(None))) else c[:3] + (None,) + c[3:]
             for c in handcrafted()] + [c + (None,) for c in randomized(random.Random(2025), 60)]
    records = []
    n_ok = 0
    for case in cases:
        name, msgs, opts = case[:3]
        tools = case[3] if len(case) > 3 else None
        rec = {"name": name, "opts": opts, "messages": msgs}
        if tools is not None:
            rec["tools"] = tools
        try:
            prepared, total = prepare(msgs, opts)
        except SpecError as e:
            assert len(case) == 5 and case[4] == str(e), (name, e)
            rec["error"] = str(e)
            records.append(rec)
            continue
        tool_dicts = [model_dump_tool(t) for t in tools] if tools else None
        gen = opts.get("add_generation_prompt", True)
        cont = opts.get("continue_final_message", False)
        rendered = tmpl.render(messages=prepared, tools=tool_dicts, add_generation_prompt=gen,
                               enable_thinking=opts["enable_thinking"])
        try:
            if cont:
                rendered = continue_final(rendered, prepared[-1]["content"])
        except SpecError as e:
            assert len(case) == 5 and case[4] == str(e), (name, e)
            rec["error"] = str(e)
            records.append(rec)
            continue
        assert len(case) <= 4, name
        if hf is not None:
            ref = hf.apply_chat_template(prepared, tools=tool_dicts, tokenize=False,
                                         add_generation_prompt=gen, continue_final_message=cont,
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
    release_goldens(tmpl, tdir, args.release_out, args.release_model)


if __name__ == "__main__":
    main()
