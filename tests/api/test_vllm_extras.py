"""The fields vLLM users' tools send beyond the core API, through the official openai SDK on
the test models: logit_bias, completions batches and echo (with the prompt tokens'
logprobs, as lm-eval-harness asks for them), prompt_logprobs, vLLM's extras
(return_token_ids, return_tokens_as_token_ids, include_reasoning, truncate_prompt_tokens,
stream_options.continuous_usage_stats, stop_reason, the `reasoning` field) and the routes
/version, /ping, /invocations, /v1/models/{id} and the X-Request-Id echo. Bad values of
each field are in tests/api/test_errors.py's table."""

import math

import httpx
import openai
import pytest

from conftest import API_KEY

MSG = [{"role": "user", "content": "Say something."}]
PROMPT = "The quick brown fox"
IDS = {"return_token_ids": True}


def complete(client, prompt=PROMPT, **kw):
    kw.setdefault("max_tokens", 4)
    kw.setdefault("temperature", 0)
    extra = kw.pop("extra", {})
    return client.completions.create(model="tiny", prompt=prompt, extra_body=extra, **kw)


def tokens_of(choice):
    return choice.model_extra["token_ids"]


# ---- logit_bias ----

def test_logit_bias_forces_a_token_and_logprobs_stay_raw(client):
    ref = complete(client, max_tokens=1, logprobs=20,
                   extra={**IDS, "return_tokens_as_token_ids": True})
    first = tokens_of(ref.choices[0])[0]
    ranked = sorted(ref.choices[0].logprobs.top_logprobs[0].items(), key=lambda kv: -kv[1])
    r = complete(client, max_tokens=3, extra={**IDS, "logit_bias": {}})
    assert tokens_of(r.choices[0])[0] == first  # an empty map changes nothing
    # the 6th most likely first token, pushed to the top by +100 ...
    name, raw_lp = ranked[5]
    target = int(name.split(":")[1])
    r = complete(client, max_tokens=1, logprobs=0, extra={**IDS, "logit_bias": {str(target): 100}})
    assert tokens_of(r.choices[0]) == [target]
    # ... and its logprob is the model's, before the bias (vLLM's raw logprobs)
    assert math.isclose(r.choices[0].logprobs.token_logprobs[0], raw_lp, abs_tol=1e-4)
    # -100 on the greedy token moves the choice elsewhere; a bias beyond 100 is clamped
    r = complete(client, max_tokens=1, extra={**IDS, "logit_bias": {str(first): -1000}})
    assert tokens_of(r.choices[0])[0] != first


def test_logit_bias_on_chat(client):
    base = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=3, temperature=0,
                                          extra_body=IDS)
    ids = base.choices[0].model_extra["token_ids"]
    assert len(ids) >= 1
    r = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=3, temperature=0,
                                       logit_bias={str(ids[0]): -100}, extra_body=IDS)
    assert r.choices[0].model_extra["token_ids"][0] != ids[0]
    r = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=3, temperature=0.8,
                                       seed=3, logit_bias={"13": 100}, extra_body=IDS)
    assert r.choices[0].model_extra["token_ids"] == [13, 13, 13]  # "." three times


# ---- completions batches and echo ----

def test_prompt_list_gives_choices_in_vllm_order(client):
    prompts = ["Once upon a time", "Hello", "1, 2, 3,"]
    singles = [complete(client, p).choices[0].text for p in prompts]
    r = complete(client, prompts, n=2)
    assert [c.index for c in r.choices] == list(range(6))
    assert [c.text for c in r.choices] == [s for s in singles for _ in range(2)]
    one = [complete(client, p) for p in prompts]
    assert r.usage.prompt_tokens == sum(o.usage.prompt_tokens for o in one)
    assert r.usage.completion_tokens == sum(2 * o.usage.completion_tokens for o in one)


def test_prompt_token_id_lists(client):
    ids = [[785, 3974, 13876, 38835], [9707]]
    r = complete(client, ids, extra=IDS)
    assert len(r.choices) == 2
    for c, p in zip(r.choices, ids):
        assert c.model_extra["prompt_token_ids"] == p
        assert c.text == complete(client, p).choices[0].text


def test_prompt_list_streamed(client):
    prompts = ["Once upon a time", "Hello"]
    ref = complete(client, prompts)
    texts = {}
    for ch in complete(client, prompts, stream=True):
        for c in ch.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
    assert texts == {i: c.text for i, c in enumerate(ref.choices)}


def test_echo_puts_the_prompt_first(client):
    ref = complete(client)
    r = complete(client, echo=True)
    assert r.choices[0].text == PROMPT + ref.choices[0].text
    chunks = list(complete(client, echo=True, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text


def test_echo_logprobs_score_the_prompt(client):
    """What lm-eval-harness's loglikelihood asks: echo + logprobs + max_tokens 0. The logprob
    of a token as a prompt token equals its logprob when it was generated."""
    gen = complete(client, max_tokens=3, logprobs=2, extra=IDS)
    prompt_ids = gen.choices[0].model_extra["prompt_token_ids"]
    out_ids = tokens_of(gen.choices[0])
    full = prompt_ids + out_ids
    for _ in range(2):  # the second time the prompt's blocks are in the prefix cache
        r = complete(client, full, max_tokens=0, echo=True, logprobs=2)
        lp = r.choices[0].logprobs
        assert len(lp.tokens) == len(full)
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert all(isinstance(x, float) for x in lp.token_logprobs[1:])
        for k in range(3):
            assert math.isclose(lp.token_logprobs[len(prompt_ids) + k],
                                gen.choices[0].logprobs.token_logprobs[k], abs_tol=1e-4)
        assert all(len(t) <= 2 for t in lp.top_logprobs[1:])
        assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
        assert r.choices[0].text == "".join(lp.tokens)
        assert r.choices[0].finish_reason == "length"


def test_echo_with_generation_and_logprobs(client):
    r = complete(client, max_tokens=3, echo=True, logprobs=1, extra=IDS)
    c = r.choices[0]
    n_prompt = len(c.model_extra["prompt_token_ids"])
    assert len(c.logprobs.tokens) == n_prompt + 3
    assert c.logprobs.token_logprobs[0] is None
    assert c.text.startswith(PROMPT)


def test_prompt_logprobs_on_both_endpoints(client):
    r = complete(client, max_tokens=1, extra={**IDS, "prompt_logprobs": 3})
    c = r.choices[0]
    pl, ids = c.model_extra["prompt_logprobs"], c.model_extra["prompt_token_ids"]
    assert len(pl) == len(ids) and pl[0] is None
    for t, entry in zip(ids[1:], pl[1:]):
        assert str(t) in entry
        assert 3 <= len(entry) <= 4
        ranks = sorted(v["rank"] for v in entry.values())
        assert ranks[:3] == [1, 2, 3] or entry[str(t)]["rank"] <= 3
        assert all(v["logprob"] <= 0 and isinstance(v["decoded_token"], str)
                   for v in entry.values())
    chat = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=1,
                                          extra_body={"prompt_logprobs": 0, **IDS})
    pl, ids = chat.model_extra["prompt_logprobs"], chat.model_extra["prompt_token_ids"]
    assert len(pl) == len(ids) == chat.usage.prompt_tokens and pl[0] is None
    assert all(list(e) == [str(t)] for t, e in zip(ids[1:], pl[1:]))


# ---- vLLM's extras ----

def test_return_token_ids_and_tokens_as_ids(client):
    r = complete(client, max_tokens=4, logprobs=2,
                 extra={**IDS, "return_tokens_as_token_ids": True})
    c = r.choices[0]
    assert len(tokens_of(c)) == r.usage.completion_tokens
    assert c.logprobs.tokens == [f"token_id:{t}" for t in tokens_of(c)]
    assert all(k.startswith("token_id:") for d in c.logprobs.top_logprobs for k in d)
    streamed, prompt_ids = [], None
    for ch in complete(client, max_tokens=4, stream=True, extra=IDS):
        for x in ch.choices:
            streamed += x.model_extra.get("token_ids") or []
            prompt_ids = x.model_extra.get("prompt_token_ids") or prompt_ids
    assert streamed == tokens_of(c)
    assert prompt_ids == c.model_extra["prompt_token_ids"]


def test_truncate_prompt_tokens(client):
    r = complete(client, "one two three four five six seven", extra={"truncate_prompt_tokens": 3,
                                                                      **IDS})
    assert r.usage.prompt_tokens == 3
    full = complete(client, "one two three four five six seven", extra=IDS)
    assert r.choices[0].model_extra["prompt_token_ids"] == \
        full.choices[0].model_extra["prompt_token_ids"][-3:]
    # chat: the left end goes; an image that would be cut is a 400 (this model puts an
    # implicit image into every conversation)
    n = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=1).usage.prompt_tokens
    r = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=1,
                                       extra_body={"truncate_prompt_tokens": n - 2})
    assert r.usage.prompt_tokens == n - 2
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=MSG, max_tokens=1,
                                       extra_body={"truncate_prompt_tokens": 5})
    assert e.value.body["param"] == "truncate_prompt_tokens"


def test_continuous_usage_stats(client):
    chunks = list(client.chat.completions.create(
        model="tiny", messages=MSG, max_tokens=5, temperature=0, stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True}))
    with_choices = [c for c in chunks if c.choices]
    assert all(c.usage is not None for c in with_choices)
    counts = [c.usage.completion_tokens for c in with_choices]
    assert counts == sorted(counts) and counts[-1] == chunks[-1].usage.completion_tokens
    assert all(c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens
               for c in with_choices)


def test_stream_options_and_seed_rules(http):
    r = http.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG, "max_tokens": 1,
                                                "stream_options": {}})
    assert r.status_code == 200  # an empty object is no option (vLLM checks truthiness)
    r = http.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG, "max_tokens": 1,
                                                "seed": -(2 ** 63)})
    assert r.status_code == 200


def test_tool_calls_always_listed(client):
    raw = client.chat.completions.with_raw_response.create(model="tiny", messages=MSG,
                                                           max_tokens=2).http_response.json()
    assert raw["choices"][0]["message"]["tool_calls"] == []  # vLLM's default_factory=list


# ---- prefill: a conversation that ends with an assistant message ----

PREFILL = [{"role": "user", "content": "What is 2+2?"},
           {"role": "assistant", "content": "The answer is"}]
CONTINUE = {"add_generation_prompt": False, "continue_final_message": True}


def test_continue_final_message(client, http):
    r = client.chat.completions.create(model="tiny", messages=PREFILL, max_tokens=3, temperature=0,
                                       extra_body={**CONTINUE, **IDS, "echo": True})
    ids = r.model_extra["prompt_token_ids"]
    tok = http.post("/tokenize", json={"messages": PREFILL, **CONTINUE}).json()
    assert tok["tokens"] == ids and r.usage.prompt_tokens == len(ids)
    text = http.post("/detokenize", json={"tokens": ids}).json()["prompt"]
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nThe answer is")
    # chat echo: the reply starts with the message it continues (vLLM)
    assert r.choices[0].message.content.startswith("The answer is")
    plain = client.chat.completions.create(model="tiny", messages=PREFILL, max_tokens=3,
                                           temperature=0, extra_body=CONTINUE)
    assert r.choices[0].message.content == "The answer is" + (plain.choices[0].message.content or "")
    # add_generation_prompt false alone: the last turn is closed, no generation prompt
    tok2 = http.post("/tokenize", json={"messages": PREFILL, "add_generation_prompt": False}).json()
    closed = http.post("/detokenize", json={"tokens": tok2["tokens"]}).json()["prompt"]
    assert closed.endswith("The answer is<|im_end|>\n")
    r = client.chat.completions.create(model="tiny", messages=PREFILL, max_tokens=2,
                                       extra_body={"add_generation_prompt": False})
    assert r.usage.prompt_tokens == tok2["count"]


def test_message_orders_the_template_renders(client, http):
    """Consecutive messages of a role, a system message after the first turn and custom roles
    (which the Qwen3 template drops) are accepted, as vLLM passes them to the template; the
    prompts are byte for byte the template's (tests/golden/chat)."""
    def count(msgs):
        return http.post("/tokenize", json={"messages": msgs}).json()["count"]
    u, a = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}
    for msgs in ([u, u], [a, u], [u, a, a, u], [u, a, {"role": "system", "content": "Be brief."}, u],
                 [u, {"role": "critic", "content": "x"}, u]):
        r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=1)
        assert r.usage.prompt_tokens == count(msgs)
    assert count([u, {"role": "critic", "content": "x"}, u]) == count([u, u])


# ---- routes ----

def test_routes(server, http):
    assert http.get("/version").json()["version"]
    assert http.get("/ping").status_code == 200
    assert http.post("/ping").status_code == 200
    m = http.get("/v1/models/tiny").json()
    assert m["id"] == "tiny" and m["object"] == "model"
    r = http.get("/v1/models/nope")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    assert httpx.get(server.url + "/v1/models/tiny").status_code == 401  # under /v1/: the key
    chat = http.post("/invocations", json={"messages": MSG, "max_tokens": 2})
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion"
    cmpl = http.post("/invocations", json={"prompt": "hi", "max_tokens": 2})
    assert cmpl.status_code == 200 and cmpl.json()["object"] == "text_completion"
    bad = http.post("/invocations", json={"max_tokens": 2})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "prompt"


def test_tokenizer_info(http):
    info = http.get("/tokenizer_info").json()
    assert info["eos_token"] == "<|im_end|>" and info["model_max_length"] == 2048


def test_request_id_echoed(http):
    r = http.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG, "max_tokens": 1},
                  headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert "x-request-id" not in http.get("/health").headers
    with http.stream("POST", "/v1/completions", headers={"X-Request-Id": "s-1"},
                     json={"model": "tiny", "prompt": "hi", "max_tokens": 2, "stream": True}) as s:
        assert s.headers["x-request-id"] == "s-1"
        s.read()
    r = http.get("/v1/models/nope", headers={"X-Request-Id": "e-1"})
    assert r.headers["x-request-id"] == "e-1"


# ---- on the scripted decoder: stop_reason, reasoning, include_reasoning ----

from test_scripted import THINK, ask, sclient, scripted  # noqa: E402,F401  (its fixtures)


def test_stop_reason(sclient):
    r = ask(sclient, THINK)
    assert r.choices[0].model_extra["stop_reason"] is None  # EOS
    r = ask(sclient, THINK, stop=["Hello"])
    assert r.choices[0].model_extra["stop_reason"] == "Hello"
    r = ask(sclient, {**THINK, "stop_token_ids": [9707]})  # "Hello"
    assert r.choices[0].model_extra["stop_reason"] == 9707
    assert r.choices[0].finish_reason == "stop"
    r = ask(sclient, THINK, max_tokens=2)
    assert r.choices[0].model_extra["stop_reason"] is None
    last = [c for c in ask(sclient, THINK, stop=["Hello"], stream=True) if c.choices][-1]
    assert last.choices[0].model_extra["stop_reason"] == "Hello"


def test_reasoning_under_both_names(sclient):
    msg = ask(sclient, THINK).choices[0].message
    assert msg.model_extra["reasoning"] == msg.model_extra["reasoning_content"] == "Let me check."
    got = ""
    for c in ask(sclient, THINK, stream=True):
        if c.choices:
            got += c.choices[0].delta.model_extra.get("reasoning") or ""
    assert got == "Let me check."


def test_include_reasoning_false(sclient):
    r = ask(sclient, {**THINK, "include_reasoning": False})
    msg = r.choices[0].message
    assert msg.content == "Hello!"
    assert "reasoning" not in (msg.model_extra or {})
    for c in ask(sclient, {**THINK, "include_reasoning": False}, stream=True):
        if c.choices:
            assert not c.choices[0].delta.model_extra.get("reasoning")


# ---- prompt logprobs across prefill chunks and head passes ----

@pytest.fixture(scope="module")
def chunked(model_dir):
    """Small steps: a long prompt is prefilled in several chunks, and each chunk's prompt
    positions take several passes of the head (max_logit_rows = max_num_seqs = 8)."""
    from conftest import Server
    s = Server(model_dir, ["--api-key", API_KEY, "--max-num-batched-tokens", "48",
                           "--max-num-seqs", "8"])
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


def test_prompt_logprobs_over_chunks(chunked, client):
    from openai import OpenAI
    small = OpenAI(base_url=chunked.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
    ids = [(i * 7919) % 5000 + 100 for i in range(150)]
    def lp(c, p):
        r = c.completions.create(model="tiny", prompt=p, max_tokens=0, echo=True, logprobs=3,
                                 temperature=0)
        return r.choices[0].logprobs
    whole = lp(small, ids)
    half = lp(small, ids[:70])
    ref = lp(client, ids)  # the default server: one chunk, one head pass
    assert len(whole.token_logprobs) == 150
    for a, b in zip(whole.token_logprobs[1:70], half.token_logprobs[1:]):  # causal: a prefix
        assert math.isclose(a, b, abs_tol=1e-4)
    for a, b in zip(whole.token_logprobs[1:], ref.token_logprobs[1:]):
        assert math.isclose(a, b, abs_tol=1e-3)
    assert whole.top_logprobs[1:] and all(len(t) == 3 for t in whole.top_logprobs[1:])


def test_invocations_big_body(http):
    r = http.post("/invocations", json={"messages": MSG, "max_tokens": 1, "pad": "p" * 100000})
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    r = http.post("/invocations", json={"prompt": "hi", "max_tokens": 1, "pad": "p" * 100000})
    assert r.status_code == 200 and r.json()["object"] == "text_completion"
