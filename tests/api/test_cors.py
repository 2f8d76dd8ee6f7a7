"""CORS (issue 11) and the built-in page's response headers, over httpx against the real server.

Two configurations: the session server (default "*" lists, --api-key set) and one started here
with explicit lists (two origins, GET/POST/OPTIONS, Authorization/Content-Type/X-Custom).
"""

import base64
import hashlib
import re

import httpx
import pytest

from conftest import API_KEY, Server

ALLOWED = "http://app.example"
OTHER = "http://evil.example"
CHAT = {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


def cors_headers(r: httpx.Response) -> dict:
    return {k.lower(): v for k, v in r.headers.items() if k.lower().startswith("access-control-")}


def preflight(url, origin, method="POST", req_headers=None):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if req_headers:
        h["Access-Control-Request-Headers"] = req_headers
    return httpx.request("OPTIONS", url, headers=h, timeout=30)


@pytest.fixture(scope="module")
def strict(model_dir):
    """A server with explicit CORS lists and an API key."""
    s = Server(model_dir, ["--api-key", API_KEY,
                           "--allowed-origins", f"{ALLOWED}, http://127.0.0.1:9",
                           "--allowed-methods", "GET,POST,OPTIONS",
                           "--allowed-headers", "Authorization,Content-Type,X-Custom"])
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


# ---- explicit origin list ----------------------------------------------------------------

def test_preflight_allowed_origin_without_key(strict):
    r = preflight(strict.url + "/v1/chat/completions", ALLOWED, req_headers="authorization, content-type")
    assert r.status_code == 204, r.text
    h = cors_headers(r)
    assert h["access-control-allow-origin"] == ALLOWED
    assert [m.strip() for m in h["access-control-allow-methods"].split(",")] == ["GET", "POST", "OPTIONS"]
    assert h["access-control-allow-headers"].lower() == "authorization, content-type"
    assert int(h["access-control-max-age"]) > 0
    assert "Origin" in r.headers.get("vary", "")
    assert r.content == b""


def test_preflight_custom_header_allowed_and_not(strict):
    r = preflight(strict.url + "/v1/models", ALLOWED, "GET", "X-Custom, Authorization")
    assert r.status_code == 204
    assert cors_headers(r)["access-control-allow-headers"] == "X-Custom, Authorization"
    # a header outside the list is left out, so the browser refuses the real request
    r = preflight(strict.url + "/v1/models", ALLOWED, "GET", "x-other, authorization")
    allowed = [v.strip().lower() for v in cors_headers(r)["access-control-allow-headers"].split(",")]
    assert allowed == ["authorization"]


def test_preflight_without_custom_headers(strict):
    r = preflight(strict.url + "/v1/chat/completions", ALLOWED)
    assert r.status_code == 204
    h = cors_headers(r)
    assert h["access-control-allow-origin"] == ALLOWED
    assert "POST" in h["access-control-allow-methods"]
    # no request list: the configured one
    assert h["access-control-allow-headers"] == "Authorization, Content-Type, X-Custom"


def test_preflight_disallowed_origin_gets_no_cors_headers(strict):
    for req_headers in (None, "authorization, x-custom"):
        r = preflight(strict.url + "/v1/chat/completions", OTHER, req_headers=req_headers)
        assert r.status_code == 204
        assert cors_headers(r) == {}, r.headers
        assert "Origin" in r.headers.get("vary", "")


def test_origin_match_is_exact(strict):
    for origin in (ALLOWED + ".evil", ALLOWED + ":8080", "https://app.example", "null", ""):
        r = preflight(strict.url + "/v1/models", origin, "GET")
        assert cors_headers(r) == {}, origin
    r = preflight(strict.url + "/v1/models", "http://127.0.0.1:9", "GET")
    assert cors_headers(r)["access-control-allow-origin"] == "http://127.0.0.1:9"


def test_real_request_allowed_origin(strict):
    r = httpx.post(strict.url + "/v1/chat/completions", json=CHAT, timeout=60,
                   headers={"Origin": ALLOWED, "Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200, r.text
    h = cors_headers(r)
    assert h == {"access-control-allow-origin": ALLOWED}  # preflight-only headers absent
    assert "Origin" in r.headers["vary"]


def test_real_request_without_key_is_401_with_cors(strict):
    """The browser must be able to read the 401 (the page shows it)."""
    r = httpx.post(strict.url + "/v1/chat/completions", json=CHAT, headers={"Origin": ALLOWED},
                   timeout=30)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert cors_headers(r)["access-control-allow-origin"] == ALLOWED
    r = httpx.get(strict.url + "/v1/models", headers={"Origin": OTHER}, timeout=30)
    assert r.status_code == 401
    assert cors_headers(r) == {}


def test_real_request_disallowed_origin(strict):
    """The server still answers (CORS is enforced by the browser), without CORS headers."""
    r = httpx.get(strict.url + "/v1/models", timeout=30,
                  headers={"Origin": OTHER, "Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200
    assert cors_headers(r) == {}


def test_no_origin_no_cors_headers(strict):
    r = httpx.get(strict.url + "/health", timeout=30)
    assert r.status_code == 200
    assert cors_headers(r) == {}
    assert "Origin" in r.headers["vary"]  # a cache must not serve this to a cross-origin page


def test_stream_carries_cors_headers(strict):
    body = {**CHAT, "stream": True, "max_tokens": 8}
    with httpx.stream("POST", strict.url + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Origin": ALLOWED, "Authorization": f"Bearer {API_KEY}"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert cors_headers(r)["access-control-allow-origin"] == ALLOWED
        text = r.read().decode()
    assert text.rstrip().endswith("data: [DONE]")


def test_error_answers_carry_cors_headers(strict):
    hdr = {"Origin": ALLOWED, "Authorization": f"Bearer {API_KEY}"}
    r = httpx.post(strict.url + "/v1/chat/completions", content=b"{", headers=hdr, timeout=30)
    assert r.status_code == 400
    assert cors_headers(r)["access-control-allow-origin"] == ALLOWED
    r = httpx.get(strict.url + "/nope", headers=hdr, timeout=30)
    assert r.status_code == 404
    assert cors_headers(r)["access-control-allow-origin"] == ALLOWED


# ---- wildcard (the defaults), on the session server -------------------------------------

def test_wildcard_preflight(server):
    r = preflight(server.url + "/v1/chat/completions", OTHER, req_headers="Authorization, X-Custom")
    assert r.status_code == 204
    h = cors_headers(r)
    assert h["access-control-allow-origin"] == OTHER  # any origin, echoed
    assert h["access-control-allow-headers"] == "Authorization, X-Custom"  # echoed
    assert "POST" in h["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in h
    r = preflight(server.url + "/v1/models", "http://127.0.0.1:1234", "GET")
    assert cors_headers(r)["access-control-allow-origin"] == "http://127.0.0.1:1234"


def test_wildcard_real_request_and_401(server):
    r = httpx.get(server.url + "/v1/models", headers={"Origin": OTHER}, timeout=30)
    assert r.status_code == 401
    assert cors_headers(r) == {"access-control-allow-origin": OTHER}
    r = httpx.get(server.url + "/v1/models", timeout=30,
                  headers={"Origin": OTHER, "Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200
    assert cors_headers(r) == {"access-control-allow-origin": OTHER}
    assert "Origin" in r.headers["vary"]


# ---- the page --------------------------------------------------------------------------

def test_page_served_with_csp(server):
    """GET / needs no key; its CSP allows exactly its one inline script (by hash)."""
    r = httpx.get(server.url + "/", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["x-content-type-options"] == "nosniff"
    page = r.text
    assert page.lstrip().lower().startswith("<!doctype html>")
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    assert "<script src" not in page and "<link" not in page, "no external assets"
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    csp = r.headers["content-security-policy"]
    assert f"script-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert httpx.head(server.url + "/", timeout=30).status_code == 200
    # a wrong method needs the key first (401), then is a 405
    assert httpx.post(server.url + "/", timeout=30).status_code == 401
    assert httpx.post(server.url + "/", timeout=30,
                      headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 405
    assert httpx.get(server.url + "/index.htm", timeout=30).status_code == 401  # key first
    assert httpx.get(server.url + "/index.htm", timeout=30,
                     headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 404


# ---- hostile preflight headers -----------------------------------------------------------

def raw_preflight(port, origin, req_headers):
    """A preflight over a raw socket (httpx refuses some of these header values)."""
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(("OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\nOrigin: " + origin +
               "\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: " +
               req_headers + "\r\nConnection: close\r\n\r\n").encode())
    buf = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    s.close()
    head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


def test_hostile_request_headers(strict):
    """Access-Control-Request-Headers is parsed from the client: odd lists neither crash the
    server nor let an unlisted name through."""
    long_name = "x-" + "a" * 5000
    table = [
        ("", None),                                   # empty: nothing to allow
        (",,, ,", None),
        (" , X-Custom ,", "X-Custom"),
        ("x-custom,x-custom", "x-custom, x-custom"),
        ("authorization;x-other", None),              # not a list separator
        ("X-CUSTOM\t, content-type", "X-CUSTOM, content-type"),
        (long_name + ", x-custom", "x-custom"),
        (", ".join(["x-custom"] * 400), None),        # longer than the answer buffer: cut short
    ]
    for value, want in table:
        status, headers = raw_preflight(strict.port, ALLOWED, value)
        assert status == 204, value[:40]
        got = headers.get("access-control-allow-headers")
        if want is not None:
            assert got == want, (value[:40], got)
        elif got:
            assert all(v.strip().lower() == "x-custom" for v in got.split(",")), (value[:40], got)
            assert len(got) < 1024
    big_origin = "http://" + "o" * 6000 + ".example"
    r = preflight(strict.url + "/v1/models", big_origin, "GET", "x-custom")
    assert cors_headers(r) == {}
    assert httpx.get(strict.url + "/health", timeout=30).status_code == 200
