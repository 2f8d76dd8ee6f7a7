"""Shared by test_video.py and test_fetch.py: clips made with the ffmpeg CLI, a hostile media
server on 127.0.0.1, and helpers to start a valley-server configured for media URLs.

Every URL the tests hand to the server points at 127.0.0.1, or at a private / link-local
address that the server must refuse before it connects (so no packet leaves the machine).
"""

import http.server
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import API_KEY, Server

# Clips: name -> ffmpeg arguments after "-y" (inputs and encoder), written as <name>.
CLIPS = {
    # 2 s, 10 fps, 64x48 H.264, moov first (so a truncated copy still opens)
    "clip.mp4": ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=2", "-c:v", "libx264",
                 "-pix_fmt", "yuv420p", "-movflags", "+faststart"],
    "clip.webm": ["-f", "lavfi", "-i", "testsrc2=size=50x38:rate=12:duration=1", "-c:v",
                  "libvpx-vp9", "-b:v", "200k"],
    "one.mkv": ["-f", "lavfi", "-i", "testsrc2=size=40x30:rate=1:duration=1", "-c:v", "mjpeg"],
    # ten hours: ten frames an hour apart (cheap to make, refused by --video-max-duration)
    "long.mp4": ["-f", "lavfi", "-i", "color=c=red:s=32x32:r=1/3600:d=36000", "-c:v", "libx264",
                 "-pix_fmt", "yuv420p"],
    "audio.m4a": ["-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac"],
    # 16K (15360x8640), one flat MJPEG frame: over --max-image-pixels
    "huge.mkv": ["-f", "lavfi", "-i", "color=c=blue:s=15360x8640:d=1:r=1", "-frames:v", "1",
                 "-c:v", "mjpeg", "-pix_fmt", "yuvj420p"],
}


def make_clips(out: Path) -> Path:
    if not shutil.which("ffmpeg"):
        pytest.skip("the ffmpeg CLI is not installed")
    out.mkdir(parents=True, exist_ok=True)
    for name, args in CLIPS.items():
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args, str(out / name)],
                       check=True, timeout=300)
    full = (out / "clip.mp4").read_bytes()
    (out / "truncated.mp4").write_bytes(full[: len(full) // 3])
    (out / "not-video.txt").write_bytes(b"hello, this is not a video\n" * 40)
    return out


class MediaHandler(http.server.BaseHTTPRequestHandler):
    clips: Path = Path(".")
    port: int = 0
    scheme: str = "http"
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, body=b"", ctype="application/octet-stream", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def redirect(self, where):
        self.send(302, headers=[("Location", where)])

    def do_GET(self):
        p = self.path
        here = f"{self.scheme}://127.0.0.1:{self.port}"
        if p.startswith("/v/") and (self.clips / p[3:]).is_file() and "/" not in p[3:]:
            self.send(200, (self.clips / p[3:]).read_bytes(), "video/mp4")
        elif p == "/redir-video":
            self.redirect("/v/clip.mp4")
        elif p == "/loop":
            self.redirect("/loop")
        elif p == "/to-loopback":  # absolute URL to 127.0.0.1 (used through "localhost")
            self.redirect(here + "/v/clip.mp4")
        elif p == "/to-private":
            self.redirect("http://10.1.2.3/v/clip.mp4")
        elif p == "/to-private-https":
            self.redirect("https://10.1.2.3/v/clip.mp4")
        elif p == "/to-metadata":
            self.redirect("http://169.254.169.254/latest/meta-data/")
        elif p == "/to-ftp":
            self.redirect("ftp://127.0.0.1/clip.mp4")
        elif p == "/stall":  # headers never come within the fetch timeout
            time.sleep(6)
            self.send(200, b"late")
        elif p == "/trickle":  # a byte every 50 ms: total time, not idle time, must cut it
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
        elif p == "/endless":  # no length, never ends (until the client hangs up)
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(4096):  # at most 256 MiB
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
        elif p == "/chunked":
            body = (self.clips / "clip.mp4").read_bytes()
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(0, len(body), 1000):
                part = body[i:i + 1000]
                self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send(404, b"not found", "text/plain")


def start_media_server(clips: Path, tls_cert: Path = None):
    """Returns (base_url, shutdown); https with tls_cert (a PEM holding key and cert)."""
    handler = type("H", (MediaHandler,), {"clips": clips, "scheme": "https" if tls_cert else "http"})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    if tls_cert:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls_cert))
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    handler.port = srv.server_address[1]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return f"{handler.scheme}://127.0.0.1:{srv.server_address[1]}", srv.shutdown


def make_cert(out: Path) -> Path:
    """A self-signed certificate for localhost and 127.0.0.1 (key and cert in one PEM)."""
    if not shutil.which("openssl"):
        pytest.skip("the openssl CLI is not installed")
    pem = out / "localhost.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(out / "key.pem"),
                    "-out", str(out / "cert.pem")], check=True, capture_output=True, timeout=60)
    pem.write_bytes((out / "key.pem").read_bytes() + (out / "cert.pem").read_bytes())
    return pem


def closed_port() -> int:
    """A 127.0.0.1 port with nothing listening (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# Extra environment for servers that fetch https URLs: none is needed since the fetches go
# through libcurl (FFmpeg's https layer, which needed a leak suppression, is no longer used).
HTTPS_ENV: dict = {}


def start_server(model_dir: Path, *extra, env=None) -> Server:
    return Server(model_dir, ["--api-key", API_KEY, "--fetch-timeout", "2",
                              "--fetch-max-bytes", "4MiB", "--max-images-per-request", "40",
                              "--video-max-frames", "16", *extra], env=env)


def stop_server(s: Server):
    code = s.stop()
    log = s.log_text()
    assert code == 0, log[-3000:]
    assert "Sanitizer" not in log, log[-6000:]


def http_client(s: Server) -> httpx.Client:
    return httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {API_KEY}"},
                        timeout=120)


def video_msgs(url, text="What happens in the video?", **opts):
    v = {"url": url, **opts}
    return [{"role": "user", "content": [{"type": "video_url", "video_url": v},
                                         {"type": "text", "text": text}]}]


def image_msgs(*urls, text="What happens in the video?"):
    return [{"role": "user", "content": [*({"type": "image_url", "image_url": {"url": u}}
                                           for u in urls), {"type": "text", "text": text}]}]


def expect_error(r: httpx.Response, statuses=(400,), *words):
    """An OpenAI error body with one of the statuses; every word in the message."""
    assert r.status_code in statuses, (r.status_code, r.text)
    e = r.json()["error"]
    assert set(e) >= {"message", "type", "param", "code"}, e
    assert e["type"] == "invalid_request_error", e
    for w in words:
        assert w.lower() in e["message"].lower(), e
    return e
