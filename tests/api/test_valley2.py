"""The server on a Valley2 (Valley-Eagle layout) test checkpoint, through the openai SDK
(tests/models.txt "valley2", written by valley-make-model --arch valley2: Qwen2.5 decoder,
slow tokenizer files only, the Qwen2.5 chat template, SigLIP + Qwen2-VL towers and the
conv_adapter projector in the folder).

  * the folder is recognised as Valley2 from config.json and the start-up log says so;
  * text chat: usage.prompt_tokens and the prompt ids equal tests/golden/chat/valley2_api.json
    (made by tests/golden/make_valley2_chat_goldens.py: the checkpoint's chat_template
    rendered by jinja2, tokenized chunk by chunk with AutoTokenizer on the folder);
  * greedy decoding through the API gives the 32 tokens of transformers' Qwen2ForCausalLM
    (tests/golden/text/valley2.json, prompt "chat": the same rendered prompt);
  * thinking switches change nothing (Qwen2.5 has none) and the answer is not split into
    reasoning;
  * an image part is a 400 that says images are not yet supported for Valley2.
"""

import json
from pathlib import Path

import httpx
import pytest

from conftest import API_KEY, ROOT, Server, data_url, png_bytes
from test_release import http_client, make_model

GOLDENS = ROOT / "tests" / "golden" / "chat" / "valley2_api.json"
TEXT_GOLDENS = ROOT / "tests" / "golden" / "text" / "valley2.json"


@pytest.fixture(scope="module")
def valley2(tmp_path_factory):
    out = make_model(tmp_path_factory, "valley2")
    s = Server(out, ["--api-key", API_KEY])
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


def client(server):
    from openai import OpenAI
    return OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)


def goldens():
    return json.loads(GOLDENS.read_text())


def openai_messages(g):
    return [{"role": m["role"], "content": m["text"]} for m in g["messages"]]


def test_recognised_as_valley2(valley2):
    model = Path(valley2.proc.args[valley2.proc.args.index("--model") + 1])
    assert not (model / "tokenizer.json").exists()
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["architectures"] == ["ValleyQwen2ForCausalLM"] and cfg["eos_token_id"] == 151645
    log = valley2.log_text()
    assert "Valley2 (Qwen2.5 decoder)" in log
    assert "Valley2 towers bound" in log and "images are refused" in log
    assert "server: model" in log and ": Valley2, " in log
    assert "generation stops at" in log and "151645" in log


@pytest.mark.parametrize("name", [g["name"] for g in goldens()])
def test_prompt_tokens_match_reference(valley2, name):
    g = next(g for g in goldens() if g["name"] == name)
    r = client(valley2).chat.completions.create(
        model="tiny", messages=openai_messages(g), max_tokens=1,
        extra_body={"return_token_ids": True})
    assert r.usage.prompt_tokens == len(g["ids"])
    assert r.model_extra["prompt_token_ids"] == g["ids"]
    with http_client(valley2) as c:
        t = c.post("/tokenize", json={"model": "tiny", "messages": openai_messages(g)})
    assert t.status_code == 200, t.text
    assert t.json()["tokens"] == g["ids"]


def test_greedy_matches_qwen2_reference(valley2):
    ref = next(p for p in json.loads(TEXT_GOLDENS.read_text())["prompts"] if p["name"] == "chat")
    r = client(valley2).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Write a haiku about paged attention."}],
        max_tokens=32, temperature=0, extra_body={"return_token_ids": True, "ignore_eos": True})
    assert r.model_extra["prompt_token_ids"] == ref["ids"]
    assert r.choices[0].model_extra["token_ids"] == ref["greedy"]


@pytest.mark.parametrize("think", [True, False])
def test_no_thinking_switch(valley2, think):
    g = goldens()[0]
    r = client(valley2).chat.completions.create(
        model="tiny", messages=openai_messages(g), max_tokens=4, temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": think}, "ignore_eos": True})
    assert r.usage.prompt_tokens == len(g["ids"])
    assert r.choices[0].message.model_extra.get("reasoning_content") is None
    assert r.usage.completion_tokens == 4


def test_image_is_a_clear_400(valley2):
    from openai import BadRequestError
    msgs = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(png_bytes(32, 24))}},
        {"type": "text", "text": "Describe the image."}]}]
    with pytest.raises(BadRequestError) as ei:
        client(valley2).chat.completions.create(model="tiny", messages=msgs, max_tokens=1)
    err = ei.value.body
    assert "images are not yet supported for Valley2 checkpoints" in err["message"]
    assert err["param"] == "messages"
    # the server goes on serving text
    r = client(valley2).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
    assert r.usage.completion_tokens == 1
    assert httpx.get(valley2.url + "/health", timeout=10).status_code == 200
