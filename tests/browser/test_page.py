"""The built-in chat page in headless Chromium (issue 11): text streamed token by token, an
attached PNG, stop (checked on /metrics), a screenshot; and cross-origin fetches from web apps
on other local ports, allowed and not, seen from inside the browser."""

import json
import re

import httpx

from .conftest import API_KEY, ROOT, Server, metrics, png_bytes, wait_for

# Records, in the page, each distinct length of the newest answer (thinking + answer text) as
# the DOM changes, so the test can see that text arrived in several pieces.
WATCH = """() => {
  window.__lens = [];
  const text = () => {
    const a = [...document.querySelectorAll('.msg.assistant')].pop();
    if (!a) return 0;
    const t = a.querySelector('details div'), b = a.querySelector('.answer');
    return (t ? t.textContent.length : 0) + (b ? b.textContent.length : 0);
  };
  new MutationObserver(() => {
    const n = text();
    if (window.__lens[window.__lens.length - 1] !== n) window.__lens.push(n);
  }).observe(document.getElementById('log'), {childList: true, subtree: true, characterData: true});
}"""

LAST_STATS = "() => { const s = [...document.querySelectorAll('.msg.assistant .stats')].pop();" \
             " return s && s.textContent ? s.textContent : null; }"


def open_chat(page, server):
    """Loads the page, enters the API key, waits for the model list."""
    page.goto(server.url + "/")
    assert page.title() == "Valley chat"
    page.fill("#apiKey", API_KEY)
    page.dispatch_event("#apiKey", "change")
    page.wait_for_function("() => document.querySelector('#model').value === 'tiny'")
    page.evaluate(WATCH)


def send(page, text, max_tokens):
    page.fill("#maxTokens", str(max_tokens))
    page.fill("#input", text)
    page.click("#send")


def wait_done(page) -> str:
    """Waits for the stats line of the newest answer; returns it."""
    return page.wait_for_function(LAST_STATS).json_value()


def last_answer(page) -> dict:
    return page.evaluate("""() => {
      const a = [...document.querySelectorAll('.msg.assistant')].pop();
      return {cls: a.className, answer: a.querySelector('.answer').textContent,
              thinking: a.querySelector('details div').textContent,
              finish: a.querySelector('.stats').dataset.finish};
    }""")


def test_text_message_streams(page, server):
    open_chat(page, server)
    send(page, "Hello! Tell me about the sea.", 200)
    stats = wait_done(page)
    a = last_answer(page)
    assert "error" not in a["cls"], a
    assert a["finish"] in ("length", "stop"), a
    assert "TTFT" in stats and "tok/s" in stats and "tokens" in stats, stats
    lens = page.evaluate("window.__lens")
    grown = [n for n in lens if n > 0]
    assert len(grown) >= 3, f"the answer should arrive in pieces, saw lengths {lens}"
    assert grown == sorted(grown), lens
    # the page assembled the deltas into exactly what the API answers in one piece
    ref = httpx.post(server.url + "/v1/chat/completions", timeout=120,
                     headers={"Authorization": f"Bearer {API_KEY}"},
                     json={"model": "tiny", "max_tokens": 200, "temperature": 0,
                           "chat_template_kwargs": {"enable_thinking": True},
                           "messages": [{"role": "user", "content": "Hello! Tell me about the sea."}]})
    assert ref.status_code == 200, ref.text
    msg = ref.json()["choices"][0]["message"]
    assert a["answer"] == (msg.get("content") or "")
    assert a["thinking"] == (msg.get("reasoning_content") or "")
    assert not [line for line in page.logs if "pageerror" in line or "Content Security" in line], page.logs


def test_image_attached_and_sent(page, server, tmp_path, out_dir):
    png = tmp_path / "pattern.png"
    png.write_bytes(png_bytes(96, 64, seed=5))
    open_chat(page, server)
    before = metrics(server.url)
    page.set_input_files("#file", str(png))
    page.wait_for_selector("#attachments img")
    assert page.eval_on_selector("#attachments img", "i => i.src").startswith("data:image/png;base64,")
    send(page, "What is in this picture?", 24)
    wait_done(page)
    a = last_answer(page)
    assert "error" not in a["cls"], a
    assert a["finish"] in ("length", "stop"), a
    assert page.locator(".msg.user img").count() == 1
    assert page.locator("#attachments img").count() == 0, "attachments go with the message"
    after = metrics(server.url)
    assert after["valley:encoder_cache_misses_total"] - before["valley:encoder_cache_misses_total"] == 1
    # a second turn in the same conversation: the history (with the image) goes again
    send(page, "And now?", 8)
    page.wait_for_function("() => document.querySelectorAll('.msg.assistant .stats').length === 2 &&"
                           " document.querySelectorAll('.msg.assistant .stats')[1].textContent")
    assert "error" not in last_answer(page)["cls"]
    page.screenshot(path=str(out_dir / "chat-page.png"), full_page=True)


def test_stop_aborts_on_the_server(page, server, out_dir):
    open_chat(page, server)
    before = metrics(server.url)
    send(page, "Write a very long story.", 1800)
    page.wait_for_function("() => window.__lens.some(n => n > 0)")  # streaming has begun
    page.click("#stop")
    wait_done(page)
    a = last_answer(page)
    assert a["finish"] == "stopped", a

    def settled():
        m = metrics(server.url)
        return (m["valley:client_disconnects_total"] > before["valley:client_disconnects_total"]
                and m["vllm:num_requests_running"] == 0 and m["valley:http_requests_inflight"] == 0)

    assert wait_for(settled), metrics(server.url)
    after = metrics(server.url)
    assert after["valley:client_disconnects_total"] - before["valley:client_disconnects_total"] == 1
    assert after["valley:requests_aborted_total"] - before["valley:requests_aborted_total"] == 1
    assert after["vllm:request_success_total[abort]"] - before["vllm:request_success_total[abort]"] == 1
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] < 1800
    assert page.is_enabled("#send") and not page.is_enabled("#stop")
    page.screenshot(path=str(out_dir / "chat-page-stopped.png"))


def test_page_without_key_explains(page, server):
    page.goto(server.url + "/")
    page.wait_for_selector(".msg.error")
    assert "API key" in page.text_content(".msg.error")


# ---- cross-origin web apps --------------------------------------------------------------

def call_api(page, url, init=None):
    return page.evaluate("([u, i]) => callApi(u, i)", [url, init or {}])


def chat_init(stream):
    return {"method": "POST",
            "headers": {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
            "body": json.dumps({"model": "tiny", "max_tokens": 6, "stream": stream,
                                "messages": [{"role": "user", "content": "hi"}]})}


def test_cross_origin_allowed(page, server, origins):
    page.goto(origins[0].url + "/")
    r = call_api(page, server.url + "/v1/models", {"headers": {"Authorization": f"Bearer {API_KEY}"}})
    assert r["ok"] and r["status"] == 200, r
    assert json.loads(r["body"])["data"][0]["id"] == "tiny"
    r = call_api(page, server.url + "/v1/chat/completions", chat_init(False))
    assert r["ok"] and r["status"] == 200, r
    assert json.loads(r["body"])["choices"][0]["finish_reason"] in ("length", "stop")
    r = call_api(page, server.url + "/v1/chat/completions", chat_init(True))
    assert r["ok"] and r["status"] == 200, r
    assert r["body"].rstrip().endswith("data: [DONE]")
    # without the key: a 401 the app can read (CORS headers on the error too)
    r = call_api(page, server.url + "/v1/models")
    assert r["ok"] and r["status"] == 401, r
    assert json.loads(r["body"])["error"]["code"] == "invalid_api_key"
    r = call_api(page, server.url + "/health")  # a simple request, no preflight
    assert r["ok"] and r["status"] == 200, r


def test_cross_origin_not_allowed(page, server, origins):
    page.goto(origins[1].url + "/")
    for url, init in ((server.url + "/v1/models", {"headers": {"Authorization": f"Bearer {API_KEY}"}}),
                      (server.url + "/v1/chat/completions", chat_init(True)),
                      (server.url + "/health", None)):
        r = call_api(page, url, init)
        assert not r["ok"] and "Failed to fetch" in r["error"], (url, r)
    assert any("CORS policy" in line for line in page.logs), page.logs


def sse(*chunks) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def test_thinking_folded_and_video_url(page, server, out_dir):
    """The page's side alone (the tiny model never thinks): a canned stream with reasoning
    stands in for the server, and the request the page built is checked."""
    sent = []

    def chunk(choices, **extra):
        return {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "tiny",
                "choices": choices, **extra}

    def d(**delta):
        return chunk([{"index": 0, "delta": delta, "finish_reason": None}])

    def fake(route):
        sent.append(json.loads(route.request.post_data))
        end = chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        usage = chunk([], usage={"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14})
        route.fulfill(status=200, content_type="text/event-stream",
                      body=sse(d(role="assistant", content=""), d(reasoning_content="Let me "),
                               d(reasoning_content="look."), d(content="A red "), d(content="ball."),
                               end, usage))

    open_chat(page, server)
    page.route("**/v1/chat/completions", fake)
    page.fill("#videoUrl", "http://127.0.0.1:9/clip.mp4")
    send(page, "What happens?", 32)
    stats = wait_done(page)
    a = last_answer(page)
    assert a["answer"] == "A red ball." and a["thinking"] == "Let me look."
    assert a["finish"] == "stop" and "5 tokens" in stats, stats
    folded = page.evaluate("() => { const t = [...document.querySelectorAll('details.think')].pop();"
                           " return {hidden: t.hidden, open: t.open}; }")
    assert folded == {"hidden": False, "open": False}, folded
    page.screenshot(path=str(out_dir / "chat-page-thinking.png"))
    (req,) = sent
    assert req["stream"] is True and req["model"] == "tiny" and req["max_tokens"] == 32
    assert req["stream_options"] == {"include_usage": True}
    assert req["messages"] == [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "http://127.0.0.1:9/clip.mp4"}},
        {"type": "text", "text": "What happens?"}]}]


# ---- the first run: no --model ----------------------------------------------------------

def test_default_model_greets(page, tmp_path, out_dir):
    """The embedded default model's fixed answer, as a new user sees it (screenshot)."""
    h = (ROOT / "engine" / "testmodel.h").read_text()
    body = re.search(r"#define TESTMODEL_GREETING(.*?)\n\n", h, re.S).group(1)
    greeting = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', body))
    s = Server(None, ["--api-key", API_KEY], env={"XDG_CACHE_HOME": str(tmp_path)})
    try:
        open_chat(page, s)
        send(page, "Hello! Who are you?", 64)
        wait_done(page)
        a = last_answer(page)
        assert a["answer"] == greeting, a
        assert a["finish"] == "stop", a
        page.screenshot(path=str(out_dir / "chat-page-default-model.png"))
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]
