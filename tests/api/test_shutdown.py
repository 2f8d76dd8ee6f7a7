"""SIGTERM during 10 streaming requests: /ready turns 503, a new request gets 503, the 10
streams all complete, and the process exits 0."""

import json
import signal
import threading
import time

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


def test_sigterm_aborts_everything_cleanly(model_dir, media_server):
    """SIGTERM past the drain deadline with a stream running, a long prompt prefilling (a
    long engine step), and a media fetch under way (suspended in preparation): the fetch is
    cancelled, the stream ends with "abort" + [DONE], the other two get 503, libmicrohttpd is
    stopped only once every connection is closed, and the process exits 0."""
    srv = Server(model_dir, ["--shutdown-timeout", "0.2", "--fetch-allow", "127.0.0.1",
                             "--fetch-timeout", "30", "--max-model-len", "8192",
                             "--kv-cache-memory", "256MiB"])
    try:
        out = {}
        started = threading.Event()

        def stream():
            chunks = []
            body = {"model": "tiny", "messages": [{"role": "user", "content": "long"}],
                    "max_tokens": 1900, "ignore_eos": True, "stream": True}
            with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body,
                              timeout=300) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        chunks.append(line[6:])
                        if len(chunks) == 2:
                            started.set()
            out["stream"] = chunks

        def long_prompt():
            # long enough to be under way at the signal however fast the engine is
            ids = [(i * 7919) % 50000 + 100 for i in range(3000)]
            out["long"] = httpx.post(srv.url + "/v1/completions", timeout=300, json={
                "model": "tiny", "prompt": ids, "max_tokens": 5000, "ignore_eos": True})

        def fetching():
            msg = [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": media_server + "/slow"}},
                {"type": "text", "text": "x"}]}]
            t0 = time.time()
            out["fetch"] = httpx.post(srv.url + "/v1/chat/completions", timeout=300,
                                      json={"model": "tiny", "messages": msg, "max_tokens": 4})
            out["fetch_s"] = time.time() - t0

        ts = [threading.Thread(target=stream)]
        ts[0].start()
        assert started.wait(120)
        ts += [threading.Thread(target=long_prompt), threading.Thread(target=fetching)]
        for t in ts[1:]:
            t.start()
        time.sleep(1.0)
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        for t in ts:
            t.join(300)
        code = srv.proc.wait(120)
        took = time.time() - t0
        log = srv.log_text()
        assert code == 0, log[-3000:]
        assert "suspended" not in log, log[-3000:]
        chunks = out["stream"]
        assert chunks[-1] == "[DONE]"
        assert json.loads(chunks[-2])["choices"][0]["finish_reason"] == "abort"
        for k in ("long", "fetch"):
            r = out[k]
            assert r.status_code == 503, (k, r.text)
            assert r.json()["error"]["message"]
        assert out["fetch_s"] < 4.5, "the media fetch was not cancelled (the origin takes 5 s)"
        print(f"exit {took:.1f} s after SIGTERM")
    finally:
        srv.stop(signal.SIGKILL)
