"""Browser tests: Debian's headless Chromium, driven by Playwright for Python, against the real
valley-server on 127.0.0.1 (the API suite's Server and generated checkpoint, reused).

Nothing is downloaded: Playwright only drives the system browser ($VLM_CHROMIUM, default
/usr/bin/chromium). Without Playwright or the browser the suite is skipped.

Two small http.servers on other local ports play web apps of other origins: the server under
test allows the first (--allowed-origins) and not the second. Artifacts (screenshots) go to
tests/out/ (gitignored).
"""

import http.server
import importlib.util
import os
import threading
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = ROOT / "tests" / "out"
CHROMIUM = os.environ.get("VLM_CHROMIUM", "/usr/bin/chromium")

# The API suite's conftest, loaded under its own name (both files are "conftest").
_spec = importlib.util.spec_from_file_location("vlm_api_conftest", ROOT / "tests" / "api" / "conftest.py")
api = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(api)

API_KEY = api.API_KEY
Server = api.Server
metrics = api.metrics
png_bytes = api.png_bytes
model_dir = api.model_dir  # the session fixture, re-exported for this directory

# A page another web app would serve: callApi() runs fetch() from that page's origin and
# reports what the page could see (the status and body, or the error fetch() threw).
ORIGIN_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>another origin</title></head>
<body><p>a web app on another origin</p>
<script>
async function callApi(url, init) {
  try {
    const r = await fetch(url, init || {});
    return { ok: true, status: r.status, body: await r.text() };
  } catch (e) {
    return { ok: false, error: String(e) };
  }
}
</script></body></html>
"""


def wait_for(cond, timeout=120.0):
    """Polls cond() until it is true or the deadline passes (a deadline, not a timing check)."""
    import time
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


class OriginServer:
    """http.server on 127.0.0.1 serving ORIGIN_PAGE at every path."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(ORIGIN_PAGE)))
                self.end_headers()
                self.wfile.write(ORIGIN_PAGE)

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture(scope="session")
def origins():
    """(allowed, not allowed) web app origins."""
    a, b = OriginServer(), OriginServer()
    yield a, b
    a.close()
    b.close()


@pytest.fixture(scope="session")
def server(model_dir, origins):
    """The server under test: an API key, and CORS for the first origin only."""
    s = Server(model_dir, ["--api-key", API_KEY, "--allowed-origins", origins[0].url,
                           "--max-body-bytes", "4MiB"])
    yield s
    code = s.stop()
    assert code == 0, s.log_text()[-3000:]


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not found")
    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                           args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
    yield b
    b.close()
    pw.stop()


@pytest.fixture()
def page(browser):
    """A fresh browser context (own storage) and page; console lines collected in page.logs."""
    ctx = browser.new_context(viewport={"width": 1100, "height": 760})
    ctx.set_default_timeout(120_000)
    p = ctx.new_page()
    p.logs = []
    p.on("console", lambda m: p.logs.append(m.text))
    p.on("pageerror", lambda e: p.logs.append("pageerror: " + str(e)))
    yield p
    ctx.close()


@pytest.fixture(scope="session")
def out_dir() -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT
