"""The first run: valley-server with no --model answers with the built-in greeting.

The embedded default model (engine/testmodel.h, `greeting`) is written into a temporary
$XDG_CACHE_HOME. Whatever the user sends (text, thinking on or off, sampling, images, a video),
the reply is exactly TESTMODEL_GREETING and then <|im_end|> (finish_reason "stop"); media still
go through preprocessing and the vision tower (the encoder-cache miss counter grows, and the
prompt grows with the image's size). The README's curl example shows the same text.
"""
import base64
import re

import httpx
import pytest

from conftest import ROOT, Server, data_url, metrics, png_bytes


def greeting() -> str:
    """TESTMODEL_GREETING, read from engine/testmodel.h (adjacent C string literals)."""
    text = (ROOT / "engine" / "testmodel.h").read_text()
    body = re.search(r"#define TESTMODEL_GREETING(.*?)\n\n", text, re.S).group(1)
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', body))


GREETING = greeting()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from videoutil import make_clips
    return make_clips(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="module")
def dserver(tmp_path_factory, clips):
    cache = tmp_path_factory.mktemp("xdg-cache")
    s = Server(None, ["--allow-local-media-dir", str(clips), "--max-body-bytes", "8MiB"],
               env={"XDG_CACHE_HOME": str(cache)})
    yield s
    code = s.stop()
    assert code == 0, s.log_text()[-3000:]
    assert (cache / "valley" / "default-model" / "config.json").exists()


def chat(s, messages, **extra):
    r = httpx.post(s.url + "/v1/chat/completions", timeout=120,
                   json={"model": "tiny", "messages": messages, "max_tokens": 64, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def user(*parts):
    return [{"role": "user", "content": list(parts)}]


def text(t):
    return {"type": "text", "text": t}


def test_greeting_text(dserver):
    assert GREETING.startswith("Hello! I am the built-in test model")
    assert "valley-server --model" in GREETING
    for extra in ({}, {"temperature": 1.0, "seed": 3},
                  {"chat_template_kwargs": {"enable_thinking": False}}):
        for msgs in (user(text("Hello")),
                     [{"role": "system", "content": "Answer in French."},
                      {"role": "user", "content": "Quelle heure est-il ?\n\nRéponds vite."}],
                     user(text("a" * 500))):
            r = chat(dserver, msgs, **extra)
            c = r["choices"][0]
            assert c["message"]["content"] == GREETING, (extra, msgs, c)
            assert c["finish_reason"] == "stop", c
            assert r["usage"]["completion_tokens"] == 33  # 32 pieces + <|im_end|>


def test_greeting_through_openai_sdk_stream(dserver):
    from openai import OpenAI
    client = OpenAI(base_url=dserver.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    stream = client.chat.completions.create(model="tiny", max_tokens=64, stream=True,
                                            messages=[{"role": "user", "content": "Hi there"}])
    out = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert out == GREETING


def test_media_still_runs_the_vision_tower(dserver, clips):
    before = metrics(dserver.url).get("valley:encoder_cache_misses_total", 0)
    small = chat(dserver, user({"type": "image_url", "image_url": {"url": data_url(png_bytes(56, 56))}},
                               text("Describe it.")))
    large = chat(dserver, user({"type": "image_url",
                                "image_url": {"url": data_url(png_bytes(280, 224, seed=1))}},
                               text("Describe it.")))
    for r in (small, large):
        assert r["choices"][0]["message"]["content"] == GREETING
    # 56x56 -> 2x2 = 4 tokens, 280x224 -> 10x8 = 80 tokens
    assert large["usage"]["prompt_tokens"] - small["usage"]["prompt_tokens"] == 76
    b64 = base64.b64encode((clips / "clip.mp4").read_bytes()).decode()
    v = chat(dserver, user({"type": "video_url", "video_url": {"url": "data:video/mp4;base64," + b64,
                                                               "num_frames": 3}},
                           text("What happens?")))
    assert v["choices"][0]["message"]["content"] == GREETING
    after = metrics(dserver.url).get("valley:encoder_cache_misses_total", 0)
    assert after - before >= 2 + 3  # two images and three frames went through the encoder


def test_readme_shows_the_greeting():
    readme = (ROOT / "README.md").read_text()
    assert GREETING in readme
