"""Starts the real valley-server the way deploy/k8s/deployment.yaml does (its args, the
ConfigMap's environment), then checks the probes and the drain sequence on SIGTERM:
/ready flips to 503 while requests are still in flight, those requests finish, and the process
exits 0 within terminationGracePeriodSeconds.

Substitutions, because this machine has no GPU and no /models: the model path points at a
generated checkpoint, VALLEY_BACKEND=cpu, and the server listens on 127.0.0.1 on a free port.
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("VLM_BUILD_DIR", ROOT / "build"))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
import vlm_fixtures  # noqa: E402

FIXTURES = vlm_fixtures.fixtures_dir()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m"
    subprocess.run([str(BUILD / "valley-make-model"), "--out", str(out), "--seed", "7",
                    "--hidden", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
                    "--head-dim", "16", "--ffn", "128", "--vit-depth", "1", "--vit-dim", "32",
                    "--vit-heads", "2", "--merger-hidden", "64",
                    "--tokenizer", str(FIXTURES / "qwen3-tokenizer")], check=True)
    return out


def test_drain_like_kubernetes(model_dir):
    dep = yaml.safe_load((ROOT / "deploy/k8s/deployment.yaml").read_text())
    cm = yaml.safe_load((ROOT / "deploy/k8s/configmap.yaml").read_text())
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    grace = pod["terminationGracePeriodSeconds"]
    port = free_port()

    env = dict(os.environ)
    env.update(cm["data"])
    env.update({"VALLEY_HOST": "127.0.0.1", "VALLEY_PORT": str(port), "VALLEY_BACKEND": "cpu",
                "VALLEY_MODEL": str(model_dir), "XDG_CACHE_HOME": str(model_dir.parent)})
    args = [str(model_dir) if a == cm["data"]["VALLEY_MODEL"] else a for a in c["args"]]
    proc = subprocess.Popen([str(BUILD / "valley-server"), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        # startup probe: /health within failureThreshold * periodSeconds
        sp = c["startupProbe"]
        deadline = time.monotonic() + sp["failureThreshold"] * sp["periodSeconds"]
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(base + sp["httpGet"]["path"], timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "startup probe never passed"
            time.sleep(0.2)
        assert httpx.get(base + "/ready", timeout=5).status_code == 200

        # load: streaming requests that are still running when SIGTERM arrives
        results, started = [], threading.Semaphore(0)

        def stream_one():
            body = {"model": cm["data"]["VALLEY_SERVED_MODEL_NAME"], "stream": True,
                    "max_tokens": 200, "temperature": 0, "ignore_eos": True,
                    "messages": [{"role": "user", "content": "Count slowly."}]}
            began, finish = False, None
            with httpx.stream("POST", base + "/v1/chat/completions", json=body,
                              timeout=grace) as r:
                for line in r.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    ch = json.loads(line[6:])
                    if ch.get("choices"):
                        if not began:
                            began = True
                            started.release()
                        finish = ch["choices"][0].get("finish_reason") or finish
                results.append((r.status_code, finish, time.monotonic()))

        threads = [threading.Thread(target=stream_one) for _ in range(6)]
        for t in threads:
            t.start()
        for _ in threads:
            assert started.acquire(timeout=60), "streams did not start"

        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        r = httpx.get(base + "/ready", timeout=5)
        t_ready = time.monotonic()
        assert r.status_code == 503
        new = httpx.post(base + "/v1/chat/completions", timeout=5,
                         json={"model": cm["data"]["VALLEY_SERVED_MODEL_NAME"],
                               "messages": [{"role": "user", "content": "hi"}]})
        assert new.status_code == 503

        for t in threads:
            t.join(timeout=grace)
        assert len(results) == len(threads)
        assert all(s == 200 and f in ("length", "stop") for s, f, _ in results), results
        assert min(t for _, _, t in results) > t_ready, "/ready flipped after requests ended"
        rc = proc.wait(timeout=grace - (time.monotonic() - t_term))
        assert rc == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
