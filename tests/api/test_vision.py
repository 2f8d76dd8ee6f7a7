"""Images: data URLs, several images, http URLs from a local server; usage counts the image
tokens exactly (compared with POST /tokenize on the same messages)."""

import asyncio

from conftest import data_url, png_bytes


def parts(*urls, text="Describe the images."):
    return [{"role": "user", "content": [*({"type": "image_url", "image_url": {"url": u}}
                                           for u in urls), {"type": "text", "text": text}]}]


def tokenize(http, messages):
    r = http.post("/tokenize", json={"model": "tiny", "messages": messages})
    assert r.status_code == 200, r.text
    return r.json()


def test_data_url_image(client, http):
    msgs = parts(data_url(png_bytes(64, 64, seed=1)))
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=4, temperature=0)
    t = tokenize(http, msgs)
    assert r.usage.prompt_tokens == t["count"]
    # 64x64 -> smart_resize 56x56 -> 4x4 patches -> 2x2 merged = 4 image tokens; the text-only
    # request has the implicit 3x3 image (also 4 tokens), so the counts agree, and a bigger
    # image adds exactly its extra tokens: 112x112 -> 8x8 patches -> 16 tokens.
    text_only = tokenize(http, [{"role": "user", "content": "Describe the images."}])
    assert t["count"] == text_only["count"]
    big = tokenize(http, parts(data_url(png_bytes(112, 112, seed=2))))
    assert big["count"] == t["count"] + 12


def test_three_images(client, http):
    urls = [data_url(png_bytes(56 * (i + 1), 56, seed=i)) for i in range(3)]
    msgs = parts(*urls)
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=4, temperature=0)
    t = tokenize(http, msgs)
    assert r.usage.prompt_tokens == t["count"]
    one = tokenize(http, parts(urls[0]))
    # images 2 and 3 add 2x1 and 3x1 merged tokens... (56*(i+1) x 56 -> (i+1)*2 x 2 patches)
    # plus one "<image>" marker and a space each in the text
    assert t["count"] > one["count"] + 2 + 3


def test_same_image_twice_is_deterministic(aclient):
    url = data_url(png_bytes(80, 60, seed=5))

    async def run():
        rs = await asyncio.gather(*[
            aclient.chat.completions.create(model="tiny", messages=parts(url), max_tokens=6,
                                            temperature=0) for _ in range(3)])
        return {r.choices[0].message.content for r in rs}

    assert len(asyncio.run(run())) == 1


def test_http_image_url(client, http, media_server):
    msgs_http = parts(media_server + "/img.png")
    r = client.chat.completions.create(model="tiny", messages=msgs_http, max_tokens=6,
                                       temperature=0)
    # the same bytes inline give the same prompt and the same greedy output
    msgs_inline = parts(data_url(png_bytes(64, 48, seed=3)))
    r2 = client.chat.completions.create(model="tiny", messages=msgs_inline, max_tokens=6,
                                        temperature=0)
    assert r.usage.prompt_tokens == r2.usage.prompt_tokens == tokenize(http, msgs_http)["count"]
    assert r.choices[0].message.content == r2.choices[0].message.content
    # a redirect within the limit is followed
    r3 = client.chat.completions.create(model="tiny", messages=parts(media_server + "/redir"),
                                        max_tokens=6, temperature=0)
    assert r3.choices[0].message.content == r.choices[0].message.content


def test_image_changes_output(client):
    a = client.chat.completions.create(model="tiny", messages=parts(data_url(png_bytes(56, 56, 1))),
                                       max_tokens=8, temperature=0)
    b = client.chat.completions.create(model="tiny", messages=parts(data_url(png_bytes(56, 56, 9))),
                                       max_tokens=8, temperature=0)
    # different pixels, same prompt length: the vision path really feeds the decoder
    assert a.usage.prompt_tokens == b.usage.prompt_tokens
    assert a.choices[0].message.content != b.choices[0].message.content


def test_stream_with_image(client):
    chunks = list(client.chat.completions.create(
        model="tiny", messages=parts(data_url(png_bytes(60, 40))), max_tokens=5, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens <= 5


def test_big_inline_image(client, http):
    """A body over 64 KiB (parsed by a worker): a 200x200 noisy PNG."""
    import random
    import struct
    import zlib
    rnd = random.Random(1)
    raw = b"".join(b"\0" + bytes(rnd.getrandbits(8) for _ in range(600)) for _ in range(200))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 200, 200, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    assert len(png) > 100000
    msgs = parts(data_url(png))
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=3)
    assert r.usage.prompt_tokens == tokenize(http, msgs)["count"]


def make_video(tmp_path):
    import shutil
    import subprocess
    if not shutil.which("ffmpeg"):
        import pytest
        pytest.skip("no ffmpeg command to make a test video")
    out = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=10", "-t", "2", "-c:v", "mpeg4", "-y", str(out)],
                   check=True, timeout=60)
    return out.read_bytes()


def test_video_data_url(client, http, tmp_path):
    import base64
    clip = make_video(tmp_path)
    url = "data:video/mp4;base64," + base64.b64encode(clip).decode()
    msgs = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                         {"type": "text", "text": "What happens?"}]}]
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=4)
    t = tokenize(http, msgs)
    assert r.usage.prompt_tokens == t["count"]
    # 8 sampled frames (the default), each 64x48 -> 56x56 -> 4 tokens, each with its own
    # "<image>" marker; the text-only prompt has the implicit 4-token image instead
    text_only = tokenize(http, [{"role": "user", "content": "What happens?"}])
    assert t["count"] >= text_only["count"] - 4 + 8 * 4 + 7
    pad = max(set(t["tokens"]), key=t["tokens"].count)
    assert t["tokens"].count(pad) == 8 * 4
