"""API tests: the real valley-server on 127.0.0.1 over a generated checkpoint.

Paths: the build directory is $VLM_BUILD_DIR (default <repo>/build); the Qwen3 tokenizer
fixture is found by tests/fixtures/vlm_fixtures.py ($VLM_FIXTURES, else the copy committed in
tests/fixtures/, unpacked). The checkpoint is written once per session by valley-make-model
into a temporary directory.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
import vlm_fixtures  # noqa: E402
API_KEY = "test-key-123"


def build_dir() -> Path:
    return Path(os.environ.get("VLM_BUILD_DIR", ROOT / "build"))


def fixtures_dir() -> Path:
    return vlm_fixtures.fixtures_dir()


def binary(name: str) -> Path:
    p = build_dir() / name
    if not p.exists():
        pytest.skip(f"{p} not built")
    return p


# The generated checkpoint: the gqa4 geometry of tests/models.txt (text + vision).
MODEL_ARGS = ["--seed", "1", "--hidden", "128", "--layers", "3", "--heads", "8", "--kv-heads", "2",
              "--head-dim", "32", "--ffn", "256", "--vit-depth", "2", "--vit-dim", "64",
              "--vit-heads", "4", "--merger-hidden", "128"]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "tiny-valley"
    tok = fixtures_dir() / "qwen3-tokenizer"
    cmd = [str(binary("valley-make-model")), "--out", str(out), *MODEL_ARGS]
    if tok.is_dir():
        cmd += ["--tokenizer", str(tok)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    return out


class Server:
    """One valley-server process; its stderr goes to a log file. model None: no --model (the
    embedded default model)."""

    def __init__(self, model, extra=(), env=None):
        self.log = tempfile.NamedTemporaryFile(prefix="valley-server-", suffix=".log", delete=False)
        margs = ["--model", str(model)] if model is not None else []
        args = [str(binary("valley-server")), *margs, "--host", "127.0.0.1",
                "--port", "0", "--served-model-name", "tiny", "--kv-cache-memory", "64MiB",
                "--max-model-len", "2048", "--threads", os.environ.get("VLM_TEST_THREADS", "2"),
                *extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log,
                                     env={**os.environ, **(env or {})})
        self.port = None
        deadline = time.time() + 120
        while time.time() < deadline:
            text = Path(self.log.name).read_text(errors="replace")
            m = re.search(r"listening on http://[^:]+:(\d+)", text)
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"valley-server exited {self.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.05)
        if self.port is None:
            self.proc.kill()
            raise RuntimeError("valley-server did not start")
        self.url = f"http://127.0.0.1:{self.port}"
        # wait for /health (the log line comes right after the daemon starts)
        for _ in range(200):
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)

    def log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def server(model_dir):
    s = Server(model_dir, ["--api-key", API_KEY, "--max-n", "8", "--max-body-bytes", "4MiB",
                           "--fetch-allow", "127.0.0.1", "--fetch-timeout", "2",
                           "--fetch-max-bytes", "1MiB", "--max-images-per-request", "8"])
    yield s
    code = s.stop()
    assert code == 0, s.log_text()[-3000:]


@pytest.fixture(scope="session")
def base_url(server) -> str:
    return server.url + "/v1"


@pytest.fixture()
def client(base_url):
    from openai import OpenAI
    return OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture()
def aclient(base_url):
    from openai import AsyncOpenAI
    return AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"},
                      timeout=120) as c:
        yield c


def metrics(url: str) -> dict:
    """Prometheus text -> {name: value} (labels dropped; histogram buckets skipped)."""
    out = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("#") or "_bucket{" in line:
            continue
        name, _, value = line.rpartition(" ")
        key = name.split("{")[0]
        if "finished_reason=" in name:
            key += "[" + re.search(r'finished_reason="(\w+)"', name).group(1) + "]"
        out[key] = float(value)
    return out


# ---- images and a local media server ---------------------------------------------------

def png_bytes(w: int, h: int, seed: int = 0) -> bytes:
    """A w x h RGB PNG with a deterministic pattern (no PIL needed)."""
    import struct
    import zlib
    rows = bytearray()
    for y in range(h):
        rows.append(0)
        for x in range(w):
            rows += bytes(((x * 7 + seed * 31) & 255, (y * 5 + seed * 17) & 255, ((x ^ y) + seed) & 255))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b""))


def data_url(png: bytes) -> str:
    import base64
    return "data:image/png;base64," + base64.b64encode(png).decode()


@pytest.fixture(scope="session")
def media_server():
    """http.server on 127.0.0.1 serving /img.png, /redir (-> /img.png), /loop (redirects to
    itself), /404, /slow (answers after 5 s), /big (2 MiB), /text (not an image)."""
    import http.server
    import threading

    img = png_bytes(64, 48, seed=3)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def send(self, code, body=b"", ctype="application/octet-stream", headers=()):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:
                pass

        def do_GET(self):
            if self.path == "/img.png":
                self.send(200, img, "image/png")
            elif self.path == "/redir":
                self.send(302, headers=[("Location", "/img.png")])
            elif self.path == "/loop":
                self.send(302, headers=[("Location", "/loop")])
            elif self.path == "/slow":
                time.sleep(5)
                self.send(200, img, "image/png")
            elif self.path == "/big":
                self.send(200, b"\0" * (2 << 20))
            elif self.path == "/text":
                self.send(200, b"hello, not an image", "text/plain")
            else:
                self.send(404, b"not found", "text/plain")

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


# ---- video clips (tests/api/videoutil.py), shared by test_video.py and test_fetch.py ----

@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Clips made with the ffmpeg CLI, once per test module."""
    from videoutil import make_clips
    return make_clips(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="module")
def media(clips):
    """A plain http.server on 127.0.0.1 serving the clips; yields its base URL."""
    from videoutil import start_media_server
    url, shutdown = start_media_server(clips)
    yield url
    shutdown()
