"""A full waiting queue: requests beyond --max-waiting get 503 with Retry-After and an OpenAI
error body; the server keeps serving."""

import concurrent.futures

import httpx

from conftest import Server


def test_queue_full_503(model_dir):
    srv = Server(model_dir, ["--max-num-seqs", "1", "--max-waiting", "1"])
    try:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "go"}],
                "max_tokens": 64, "ignore_eos": True}

        def post(_):
            return httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=300)

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            rs = list(ex.map(post, range(8)))
        codes = sorted(r.status_code for r in rs)
        assert 200 in codes and 503 in codes, codes
        assert set(codes) <= {200, 503}
        for r in rs:
            if r.status_code == 503:
                assert r.headers.get("retry-after")
                assert r.json()["error"]["message"]
        r = post(0)
        assert r.status_code == 200
        assert srv.stop() == 0
    finally:
        srv.stop()
