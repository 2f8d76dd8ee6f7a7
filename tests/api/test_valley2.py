"""The server on a Valley2 (Valley-Eagle layout) test checkpoint, through the openai SDK
(tests/models.txt "valley2", written by valley-make-model --arch valley2: Qwen2.5 decoder,
slow tokenizer files only, the Qwen2.5 chat template, SigLIP + Qwen2-VL towers and the
conv_adapter projector in the folder).

  * the folder is recognised as Valley2 from config.json and the start-up log says so;
  * text chat (the server run with --no-implicit-image): usage.prompt_tokens and the prompt
    ids equal tests/golden/chat/valley2_api.json (made by
    tests/golden/make_valley2_chat_goldens.py: the checkpoint's chat_template rendered by
    jinja2, tokenized chunk by chunk with AutoTokenizer on the folder);
  * greedy decoding through the API gives the 32 tokens of transformers' Qwen2ForCausalLM
    (tests/golden/text/valley2.json, prompt "chat": the same rendered prompt);
  * thinking switches change nothing (Qwen2.5 has none) and the answer is not split into
    reasoning;
  * images (tests/golden/valley2/e2e.json, made by make_valley2_goldens.py --images: both
    towers in PyTorch, the prompt from the folder's template): usage.prompt_tokens and the
    prompt ids equal the reference's for a text-only request (the implicit black image through
    both towers), one image as a base64 data URL and from a loopback http server, three
    images, a wide image (its crop map pooled under the folder's max_vision_token of 500:
    prompt_tokens equal the reference's pooled count); the 32 greedy tokens equal the
    reference's for the first two;
  * the same images again are served from the prefix cache (keys over both towers' inputs),
    a changed image is not;
  * at --tensor-parallel-size 2 image prompts give the reference's tokens (both towers on
    every rank, each image encoded by one and broadcast);
  * an image request over the media-token limit is refused from its header, before decoding;
  * a video part is a 400 naming Valley2.
"""

import json
from pathlib import Path

import httpx
import pytest

from conftest import API_KEY, ROOT, Server, data_url, png_bytes
from test_release import http_client, make_model

GOLDENS = ROOT / "tests" / "golden" / "chat" / "valley2_api.json"
TEXT_GOLDENS = ROOT / "tests" / "golden" / "text" / "valley2.json"
E2E = ROOT / "tests" / "golden" / "valley2" / "e2e.json"
IMAGES = ROOT / "tests" / "golden"


@pytest.fixture(scope="module")
def valley2_dir(tmp_path_factory):
    return make_model(tmp_path_factory, "valley2")


@pytest.fixture(scope="module")
def valley2(valley2_dir):
    """text only: without the implicit image, the prompts of valley2_api.json as they are"""
    s = Server(valley2_dir, ["--api-key", API_KEY, "--no-implicit-image"])
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


@pytest.fixture(scope="module")
def valley2_img(valley2_dir):
    """images; exact numerics, as the float32 reference runs"""
    s = Server(valley2_dir, ["--api-key", API_KEY, "--max-body-bytes", "8MiB",
                             "--fetch-allow", "127.0.0.1", "--numerics", "exact"])
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


@pytest.fixture(scope="module")
def image_server():
    """http.server on 127.0.0.1 serving the golden images under /<path below tests/golden>"""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            f = IMAGES / self.path.lstrip("/")
            body = f.read_bytes() if f.suffix == ".png" and f.is_file() else None
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def client(server):
    from openai import OpenAI
    return OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)


def goldens():
    return json.loads(GOLDENS.read_text())


def openai_messages(g):
    return [{"role": m["role"], "content": m["text"]} for m in g["messages"]]


def test_recognised_as_valley2(valley2):
    model = Path(valley2.proc.args[valley2.proc.args.index("--model") + 1])
    assert not (model / "tokenizer.json").exists()
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["architectures"] == ["ValleyQwen2ForCausalLM"] and cfg["eos_token_id"] == 151645
    log = valley2.log_text()
    assert "Valley2 (Qwen2.5 decoder)" in log
    assert "Valley2 towers: SigLIP" in log and "vision yes" in log
    assert "server: model" in log and ": Valley2, " in log
    assert "generation stops at" in log and "151645" in log


@pytest.mark.parametrize("name", [g["name"] for g in goldens()])
def test_prompt_tokens_match_reference(valley2, name):
    g = next(g for g in goldens() if g["name"] == name)
    r = client(valley2).chat.completions.create(
        model="tiny", messages=openai_messages(g), max_tokens=1,
        extra_body={"return_token_ids": True})
    assert r.usage.prompt_tokens == len(g["ids"])
    assert r.model_extra["prompt_token_ids"] == g["ids"]
    with http_client(valley2) as c:
        t = c.post("/tokenize", json={"model": "tiny", "messages": openai_messages(g)})
    assert t.status_code == 200, t.text
    assert t.json()["tokens"] == g["ids"]


def test_greedy_matches_qwen2_reference(valley2):
    ref = next(p for p in json.loads(TEXT_GOLDENS.read_text())["prompts"] if p["name"] == "chat")
    r = client(valley2).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Write a haiku about paged attention."}],
        max_tokens=32, temperature=0, extra_body={"return_token_ids": True, "ignore_eos": True})
    assert r.model_extra["prompt_token_ids"] == ref["ids"]
    assert r.choices[0].model_extra["token_ids"] == ref["greedy"]


@pytest.mark.parametrize("think", [True, False])
def test_no_thinking_switch(valley2, think):
    g = goldens()[0]
    r = client(valley2).chat.completions.create(
        model="tiny", messages=openai_messages(g), max_tokens=4, temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": think}, "ignore_eos": True})
    assert r.usage.prompt_tokens == len(g["ids"])
    assert r.choices[0].message.model_extra.get("reasoning_content") is None
    assert r.usage.completion_tokens == 4


def e2e(name):
    return next(p for p in json.loads(E2E.read_text())["prompts"] if p["name"] == name)


def image_messages(g, urls):
    content = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return [{"role": "user", "content": content + [{"type": "text", "text": g["text"]}]}]


def data_urls(g):
    return [data_url((IMAGES / f).read_bytes()) for f in g["files"]]


def expected_ids(g, got):
    """the reference's ids, each image sentinel expanded to its token count of pad ids"""
    out, k = [], 0
    for t in g["ids"]:
        if t == -200:
            n = g["images"][k]["siglip_tokens"] + g["images"][k]["qwen2vl_tokens"]
            out += [got[len(out)]] * n
            k += 1
        else:
            out.append(t)
    return out


def check_prompt(r, g):
    ids = r.model_extra["prompt_token_ids"]
    assert r.usage.prompt_tokens == g["length"] == len(ids)
    assert ids == expected_ids(g, ids)


def test_text_only_gets_the_implicit_image(valley2_img):
    """the reference's 3x3 black image through both towers, then 32 greedy tokens as its"""
    g = e2e("text")
    r = client(valley2_img).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": g["text"]}], max_tokens=32,
        temperature=0, extra_body={"return_token_ids": True, "ignore_eos": True})
    check_prompt(r, g)
    assert g["images"][0]["siglip_tokens"] == 392 and g["images"][0]["qwen2vl_tokens"] == 4
    assert r.choices[0].model_extra["token_ids"] == g["greedy"]


def test_one_image_data_url_and_http(valley2_img, image_server):
    g = e2e("one")
    r = client(valley2_img).chat.completions.create(
        model="tiny", messages=image_messages(g, data_urls(g)), max_tokens=32, temperature=0,
        extra_body={"return_token_ids": True, "ignore_eos": True})
    check_prompt(r, g)
    assert r.choices[0].model_extra["token_ids"] == g["greedy"]
    # the same bytes from a loopback http server: the same prompt and tokens
    r2 = client(valley2_img).chat.completions.create(
        model="tiny", messages=image_messages(g, [image_server + "/" + f for f in g["files"]]),
        max_tokens=32, temperature=0, extra_body={"return_token_ids": True, "ignore_eos": True})
    check_prompt(r2, g)
    assert r2.choices[0].model_extra["token_ids"] == g["greedy"]
    with http_client(valley2_img) as c:
        t = c.post("/tokenize", json={"model": "tiny", "messages": image_messages(g, data_urls(g))})
    assert t.status_code == 200, t.text
    assert t.json()["count"] == g["length"]


@pytest.mark.parametrize("name", ["three", "wide"])
def test_prompt_tokens_with_images(valley2_img, name):
    """three images get one SigLIP tile each; the wide one three AnyRes crops, unpadded and
    pooled"""
    g = e2e(name)
    r = client(valley2_img).chat.completions.create(
        model="tiny", messages=image_messages(g, data_urls(g)), max_tokens=2, temperature=0,
        extra_body={"return_token_ids": True})
    check_prompt(r, g)
    assert r.usage.completion_tokens == 2


def test_wide_image_pools_through_the_api(valley2_img):
    """the folder's max_vision_token (500) is below the wide image's 196 + 12 x 42 SigLIP
    tokens: the server pools the crop map to the reference's 9 x 32 (484 SigLIP tokens, where
    the released cap keeps 700), and the greedy tokens follow the reference's"""
    g, unpooled = e2e("wide"), e2e("wide_unpooled")
    assert g["max_vision_token"] == 500 and unpooled["max_vision_token"] == 100000
    assert g["images"][0]["siglip_tokens"] == 196 + 9 * 32
    assert unpooled["images"][0]["siglip_tokens"] == 700
    r = client(valley2_img).chat.completions.create(
        model="tiny", messages=image_messages(g, data_urls(g)), max_tokens=8, temperature=0,
        extra_body={"return_token_ids": True, "ignore_eos": True})
    check_prompt(r, g)
    assert r.usage.prompt_tokens == g["length"] < unpooled["length"]
    assert r.choices[0].model_extra["token_ids"] == g["greedy"][:8]


def test_tensor_parallel_images_equal_one_engine(valley2_dir):
    """at --tensor-parallel-size 2 every rank encodes the image with both towers and its
    share of the heads (docs/TP.md): one image, three (the second encoded by rank 1 and
    broadcast) and the pooled wide image give the reference's prompt and greedy tokens, as the
    single engine does (exact numerics)"""
    s = Server(valley2_dir, ["--api-key", API_KEY, "--max-body-bytes", "8MiB",
                             "--numerics", "exact", "--tensor-parallel-size", "2"])
    try:
        for name, n in (("one", 32), ("three", 8), ("wide", 8)):
            g = e2e(name)
            r = client(s).chat.completions.create(
                model="tiny", messages=image_messages(g, data_urls(g)), max_tokens=n,
                temperature=0, extra_body={"return_token_ids": True, "ignore_eos": True})
            check_prompt(r, g)
            assert r.choices[0].model_extra["token_ids"] == g["greedy"][:n], name
        assert "tp: 2 ranks" in s.log_text()
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]


def test_media_tokens_refused_before_decoding(valley2_dir):
    """the wide image (484 pooled SigLIP + 396 Qwen2-VL tokens) over an 850-token limit: refused from
    its header, so a body cut after the header gives the same answer, not a decode error"""
    from openai import BadRequestError
    g, one = e2e("wide"), e2e("one")
    s = Server(valley2_dir, ["--api-key", API_KEY, "--max-body-bytes", "8MiB",
                             "--max-media-tokens-per-request", "850"])
    try:
        png = (IMAGES / g["files"][0]).read_bytes()
        for body in (png, png[:64]):
            with pytest.raises(BadRequestError) as ei:
                client(s).chat.completions.create(
                    model="tiny", messages=image_messages(g, [data_url(body)]), max_tokens=1)
            err = ei.value.body
            assert "come to 880 tokens" in err["message"] and "850" in err["message"], err
            assert err["param"] == "messages"
        r = client(s).chat.completions.create(
            model="tiny", messages=image_messages(one, data_urls(one)), max_tokens=1)
        assert r.usage.prompt_tokens == one["length"]
        assert httpx.get(s.url + "/health", timeout=10).status_code == 200
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]


def test_repeated_images_hit_the_prefix_cache(valley2_img):
    """the same three images again: their blocks (keyed by both towers' inputs) come from the
    prefix cache and the answer is the same; with the third image changed (same size, so the
    same token count) nothing from its span on is a hit"""
    g = e2e("three")
    body = dict(model="tiny", max_tokens=8, temperature=0,
                extra_body={"return_token_ids": True, "ignore_eos": True})
    urls = data_urls(g)
    r1 = client(valley2_img).chat.completions.create(messages=image_messages(g, urls), **body)
    r2 = client(valley2_img).chat.completions.create(messages=image_messages(g, urls), **body)
    last = g["spans"][-1][0] + g["images"][-1]["siglip_tokens"] + g["images"][-1]["qwen2vl_tokens"]
    assert r2.usage.prompt_tokens_details.cached_tokens >= last
    assert r2.choices[0].model_extra["token_ids"] == r1.choices[0].model_extra["token_ids"]
    w, h = g["images"][-1]["size"]
    r3 = client(valley2_img).chat.completions.create(
        messages=image_messages(g, urls[:-1] + [data_url(png_bytes(w, h, seed=5))]), **body)
    assert r3.usage.prompt_tokens == g["length"]
    assert r3.usage.prompt_tokens_details.cached_tokens <= g["spans"][-1][0]


def test_video_is_a_clear_400(valley2_img):
    """Valley2's video path is not served: refused by name before anything is fetched"""
    from openai import BadRequestError
    msgs = [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "http://127.0.0.1:9/never-fetched.mp4"}},
        {"type": "text", "text": "What happens?"}]}]
    with pytest.raises(BadRequestError) as ei:
        client(valley2_img).chat.completions.create(model="tiny", messages=msgs, max_tokens=1)
    err = ei.value.body
    assert "video parts are not supported for Valley2 checkpoints" in err["message"], err
    assert err["param"] == "messages"
    assert httpx.get(valley2_img.url + "/health", timeout=10).status_code == 200
