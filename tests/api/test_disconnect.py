"""Clients that go away: 100 streaming requests dropped mid-stream over raw sockets. Their
requests are aborted, every KV block comes back (read from /metrics), and the server answers
normally afterwards."""

import json
import socket
import time

from conftest import API_KEY, metrics


def open_stream(port, max_tokens=2000):
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "Count to ten."}],
                       "max_tokens": max_tokens, "stream": True, "ignore_eos": True}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return s


def read_until_content(s):
    buf = b""
    while buf.count(b"data: ") < 2:  # the role chunk, then a content chunk
        d = s.recv(65536)
        assert d, "server closed the stream early"
        buf += d
    assert buf.startswith(b"HTTP/1.1 200")


def wait_for(cond, timeout=120):
    """Polls cond() until true (a condition with a deadline, not a timed assertion)."""
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def test_100_clients_drop_mid_stream(server, http):
    before = metrics(server.url)
    socks = [open_stream(server.port) for _ in range(100)]
    for s in socks:
        read_until_content(s)
        s.close()

    def drained():
        m = metrics(server.url)
        return (m["vllm:num_requests_running"] == 0 and m["vllm:num_requests_waiting"] == 0
                and m["valley:kv_blocks_used"] == 0 and m["valley:http_requests_inflight"] == 0)

    assert wait_for(drained), metrics(server.url)
    after = metrics(server.url)
    assert after["valley:kv_blocks_free"] == after["valley:kv_blocks_total"]
    assert after["valley:client_disconnects_total"] - before["valley:client_disconnects_total"] == 100
    assert after["valley:requests_aborted_total"] - before["valley:requests_aborted_total"] >= 100
    r = http.post("/v1/chat/completions", json={"model": "tiny", "max_tokens": 4,
                                                "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 4


def test_drop_non_streaming_and_half_sent(server, http):
    """A client that sends half a body, and one that leaves before a non-streaming answer:
    the long generation is aborted (not run to max_tokens) and its blocks come back."""
    before = metrics(server.url)
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"mo")
    s.close()
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                       "max_tokens": 1900, "ignore_eos": True}).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
              + API_KEY.encode() + b"\r\nContent-Length: " + str(len(body)).encode()
              + b"\r\n\r\n" + body)
    s.close()
    assert wait_for(lambda: metrics(server.url)["valley:http_requests_inflight"] == 0)
    assert wait_for(lambda: metrics(server.url)["valley:kv_blocks_used"] == 0)
    after = metrics(server.url)
    assert after["vllm:request_success_total[abort]"] - before["vllm:request_success_total[abort]"] == 1
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] < 1900
    assert http.get("/health").status_code == 200
