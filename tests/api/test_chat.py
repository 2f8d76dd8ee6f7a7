"""Non-streaming chat and completions through the official openai package (sync and async)."""

import asyncio
import subprocess

import pytest

from conftest import binary

MSG = [{"role": "user", "content": "Tell me a story about a red fox."}]


def chat(client, **kw):
    kw.setdefault("model", "tiny")
    kw.setdefault("messages", MSG)
    kw.setdefault("max_tokens", 16)
    return client.chat.completions.create(**kw)


def test_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_chat_basic_shape(client):
    r = chat(client, temperature=0)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "tiny"
    assert isinstance(r.created, int)
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.index == 0
    assert c.message.role == "assistant"
    assert isinstance(c.message.content, str)
    assert c.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    if c.finish_reason == "length":
        assert r.usage.completion_tokens == 16


def test_chat_async(aclient):
    async def run():
        rs = await asyncio.gather(*[
            aclient.chat.completions.create(model="tiny", messages=MSG, max_tokens=8, temperature=0)
            for _ in range(4)])
        return [r.choices[0].message.content for r in rs]

    outs = asyncio.run(run())
    assert len(set(outs)) == 1  # greedy: the same text whatever shares the batch


def test_greedy_is_deterministic(client):
    a = chat(client, temperature=0, max_tokens=24)
    b = chat(client, temperature=0, max_tokens=24)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_seed_reproducible(client):
    a = chat(client, temperature=1.0, seed=1234, max_tokens=24)
    b = chat(client, temperature=1.0, seed=1234, max_tokens=24)
    c = chat(client, temperature=1.0, seed=999, max_tokens=24)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.choices[0].message.content != c.choices[0].message.content


def test_n3(client):
    r = chat(client, n=3, temperature=1.0, seed=7, max_tokens=12)
    assert [c.index for c in r.choices] == [0, 1, 2]
    texts = [c.message.content for c in r.choices]
    assert len(set(texts)) > 1  # each choice samples with its own seed
    # usage: the prompt once, the completions summed
    assert r.usage.completion_tokens == 3 * 12 or all(c.finish_reason for c in r.choices)
    single = chat(client, max_tokens=1)
    assert r.usage.prompt_tokens == single.usage.prompt_tokens


def test_stop_string(client):
    full = chat(client, temperature=0, max_tokens=32).choices[0].message.content
    assert len(full) >= 12, full
    stop = full[6:9]
    expect = full[:full.find(stop)]
    r = chat(client, temperature=0, max_tokens=32, stop=[stop])
    assert r.choices[0].message.content == expect
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < 32
    # a stop string given as a plain string, and one that never occurs
    r2 = chat(client, temperature=0, max_tokens=32, stop=stop)
    assert r2.choices[0].message.content == expect
    r3 = chat(client, temperature=0, max_tokens=32, stop=["\x01never\x02"])
    assert r3.choices[0].message.content == full


def test_logprobs(client):
    r = chat(client, temperature=0, max_tokens=8, logprobs=True, top_logprobs=3)
    c = r.choices[0]
    content = c.logprobs.content
    n_text_tokens = r.usage.completion_tokens - (1 if c.finish_reason == "stop" else 0)
    assert len(content) == n_text_tokens
    for e in content:
        assert e.logprob <= 0
        assert len(e.top_logprobs) == 3
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        # greedy without penalties picks the most likely token of the raw distribution
        assert e.token == e.top_logprobs[0].token
        assert abs(e.logprob - tops[0]) < 1e-4
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token or "\ufffd" in e.token
    assert "".join(e.token for e in content).startswith(c.message.content[:1])


def test_usage_matches_tokenize(client, http):
    r = chat(client, max_tokens=1)
    t = http.post("/tokenize", json={"model": "tiny", "messages": MSG}).json()
    assert r.usage.prompt_tokens == t["count"] == len(t["tokens"])
    d = http.post("/detokenize", json={"model": "tiny", "tokens": t["tokens"][:5]}).json()
    assert isinstance(d["prompt"], str) and d["prompt"]


def test_thinking_switch(client):
    on = chat(client, max_tokens=4, extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    off = chat(client, max_tokens=4, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    # thinking off appends "<think>\n\n</think>\n\n" (4 tokens) to the generation prompt
    assert off.usage.prompt_tokens == on.usage.prompt_tokens + 4
    # without thinking nothing goes to reasoning_content
    assert getattr(off.choices[0].message, "reasoning_content", None) in (None, "")


def test_completions(client):
    r = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=8,
                                  temperature=0, logprobs=2)
    assert r.object == "text_completion"
    assert r.id.startswith("cmpl-")
    c = r.choices[0]
    assert isinstance(c.text, str)
    assert len(c.logprobs.tokens) == len(c.logprobs.token_logprobs)
    assert all(len(t) <= 2 for t in c.logprobs.top_logprobs)
    assert r.usage.completion_tokens <= 8


def cli_generate(model_dir, prompt, *extra):
    exe = binary("valley-generate")
    out = subprocess.run([str(exe), "--model", str(model_dir), "--prompt", prompt,
                          "--max-tokens", "16", "--temperature", "0", "--think", *extra],
                         capture_output=True, timeout=300)
    if out.returncode != 0:
        pytest.skip(f"valley-generate failed: {out.stderr.decode()[-500:]}")
    text = out.stdout.decode("utf-8", "replace")
    return text[:-1] if text.endswith("\n") else text


@pytest.mark.parametrize("prompt", ["Tell me a story about a red fox.", "1 + 1 ="])
def test_greedy_equals_cli(client, model_dir, prompt):
    """Same engine, same tokens: HTTP greedy text == valley-generate's (thinking on in both)."""
    want = cli_generate(model_dir, prompt)
    r = chat(client, temperature=0, max_tokens=16, messages=[{"role": "user", "content": prompt}])
    assert r.choices[0].message.content == want


def test_greedy_equals_cli_with_image(client, model_dir, tmp_path):
    from conftest import data_url, png_bytes
    png = png_bytes(90, 60, seed=4)
    (tmp_path / "img.png").write_bytes(png)
    want = cli_generate(model_dir, "Describe it.", "--image", str(tmp_path / "img.png"))
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(png)}},
                                         {"type": "text", "text": "Describe it."}]}]
    r = chat(client, temperature=0, max_tokens=16, messages=msgs)
    assert r.choices[0].message.content == want


@pytest.mark.parametrize("with_image", [False, True])
def test_cli_tensor_parallel_equals_one_engine(model_dir, tmp_path, with_image):
    """valley-generate runs its steps on one engine or on a TP group, behind the same step
    interface: at --tensor-parallel-size 2 the greedy text is the single engine's (exact
    numerics, so the split reductions cannot round differently)."""
    from conftest import png_bytes
    extra = ["--numerics", "exact"]
    if with_image:
        (tmp_path / "img.png").write_bytes(png_bytes(90, 60, seed=4))
        extra += ["--image", str(tmp_path / "img.png")]
    texts = []
    for tp in ("1", "2"):
        out = subprocess.run([str(binary("valley-generate")), "--model", str(model_dir),
                              "--prompt", "Describe it.", "--max-tokens", "16",
                              "--temperature", "0", "--threads", "2",
                              "--tensor-parallel-size", tp, *extra],
                             capture_output=True, timeout=300)
        assert out.returncode == 0, out.stderr.decode()[-500:]
        texts.append(out.stdout.decode("utf-8", "replace"))
    assert texts[0].strip() and texts[0] == texts[1]
    bad = subprocess.run([str(binary("valley-generate")), "--model", str(model_dir),
                          "--prompt", "x", "--tensor-parallel-size", "3"],
                         capture_output=True, timeout=300)
    assert bad.returncode != 0 and b"--tensor-parallel-size 3 must divide" in bad.stderr


def test_cors(http):
    r = http.options("/v1/chat/completions", headers={
        "Origin": "http://example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "http://example.com"
    assert "POST" in r.headers["access-control-allow-methods"]
    r = http.get("/v1/models", headers={"Origin": "http://example.com"})
    assert r.headers["access-control-allow-origin"] == "http://example.com"


def test_ready_and_metrics(http):
    assert http.get("/ready").status_code == 200
    text = http.get("/metrics").text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:prefix_cache_queries_total",
                 "vllm:prefix_cache_hits_total", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total", "vllm:request_success_total",
                 "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_sum",
                 "valley:encoder_cache_hits_total", "valley:kv_blocks_used",
                 "valley:kv_blocks_total", "valley:requests_aborted_total"):
        assert name in text, name


def test_many_concurrent_short_requests(aclient):
    """Requests whose first step ends before the worker has returned: every answer still
    has all its choices (the resume of a step must not overtake the worker)."""
    async def one(i):
        return await aclient.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"q{i % 4}"}], max_tokens=1, n=2)

    async def run():
        return await asyncio.gather(*[one(i) for i in range(96)])

    for r in asyncio.run(run()):
        assert [c.index for c in r.choices] == [0, 1]
        assert r.usage.completion_tokens == 2


def test_server_seed_repeats_runs(model_dir):
    """--seed N: requests without a seed draw from (N, request id), so a restarted server that
    gets the same requests samples the same answers; another N samples others."""
    import httpx
    from conftest import Server

    def run(seed):
        s = Server(model_dir, ["--seed", str(seed)])
        try:
            out = []
            for _ in range(2):
                r = httpx.post(s.url + "/v1/chat/completions", timeout=120,
                               json={"model": "tiny", "messages": MSG, "max_tokens": 12,
                                     "temperature": 1.0})
                assert r.status_code == 200, r.text
                out.append(r.json()["choices"][0]["message"]["content"])
            return out
        finally:
            assert s.stop() == 0, s.log_text()[-3000:]

    a, b, c = run(5), run(5), run(6)
    assert a == b
    assert a[0] != a[1]  # two requests, two ids, two draws
    assert a != c
