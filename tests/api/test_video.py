"""Video input: video_url parts (http, data:, local files), per-request frame options, the
prompt token count through the openai SDK, and a table of bad videos (each a clear 400/413
with an OpenAI error body, the server healthy afterwards).

Clips are made with the ffmpeg CLI and served from 127.0.0.1 (allowed with --fetch-allow
127.0.0.1/32). The frame indices and pixels themselves are checked in tests/unit/test_video.c.
"""

import base64
import os

import pytest

from conftest import API_KEY, data_url, png_bytes
from videoutil import (expect_error, http_client, image_msgs,
                       start_server, stop_server, video_msgs)


@pytest.fixture(scope="module")
def vserver(model_dir, clips):
    s = start_server(model_dir, "--fetch-allow", "127.0.0.1/32", "--allow-local-media-dir",
                     str(clips), "--max-body-bytes", "8MiB")
    yield s
    stop_server(s)


@pytest.fixture()
def vhttp(vserver):
    with http_client(vserver) as c:
        yield c


def count(c, messages, **extra):
    r = c.post("/tokenize", json={"model": "tiny", "messages": messages, **extra})
    assert r.status_code == 200, r.text
    return r.json()["count"]


def chat(c, messages, **extra):
    return c.post("/v1/chat/completions",
                  json={"model": "tiny", "messages": messages, "max_tokens": 2, **extra})


def frame_cost(c):
    """Tokens one 64x48 frame adds: its placeholders plus its <image> marker text."""
    png = data_url(png_bytes(64, 48))
    return count(c, image_msgs(png, png)) - count(c, image_msgs(png))


def test_openai_sdk_prompt_tokens(vserver, vhttp, media):
    from openai import OpenAI
    client = OpenAI(base_url=vserver.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
    msgs = video_msgs(media + "/v/clip.mp4")
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason in ("length", "stop")
    assert r.usage.prompt_tokens == count(vhttp, msgs)
    # the same count computed from the grids: 8 sampled frames (the default) of 64x48, each
    # as many tokens as a 64x48 image, so 8 frames cost 4 more frames than 4 frames
    four = count(vhttp, video_msgs(media + "/v/clip.mp4", num_frames=4))
    assert r.usage.prompt_tokens - four == 4 * frame_cost(vhttp)


def test_frame_options(vhttp, media):
    url = media + "/v/clip.mp4"  # 2 s, 20 frames
    per = frame_cost(vhttp)
    base = count(vhttp, video_msgs(url, num_frames=1))
    n = lambda msgs, **kw: (count(vhttp, msgs, **kw) - base) // per + 1  # noqa: E731
    assert n(video_msgs(url, num_frames=5)) == 5
    assert n(video_msgs(url), mm_processor_kwargs={"num_frames": 3}) == 3
    # fps: round(2 s * 2.5) = 5 frames; the part's options win over mm_processor_kwargs
    assert n(video_msgs(url, fps=2.5)) == 5
    assert n(video_msgs(url), mm_processor_kwargs={"fps": 1.0}) == 2
    assert n(video_msgs(url, num_frames=6), mm_processor_kwargs={"num_frames": 2}) == 6
    # a count derived from fps is capped at --video-max-frames (16)
    assert n(video_msgs(url, fps=100)) == 16
    # explicit num_frames over the cap, and malformed values: 400 naming the field
    e = expect_error(chat(vhttp, video_msgs(url, num_frames=17)), (400,), "limit of 16")
    e = expect_error(chat(vhttp, video_msgs(url, num_frames=0)), (400,), "num_frames")
    assert e["param"] == "messages[0].content[0].video_url.num_frames", e
    expect_error(chat(vhttp, video_msgs(url, fps="fast")), (400,), "fps")
    expect_error(chat(vhttp, video_msgs(url), mm_processor_kwargs={"num_frames": 2.5}), (400,),
                 "mm_processor_kwargs.num_frames")
    expect_error(chat(vhttp, video_msgs(url), mm_processor_kwargs={"fps": -1}), (400,),
                 "mm_processor_kwargs.fps")


def test_containers_and_sources(vhttp, media, clips):
    mp4 = count(vhttp, video_msgs(media + "/v/clip.mp4"))
    # a data: URL and a local file give exactly the same prompt as the http URL
    b64 = base64.b64encode((clips / "clip.mp4").read_bytes()).decode()
    assert count(vhttp, video_msgs("data:video/mp4;base64," + b64)) == mp4
    assert count(vhttp, video_msgs(f"file://{clips}/clip.mp4")) == mp4
    assert count(vhttp, video_msgs(str(clips / "clip.mp4"))) == mp4
    assert count(vhttp, video_msgs("clip.mp4")) == mp4  # relative to the media directory
    for name in ("clip.webm", "one.mkv"):
        r = chat(vhttp, video_msgs(media + "/v/" + name))
        assert r.status_code == 200, (name, r.text)


def test_local_paths_confined(vhttp, clips, tmp_path):
    outside = tmp_path / "outside.mp4"
    outside.write_bytes((clips / "clip.mp4").read_bytes())
    link = clips / "link-out.mp4"
    if not link.exists():
        os.symlink(outside, link)
    for url in (str(outside), f"file://{outside}", "../" + outside.name,
                f"{clips}/../{clips.name}/../{outside.parent.name}/{outside.name}",
                str(link), "link-out.mp4", "/etc/passwd", "file:///etc/passwd", "/dev/zero",
                str(clips), "missing.mp4", "file://other-host/clip.mp4"):
        e = expect_error(chat(vhttp, video_msgs(url)), (400,))
        assert e["param"] == "messages.video[0]", (url, e)
    r = chat(vhttp, video_msgs("clip.mp4"))
    assert r.status_code == 200, r.text


def test_local_paths_off_by_default(model_dir, clips):
    s = start_server(model_dir)
    try:
        with http_client(s) as c:
            expect_error(chat(c, video_msgs(str(clips / "clip.mp4"))), (400,),
                         "--allow-local-media-dir")
            expect_error(chat(c, video_msgs(f"file://{clips}/clip.mp4")), (400,),
                         "--allow-local-media-dir")
    finally:
        stop_server(s)


# (clip, statuses, words in the message)
BAD_VIDEOS = [
    ("not-video.txt", (400,), ["not a video"]),
    ("truncated.mp4", (400,), []),
    ("audio.m4a", (400,), ["no video stream"]),
    ("long.mp4", (413,), ["second limit"]),
    ("huge.mkv", (413,), ["pixel limit"]),
]


def test_bad_videos(vhttp, media, clips):
    for name, statuses, words in BAD_VIDEOS:
        for url in (media + "/v/" + name, name):  # over http and as a local file
            e = expect_error(chat(vhttp, video_msgs(url)), statuses, *words)
            assert e["param"] == "messages.video[0]", (name, e)
    b64 = base64.b64encode(b"\0\0\0\x18ftypmp42" + b"\0" * 64).decode()
    expect_error(chat(vhttp, video_msgs("data:video/mp4;base64," + b64)), (400,))
    expect_error(chat(vhttp, video_msgs("data:video/mp4;base64,@@@")), (400,))
    assert vhttp.get("/health").status_code == 200
    r = chat(vhttp, video_msgs(media + "/v/clip.mp4"))
    assert r.status_code == 200, r.text
