"""SIGTERM during 10 streaming requests: /ready turns 503, a new request gets 503, the 10
streams all complete, and the process exits 0."""

import json
import signal
import threading

import httpx

from conftest import Server


def test_sigterm_drains(model_dir):
    srv = Server(model_dir, ["--shutdown-timeout", "120"])
    try:
        started = [threading.Event() for _ in range(10)]
        results = [None] * 10

        def stream(i):
            chunks = []
            body = {"model": "tiny", "messages": [{"role": "user", "content": f"story {i}"}],
                    "max_tokens": 300, "ignore_eos": True, "stream": True}
            with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body,
                              timeout=300) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        chunks.append(line[6:])
                        if len(chunks) == 2:
                            started[i].set()
            results[i] = chunks

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for e in started:
            assert e.wait(120), "a stream did not start"
        assert httpx.get(srv.url + "/ready").status_code == 200
        srv.proc.send_signal(signal.SIGTERM)
        # readiness flips at once; new work is refused while the 10 streams go on
        def refused():
            r = httpx.get(srv.url + "/ready", timeout=30)
            return r.status_code == 503
        for _ in range(200):
            if refused():
                break
        assert refused()
        r = httpx.post(srv.url + "/v1/chat/completions", timeout=30,
                       json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 503
        assert r.json()["error"]["message"]
        assert "retry-after" in r.headers
        for t in threads:
            t.join(300)
        for chunks in results:
            assert chunks and chunks[-1] == "[DONE]"
            last = json.loads(chunks[-2])
            assert last["choices"][0]["finish_reason"] == "length"
            n = sum(1 for c in chunks[:-1] if json.loads(c)["choices"][0]["delta"].get("content"))
            assert n > 0
        assert srv.proc.wait(120) == 0, srv.log_text()[-2000:]
    finally:
        srv.stop(signal.SIGKILL)


def test_sigterm_deadline_aborts(model_dir):
    """Past --shutdown-timeout the streams still running are aborted cleanly: a final chunk
    with finish_reason "abort", [DONE], and exit status 0."""
    srv = Server(model_dir, ["--shutdown-timeout", "0.5"])
    try:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "long"}],
                "max_tokens": 1900, "ignore_eos": True, "stream": True}
        chunks = []
        with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body, timeout=300) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    chunks.append(line[6:])
                    if len(chunks) == 3:
                        srv.proc.send_signal(signal.SIGTERM)
        assert chunks[-1] == "[DONE]"
        assert json.loads(chunks[-2])["choices"][0]["finish_reason"] == "abort"
        assert len(chunks) < 1900
        assert srv.proc.wait(120) == 0, srv.log_text()[-2000:]
    finally:
        srv.stop(signal.SIGKILL)
