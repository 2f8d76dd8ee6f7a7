"""Streaming: OpenAI's chunk invariants, checked chunk by chunk (sync, async and raw SSE)."""

import asyncio
import json

MSG = [{"role": "user", "content": "Write a poem about the sea."}]


def check_stream(chunks, n=1, usage=False):
    """The invariants of issue 6 item 4; returns (texts per choice, usage chunk or None)."""
    assert chunks, "no chunks"
    ids = {c.id for c in chunks}
    assert len(ids) == 1, "every chunk carries the same id"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    texts = [""] * n
    first_seen = [False] * n
    finished = [False] * n
    usage_chunk = None
    for c in chunks:
        if not c.choices:
            assert usage and usage_chunk is None, "a choices-less chunk only for usage, once"
            assert all(finished), "usage comes after every choice finished"
            usage_chunk = c
            continue
        assert usage_chunk is None, "nothing after the usage chunk"
        assert len(c.choices) == 1
        ch = c.choices[0]
        i = ch.index
        assert not finished[i], "nothing for a choice after its finish_reason"
        if not first_seen[i]:
            assert ch.delta.role == "assistant", "the first chunk carries the role"
            first_seen[i] = True
        else:
            assert ch.delta.role is None
        if ch.delta.content:
            texts[i] += ch.delta.content
        if ch.finish_reason is not None:
            assert ch.finish_reason in ("stop", "length")
            finished[i] = True
    assert all(finished), "the last chunk of every choice has a finish_reason"
    if usage:
        assert usage_chunk is not None and usage_chunk.usage is not None
    return texts, usage_chunk


def test_stream_matches_non_stream(client):
    ref = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=MSG, max_tokens=20,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    texts, u = check_stream(chunks, usage=True)
    assert texts[0] == ref.choices[0].message.content
    assert u.usage.prompt_tokens == ref.usage.prompt_tokens
    assert u.usage.completion_tokens == ref.usage.completion_tokens


def test_stream_no_usage_by_default(client):
    chunks = list(client.chat.completions.create(model="tiny", messages=MSG, max_tokens=4,
                                                 stream=True))
    check_stream(chunks, usage=False)
    assert all(c.usage is None for c in chunks)


def test_stream_n2_and_stop(client):
    ref = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=24, temperature=0)
    full = ref.choices[0].message.content
    stop = full[5:8]
    chunks = list(client.chat.completions.create(model="tiny", messages=MSG, max_tokens=24,
                                                 temperature=0, stream=True, n=2, stop=[stop],
                                                 stream_options={"include_usage": True}))
    texts, u = check_stream(chunks, n=2, usage=True)
    assert texts == [full[:full.find(stop)]] * 2
    assert u.usage.completion_tokens < 48


def test_stream_async(aclient):
    async def one():
        s = await aclient.chat.completions.create(model="tiny", messages=MSG, max_tokens=12,
                                                  temperature=0, stream=True)
        return [c async for c in s]

    async def run():
        return await asyncio.gather(*[one() for _ in range(6)])

    results = asyncio.run(run())
    texts = [check_stream(r)[0][0] for r in results]
    assert len(set(texts)) == 1


def test_stream_logprobs(client):
    chunks = list(client.chat.completions.create(model="tiny", messages=MSG, max_tokens=6,
                                                 temperature=0, stream=True, logprobs=True,
                                                 top_logprobs=2,
                                                 stream_options={"include_usage": True}))
    _, u = check_stream(chunks, usage=True)
    entries = [e for c in chunks if c.choices and c.choices[0].logprobs
               for e in c.choices[0].logprobs.content]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(entries) == u.usage.completion_tokens - (1 if finish == ["stop"] else 0)
    assert all(len(e.top_logprobs) == 2 for e in entries)


def test_raw_sse_framing(http):
    with http.stream("POST", "/v1/chat/completions",
                     json={"model": "tiny", "messages": MSG, "max_tokens": 3, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        body = r.read().decode()
    events = [e for e in body.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        json.loads(e[len("data: "):])


def test_completions_stream(client):
    chunks = list(client.completions.create(model="tiny", prompt="Hello there", max_tokens=5,
                                            temperature=0, stream=True))
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    ref = client.completions.create(model="tiny", prompt="Hello there", max_tokens=5, temperature=0)
    assert "".join(c.choices[0].text for c in chunks) == ref.choices[0].text
