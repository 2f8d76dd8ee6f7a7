"""Cost before work: an image's tokens are counted from its header (size -> the two resize
stages -> tokens), a video's from its container's headers (frame size and duration -> frames
sampled -> the same stages, per frame), and the request refused before any pixel is decoded
when it passes the context, the per-request media limits or the decode memory budget. RSS is
read from /proc/<pid>/status; decoded video frames are counted in /metrics."""

import base64
import struct
import time
import zlib

import httpx
import pytest

from conftest import API_KEY, Server, png_bytes
from test_protocol import rss_kib


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose IHDR says w x h, with one deflated row of data: a few hundred bytes that
    claim w * h pixels (what a decompression bomb looks like from its header)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    row = zlib.compress(b"\0" * (1 + 3 * w), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", row) + chunk(b"IEND", b""))


def png_full(w: int, h: int) -> bytes:
    """A complete, valid w x h black PNG (zeros deflate about 1000:1)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    z = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * w)
    data = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def url_of(png: bytes, mime="image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(png).decode()


def chat(urls, **kw):
    content = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    content.append({"type": "text", "text": "what is this?"})
    b = {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 2}
    b.update(kw)
    return b


@pytest.fixture(scope="module")
def srv(model_dir):
    s = Server(model_dir, ["--api-key", API_KEY, "--max-body-bytes", "64MiB",
                           "--max-images-per-request", "16", "--max-model-len", "32768",
                           "--max-media-tokens-per-request", "4096",
                           "--max-videos-per-request", "1",
                           "--max-inflight-media-bytes", "512MiB"])
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


@pytest.fixture()
def http(srv):
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {API_KEY}"},
                      timeout=120) as c:
        yield c


def refused_without_growth(srv, http, path, body, want):
    pid = srv.proc.pid
    before = rss_kib(pid)
    t0 = time.time()
    r = http.post(path, json=body)
    took = time.time() - t0
    grew = rss_kib(pid) - before
    assert r.status_code == 400, r.text
    assert want in r.json()["error"]["message"], r.text
    assert grew < 50 * 1024, f"RSS grew {grew} KiB"
    return took


def test_9000x9000_refused_before_decoding(srv, http):
    """A complete 9000x9000 PNG (243 MB of pixels, 16384 tokens) over the 4096-token
    per-request limit: 400 before it is decoded."""
    png = png_full(9000, 9000)
    assert len(png) < 400_000
    for path in ("/v1/chat/completions", "/tokenize"):
        refused_without_growth(srv, http, path, chat([url_of(png, "image/jpeg")]),
                               "media tokens per request")


def test_16_images_refused_before_decoding(srv, http):
    """16 bombs in one small body: refused from their headers, nothing decoded."""
    png = png_header_only(9000, 9000)
    body = chat([url_of(png)] * 16)
    assert len(str(body)) < 100_000
    refused_without_growth(srv, http, "/v1/chat/completions", body, "tokens")


def test_context_from_headers(model_dir):
    """Images whose tokens alone pass max_model_len: the context-length 400, before
    decoding."""
    s = Server(model_dir, ["--max-model-len", "2048", "--max-images-per-request", "16"])
    try:
        r = httpx.post(s.url + "/v1/chat/completions", timeout=60,
                       json=chat([url_of(png_header_only(2000, 2000))]))
        assert r.status_code == 400, r.text
        e = r.json()["error"]
        assert e["code"] == "context_length_exceeded" and "maximum context length" in e["message"]
    finally:
        assert s.stop() == 0


def test_media_token_limit_counts_exactly(srv, http):
    """56x56 -> 4 tokens ... 1792x1792 -> 4096 tokens: exactly the limit passes; one more
    image passes it."""
    big = png_header_only(1792, 1792)  # 64 x 64 patches of 28 -> 4096 tokens
    r = http.post("/v1/chat/completions", json=chat([url_of(big), url_of(png_bytes(56, 56))]))
    assert r.status_code == 400 and "4100 tokens" in r.json()["error"]["message"], r.text
    r = http.post("/v1/chat/completions", json=chat([url_of(png_bytes(56, 56))] * 4))
    assert r.status_code == 200, r.text


def test_video_count_limit(srv, http):
    content = [{"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}] * 2
    content.append({"type": "text", "text": "x"})
    r = http.post("/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 2})
    assert r.status_code == 400
    assert "at most 1 videos" in r.json()["error"]["message"], r.text


def test_decode_budget(model_dir):
    """An image whose decode alone needs more than --max-inflight-media-bytes: 400 naming
    the option; a small one passes."""
    s = Server(model_dir, ["--max-inflight-media-bytes", "8MiB", "--max-model-len", "8192",
                           "--max-media-tokens-per-request", "8192"])
    try:
        r = httpx.post(s.url + "/v1/chat/completions", timeout=60,
                       json=chat([url_of(png_header_only(1400, 1400))]))
        assert r.status_code == 400, r.text
        assert "--max-inflight-media-bytes" in r.json()["error"]["message"]
        r = httpx.post(s.url + "/v1/chat/completions", timeout=60,
                       json=chat([url_of(png_bytes(64, 64))]))
        assert r.status_code == 200, r.text
    finally:
        assert s.stop() == 0


# ---- videos: counted from the container's headers before a frame is decoded ----------------
# A 640x480 frame passes both resize stages as 644x476: 46 x 34 patches of 14, 391 tokens.
# Each sampled frame counts like an image, so num_frames N costs 391 N tokens.

FRAME_TOKENS = 391


@pytest.fixture(scope="module")
def vga_media(tmp_path_factory):
    """A 4 s 640x480 H.264 clip (one keyframe, so sampled frames decode from the start) served
    by a loopback http.server."""
    import shutil
    import subprocess
    from videoutil import start_media_server
    if not shutil.which("ffmpeg"):
        pytest.skip("the ffmpeg CLI is not installed")
    d = tmp_path_factory.mktemp("vga")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=640x480:rate=25:duration=4", "-c:v", "libx264", "-preset",
                    "ultrafast", "-g", "1000", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
                    str(d / "vga.mp4")], check=True, timeout=300)
    url, shutdown = start_media_server(d)
    yield url + "/v/vga.mp4"
    shutdown()


def video_body(url, num_frames):
    return {"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": url, "num_frames": num_frames}},
        {"type": "text", "text": "what happens?"}]}]}


def metric(http, name):
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics")


@pytest.fixture(scope="module")
def vsrv(model_dir):
    s = Server(model_dir, ["--api-key", API_KEY, "--fetch-allow", "127.0.0.1/32",
                           "--max-model-len", "2048", "--max-media-tokens-per-request", "4096",
                           "--max-images-per-request", "12", "--video-max-frames", "32"])
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


@pytest.fixture()
def vhttp(vsrv):
    with httpx.Client(base_url=vsrv.url, headers={"Authorization": f"Bearer {API_KEY}"},
                      timeout=120) as c:
        yield c


def test_video_refused_from_headers(vsrv, vhttp, vga_media):
    """Over the frames-per-request limit (16 > 12), the media-token limit (12 x 391 = 4692 >
    4096) or the context (8 x 391 = 3128 > 2048): 400 with not one frame decoded, on
    /v1/chat/completions and /tokenize alike; RSS does not grow."""
    decoded = metric(vhttp, "valley:video_frames_decoded_total")
    pid = vsrv.proc.pid
    before = rss_kib(pid)
    for path in ("/v1/chat/completions", "/tokenize"):
        r = vhttp.post(path, json=video_body(vga_media, 16))
        assert r.status_code == 400 and "at most 12 images and video frames" in r.text, r.text
        r = vhttp.post(path, json=video_body(vga_media, 12))
        assert r.status_code == 400, r.text
        assert f"{12 * FRAME_TOKENS} tokens" in r.text and "media tokens per request" in r.text
        r = vhttp.post(path, json=video_body(vga_media, 8))
        assert r.status_code == 400, r.text
        e = r.json()["error"]
        assert e["code"] == "context_length_exceeded", e
        assert f"alone take {8 * FRAME_TOKENS} tokens" in e["message"], e
    assert metric(vhttp, "valley:video_frames_decoded_total") == decoded
    assert rss_kib(pid) - before < 50 * 1024
    # the counter does count: two frames fit, are decoded, and cost what the headers said
    r = vhttp.post("/tokenize", json=video_body(vga_media, 2))
    assert r.status_code == 200, r.text
    assert metric(vhttp, "valley:video_frames_decoded_total") >= decoded + 2
    r = vhttp.post("/v1/chat/completions", json=video_body(vga_media, 2))
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] > 2 * FRAME_TOKENS


def test_inflight_media_budget_answers_503(model_dir, vga_media):
    """--max-inflight-media-bytes: while one request holds most of the budget (32 frames
    being decoded and preprocessed, about 320 MB), a second that needs as much gets 503 +
    Retry-After (--max-inflight-media-wait 0: no waiting); once the first is done the budget
    is empty again and the second passes."""
    import threading
    s = Server(model_dir, ["--api-key", API_KEY, "--fetch-allow", "127.0.0.1/32",
                           "--max-model-len", "32768", "--max-images-per-request", "32",
                           "--max-inflight-media-bytes", "400MiB",
                           "--max-inflight-media-wait", "0"])
    try:
        with httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {API_KEY}"},
                          timeout=300) as c:
            assert metric(c, "valley:media_inflight_bytes") == 0
            first = {}
            t = threading.Thread(target=lambda: first.update(
                r=c.post("/tokenize", json=video_body(vga_media, 32))))
            t.start()
            held = 0
            deadline = time.time() + 120
            while not held and t.is_alive() and time.time() < deadline:
                held = metric(c, "valley:media_inflight_bytes")
            assert held > 200 << 20, "the first request never held the budget"
            r = c.post("/tokenize", json=video_body(vga_media, 32))
            t.join()
            assert first["r"].status_code == 200, first["r"].text
            assert r.status_code == 503, r.text
            assert r.headers.get("retry-after") == "1"
            assert "busy" in r.json()["error"]["message"], r.text
            assert metric(c, "valley:media_inflight_bytes") == 0
            r = c.post("/tokenize", json=video_body(vga_media, 32))
            assert r.status_code == 200, r.text
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]
