"""Safe fetching of media URLs (server/fetch.c, libcurl), through video_url and image_url parts.

Two servers: "open" allows 127.0.0.1/32 explicitly (--fetch-allow), "strict" allows only the
host name "localhost", so a first hop to localhost passes while a redirect to 127.0.0.1 (and
any direct loopback URL) must be refused. Private and link-local URLs are refused by the
address check before any connection is made: no traffic leaves 127.0.0.1.
"""

import pytest

from videoutil import (HTTPS_ENV, closed_port, expect_error, http_client, image_msgs,
                       start_media_server,
                       start_server, stop_server, video_msgs)


@pytest.fixture(scope="module")
def open_server(model_dir):
    s = start_server(model_dir, "--fetch-allow", "127.0.0.1/32", "--fetch-max-redirects", "3")
    yield s
    stop_server(s)


@pytest.fixture(scope="module")
def strict_server(model_dir):
    s = start_server(model_dir, "--fetch-allow", "localhost")
    yield s
    stop_server(s)


def chat(s, messages):
    with http_client(s) as c:
        return c.post("/v1/chat/completions",
                      json={"model": "tiny", "messages": messages, "max_tokens": 2})


def healthy(s):
    with http_client(s) as c:
        assert c.get("/health").status_code == 200
        r = c.post("/v1/chat/completions", json={"model": "tiny", "max_tokens": 2, "messages": [
            {"role": "user", "content": "still there?"}]})
        assert r.status_code == 200, r.text


def test_fetch_ok_plain_redirect_and_chunked(open_server, media):
    for path in ("/v/clip.mp4", "/redir-video", "/chunked"):
        r = chat(open_server, video_msgs(media + path))
        assert r.status_code == 200, (path, r.text)


# (path or URL, statuses, words expected in the message)
BAD = [
    ("/missing.mp4", (400,), ["HTTP 404"]),
    ("CLOSED", (400,), ["connect"]),
    ("/stall", (400,), ["timed out"]),
    ("/trickle", (400,), ["timed out"]),
    ("/endless", (400, 413), ["larger than the limit"]),
    ("/loop", (400,), ["redirected more than 3 times"]),
    ("/to-private", (400,), ["private"]),
    ("/to-metadata", (400,), ["private"]),
    ("/to-ftp", (400,), ["scheme"]),
    ("http://10.0.0.1/clip.mp4", (400,), ["private", "10.0.0.1"]),
    ("http://10.255.0.7:8080/x.mp4", (400,), ["private"]),
    ("http://169.254.169.254/latest/meta-data/", (400,), ["private", "169.254.169.254"]),
    ("http://172.16.0.1/x.mp4", (400,), ["private"]),
    ("http://192.168.1.1/x.mp4", (400,), ["private"]),
    ("http://100.64.0.1/x.mp4", (400,), ["private"]),
    ("http://0.0.0.0/x.mp4", (400,), ["private"]),
    ("http://224.0.0.1/x.mp4", (400,), ["private"]),
    ("http://[fe80::1]/x.mp4", (400,), ["private"]),
    ("http://[fc00::1]/x.mp4", (400,), ["private"]),
    ("http://[::ffff:10.0.0.1]/x.mp4", (400,), ["private"]),
    ("https://10.0.0.1/x.mp4", (400,), ["private"]),
    ("https://[fe80::1]/x.mp4", (400,), ["private"]),
    ("ftp://127.0.0.1/x.mp4", (400,), ["scheme"]),
    ("gopher://127.0.0.1/x.mp4", (400,), ["scheme"]),
    ("http://user:pw@127.0.0.1/x.mp4", (400,), ["credentials"]),
    ("http://127.0.0.1:99999/x.mp4", (400,), []),
]


@pytest.mark.parametrize("kind", ["video", "image"])
def test_bad_urls(open_server, media, kind):
    port = closed_port()
    for target, statuses, words in BAD:
        url = (f"http://127.0.0.1:{port}/x.mp4" if target == "CLOSED"
               else media + target if target.startswith("/") else target)
        msgs = video_msgs(url) if kind == "video" else image_msgs(url)
        e = expect_error(chat(open_server, msgs), statuses, *words)
        assert e["param"] == f"messages.{kind}[0]", e
    healthy(open_server)


def test_redirect_to_loopback_refused(strict_server, media):
    port = media.rsplit(":", 1)[1]
    # direct loopback: refused by default
    expect_error(chat(strict_server, video_msgs(media + "/v/clip.mp4")), (400,), "private",
                 "127.0.0.1")
    # first hop allowed by name, the redirect's 127.0.0.1 is checked again and refused
    e = expect_error(chat(strict_server, video_msgs(f"http://localhost:{port}/to-loopback")),
                     (400,), "private")
    assert "127.0.0.1" in e["message"], e
    # the first hop itself works when it serves the clip
    r = chat(strict_server, video_msgs(f"http://localhost:{port}/v/clip.mp4"))
    assert r.status_code == 200, r.text
    healthy(strict_server)


def test_cidr_allow_list_is_exact(model_dir, media):
    # 127.0.0.2/32 does not cover 127.0.0.1: the clip is refused before connecting
    s = start_server(model_dir, "--fetch-allow", "127.0.0.2/32")
    try:
        expect_error(chat(s, video_msgs(media + "/v/clip.mp4")), (400,), "private")
        healthy(s)
    finally:
        stop_server(s)


# ---- https: libcurl (OpenSSL), every hop checked by fetch.c -----------------------------

@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    from videoutil import make_cert
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def smedia(clips, tls):
    url, shutdown = start_media_server(clips, tls_cert=tls)
    yield url
    shutdown()


def test_https_fetch_and_policy(model_dir, smedia, tls):
    cert = str(tls.parent / "cert.pem")
    port = smedia.rsplit(":", 1)[1]
    s = start_server(model_dir, "--fetch-allow", "127.0.0.1/32", "--fetch-ca-file", cert,
                     "--fetch-max-redirects", "3", env=HTTPS_ENV)
    try:
        for path in ("/v/clip.mp4", "/redir-video"):
            r = chat(s, video_msgs(smedia + path))
            assert r.status_code == 200, (path, r.text)
        expect_error(chat(s, video_msgs(smedia + "/missing.mp4")), (400,), "404")
        expect_error(chat(s, video_msgs(smedia + "/loop")), (400,), "redirects")
        # a redirect hop to a private address: refused by the hop check, never connected
        expect_error(chat(s, video_msgs(smedia + "/to-private-https")), (400,), "private",
                     "10.1.2.3")
        # https -> http downgrade and other schemes are not followed
        expect_error(chat(s, video_msgs(smedia + "/to-private")), (400,))
        expect_error(chat(s, video_msgs(smedia + "/stall")), (400,), "timed out")
        expect_error(chat(s, video_msgs(smedia + "/endless")), (400, 413), "larger than")
        healthy(s)
    finally:
        stop_server(s)
    # only "localhost" allowed: the first hop passes, the redirect to 127.0.0.1 does not
    s = start_server(model_dir, "--fetch-allow", "localhost", "--fetch-ca-file", cert,
                     env=HTTPS_ENV)
    try:
        r = chat(s, video_msgs(f"https://localhost:{port}/v/clip.mp4"))
        assert r.status_code == 200, r.text
        e = expect_error(chat(s, video_msgs(f"https://localhost:{port}/to-loopback")), (400,),
                         "private")
        assert "127.0.0.1" in e["message"], e
    finally:
        stop_server(s)
    # without the test CA the self-signed certificate is refused
    s = start_server(model_dir, "--fetch-allow", "127.0.0.1/32", env=HTTPS_ENV)
    try:
        expect_error(chat(s, video_msgs(smedia + "/v/clip.mp4")), (400,))
        healthy(s)
    finally:
        stop_server(s)
