"""HTTP protocol table: framing, authentication at the headers, body and connection limits.
Raw sockets, so that what the server answers before reading a body is visible. RSS is read
from /proc/<pid>/status."""

import json
import socket
import time

import httpx
import pytest

from conftest import API_KEY, Server

CHAT = b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'
AUTH = b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def exchange(port, raw: bytes, body_after: bytes = b"", timeout=10.0):
    """Sends raw (request line and headers, maybe a body), reads what comes back before the
    server closes or timeout passes; sends body_after only if the server has not answered
    within 0.3 s (a server that waits for the body gets it). Returns (bytes, closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        got = b""
        s.settimeout(0.3)
        try:
            got = s.recv(65536)
        except socket.timeout:
            pass
        if not got and body_after:
            try:
                s.sendall(body_after)
            except OSError:
                pass
        s.settimeout(timeout)
        closed = False
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                closed = True
                break
            got += chunk
            if b"\r\n\r\n" in got and _complete(got):
                # one full response: is the connection closed after it?
                s.settimeout(1.0)
                try:
                    closed = s.recv(1) == b""
                except (socket.timeout, ConnectionResetError):
                    closed = False
                break
        return got, closed


def _complete(resp: bytes) -> bool:
    head, _, rest = resp.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return len(rest) >= int(v)
    return False


def status_of(resp: bytes) -> int:
    line = resp.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1."), resp[:200]
    return int(line.split()[1])


def error_of(resp: bytes) -> dict:
    body = resp.partition(b"\r\n\r\n")[2]
    return json.loads(body)["error"]


def post(path: bytes, headers: bytes, body: bytes = b"") -> bytes:
    return b"POST " + path + b" HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n" + body


# ---- framing: answered 400 with an OpenAI error, and the connection closed ---------------
# (a Content-Length that is not a number is refused by libmicrohttpd itself, with its own
# HTML body: still a 400 and a close)

FRAMING = [
    ("content-length and transfer-encoding",
     post(b"/v1/chat/completions", AUTH + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
     b"0\r\n\r\n"),
    ("two content-lengths",
     post(b"/v1/chat/completions", AUTH + b"Content-Length: 5\r\nContent-Length: 7\r\n"),
     b"{}   xx"),
    ("content-length not a number",
     post(b"/v1/chat/completions", AUTH + b"Content-Length: 5x\r\n"), b"{}   "),
    ("http/1.1 without host",
     b"POST /v1/chat/completions HTTP/1.1\r\n" + AUTH + b"Content-Length: 2\r\n\r\n{}", b""),
    ("two hosts",
     b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b""),
]


@pytest.mark.parametrize("name,raw,after", FRAMING, ids=[c[0] for c in FRAMING])
def test_framing_400_and_close(server, http, name, raw, after):
    resp, closed = exchange(server.port, raw, after)
    assert status_of(resp) == 400, resp[:300]
    if name != "content-length not a number":
        e = error_of(resp)
        assert e["type"] == "invalid_request_error" and e["message"], e
    assert closed, "the connection stays open after a framing error"
    assert http.get("/health").status_code == 200


def test_http10_without_host_ok(server):
    resp, _ = exchange(server.port, b"GET /health HTTP/1.0\r\n\r\n")
    assert status_of(resp) == 200


# ---- authentication at the headers --------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/tokenize"),
    ("POST", "/detokenize"), ("GET", "/v1/models"), ("GET", "/v1/nothing"),
    ("POST", "/v1/nothing"), ("GET", "/v1/chat/completions"), ("DELETE", "/v1/models"),
    ("GET", "/nothing"),
])
def test_key_required_first(server, method, path):
    """Without a key: 401 on every route but the open ones, before 404 and 405."""
    r = httpx.request(method, server.url + path, json={} if method == "POST" else None)
    assert r.status_code == 401, (method, path, r.status_code, r.text)
    assert r.json()["error"]["type"] == "authentication_error"
    r = httpx.request(method, server.url + path, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/health", 200), ("GET", "/ready", 200), ("GET", "/metrics", 200),
    ("OPTIONS", "/v1/chat/completions", 204), ("GET", "/", 200),
])
def test_open_routes(server, method, path, status):
    assert httpx.request(method, server.url + path).status_code == status


def test_with_key_404_405(http):
    r = http.get("/v1/nothing")
    assert r.status_code == 404
    r = http.get("/v1/chat/completions")
    assert r.status_code == 405
    e = r.json()["error"]
    assert e["type"] == "invalid_request_error" and e["code"] == "method_not_allowed"


def test_401_before_body_and_before_continue(server):
    """A 60 MB body without a key: 401 from the headers alone, no 100 Continue, the
    connection closed; the body is never buffered, so the server's RSS does not grow."""
    pid = server.proc.pid
    before = rss_kib(pid)
    raw = post(b"/v1/chat/completions",
               b"Content-Length: 60000000\r\nExpect: 100-continue\r\n"
               b"Content-Type: application/json\r\n")
    for _ in range(8):
        resp, closed = exchange(server.port, raw)
        assert status_of(resp) == 401, resp[:200]
        assert b"100 Continue" not in resp
        assert closed
    # and a client that sends the 60 MB regardless is cut off, not buffered
    chunk = b"x" * (1 << 20)
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(post(b"/v1/chat/completions", b"Content-Length: 60000000\r\n"))
        try:
            while sent < 60_000_000:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
    assert sent < 60_000_000, "the server read a 60 MB body it had refused"
    grew = rss_kib(pid) - before
    assert grew < 20 * 1024, f"RSS grew by {grew} KiB"


def test_chunked_without_key_401(server):
    raw = post(b"/v1/chat/completions", b"Transfer-Encoding: chunked\r\n")
    resp, closed = exchange(server.port, raw, b"2\r\n{}\r\n0\r\n\r\n")
    assert status_of(resp) == 401
    assert closed


def test_413_before_continue(server):
    """A declared body over --max-body-bytes (4 MiB here): 413 without 100 Continue."""
    raw = post(b"/v1/chat/completions",
               AUTH + b"Content-Length: 5000000\r\nExpect: 100-continue\r\n")
    resp, closed = exchange(server.port, raw)
    assert status_of(resp) == 413, resp[:200]
    assert b"100 Continue" not in resp
    assert error_of(resp)["code"] == "request_too_large"
    assert closed


# ---- server-wide limits: buffered bodies, connections per client, idle timeout --------------

@pytest.fixture(scope="module")
def limited(model_dir):
    s = Server(model_dir, ["--max-body-bytes", "1MiB", "--max-buffered-body-bytes", "1536KiB",
                           "--max-connections-per-client", "6", "--idle-timeout", "1"])
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


def test_buffered_bodies_cap(limited):
    """Two bodies of 1 MiB under way at once pass the 1.5 MiB server-wide cap: the second is
    answered 503 + Retry-After from its headers; the first completes."""
    body = b'{"model": "tiny", "prompt": "' + b"a" * (1000000 - 60) + b'", "max_tokens": 1}'
    head = post(b"/v1/completions", b"Content-Length: %d\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", limited.port), timeout=30) as a:
        a.sendall(head + body[:1000])
        time.sleep(0.3)
        resp, closed = exchange(limited.port, head)
        assert status_of(resp) == 503, resp[:300]
        assert b"Retry-After" in resp or b"retry-after" in resp.lower()
        assert closed
        a.sendall(body[1000:])
        a.settimeout(60)
        got = b""
        while b"\r\n\r\n" not in got:
            got += a.recv(65536)
        assert status_of(got) in (200, 400), got[:300]  # the prompt may pass the context
    # the cap is free again
    r = httpx.post(limited.url + "/v1/chat/completions", content=CHAT,
                   headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def capped(model_dir):
    """The per-client cap alone: `limited`'s 1-second idle timeout would close the test's own
    silent connections (and free their slots) whenever the test is descheduled for a second,
    as on a loaded CI machine."""
    s = Server(model_dir, ["--max-connections-per-client", "6", "--idle-timeout", "60"])
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


def health_on(sock) -> int:
    """GET /health on an open keep-alive connection; the status, or 0 if it was closed."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
    got = b""
    while not (b"\r\n\r\n" in got and _complete(got)):
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            return 0
        got += chunk
    return status_of(got)


def served_connection(port, deadline):
    """A new connection that the server serves. A connection the client has just closed
    (another test's, the fixture's /health probe, one closed here) still counts against the
    cap until the server has seen the close: libmicrohttpd accepts new connections before it
    reaps closed ones, so under load a new one can be refused for a while. Returns None if
    none is served before the deadline."""
    while time.time() < deadline:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        if health_on(s) == 200:
            return s
        s.close()
        time.sleep(0.05)
    return None


def test_connections_per_client(capped):
    """Six connections from one address are served and stay open; with those six open a
    seventh is closed without an answer; once one of the six closes, a new one is served."""
    deadline = time.time() + 60
    socks = []
    try:
        for _ in range(6):
            s = served_connection(capped.port, deadline)
            assert s is not None, f"only {len(socks)} connections served"
            socks.append(s)
        with socket.create_connection(("127.0.0.1", capped.port), timeout=30) as extra:
            assert health_on(extra) == 0  # the six are open and served: the cap is full
        assert [health_on(s) for s in socks] == [200] * 6  # none of the six was dropped
        socks.pop().close()
        again = served_connection(capped.port, deadline)
        assert again is not None, "the freed slot was not given back"
        socks.append(again)
        assert [health_on(s) for s in socks] == [200] * 6
    finally:
        for s in socks:
            s.close()


def test_idle_keepalive_closed(limited):
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        got = s.recv(65536)
        assert status_of(got) == 200
        t0 = time.time()
        s.settimeout(10)
        try:
            rest = s.recv(100)
        except ConnectionResetError:
            rest = b""
        assert rest == b""
        assert time.time() - t0 < 5


def test_slow_headers_closed(limited):
    """Slowloris: headers that never end are cut off by the idle timeout."""
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n")
        t0 = time.time()
        try:
            rest = s.recv(100)
        except ConnectionResetError:
            rest = b""
        assert time.time() - t0 < 5
        assert not rest.startswith(b"HTTP/1.1 2")


def test_waiting_for_the_engine_is_not_idle(limited):
    """A request that waits on the engine longer than --idle-timeout (1 s here) is answered:
    only silent connections that nobody waits for are closed."""
    t0 = time.time()
    r = httpx.post(limited.url + "/v1/chat/completions", timeout=300, json={
        "model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 300,
        "ignore_eos": True})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 300
    print(f"answered after {time.time() - t0:.1f} s with --idle-timeout 1")
