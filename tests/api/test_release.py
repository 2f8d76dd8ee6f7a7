"""The server on checkpoints shaped like the released Valley2.5 folder (tests/models.txt
"release" and "release_script", written by valley-make-model --layout release): only the slow
tokenizer files with the 10 Valley added tokens, weights in shards, config.json without
use_special_start_end_token and with eos 151643 only.

  * the server starts from a folder without tokenizer.json and logs the marker ids;
  * /tokenize and usage.prompt_tokens equal tests/golden/chat/release.json (made by
    tests/golden/make_chat_goldens.py: images wrapped as single added ids, each image resized
    by fetch_image with its own limits and then by the processor with mm_processor_kwargs,
    thinking on and off);
  * a request whose first sampled token is <|im_end|> ends with finish_reason "stop" and no
    further tokens, although the checkpoint's eos lists only <|endoftext|>.
"""

import json
import shlex
import struct
import subprocess
import zlib
from pathlib import Path

import httpx
import pytest

from conftest import API_KEY, ROOT, Server, binary, data_url, fixtures_dir

GOLDENS = Path(__file__).resolve().parents[1] / "golden" / "chat" / "release.json"


def model_args(name: str) -> list:
    for line in (ROOT / "tests" / "models.txt").read_text().splitlines():
        if line.startswith(name + ":"):
            return shlex.split(line.split(":", 1)[1])
    raise AssertionError(f"tests/models.txt has no {name} model")


def make_model(tmp_path_factory, name: str) -> Path:
    tok = fixtures_dir() / "qwen3-tokenizer"
    if not tok.is_dir():
        pytest.skip("the release checkpoints are built from the Qwen3 tokenizer fixture")
    out = tmp_path_factory.mktemp(name) / name
    subprocess.run([str(binary("valley-make-model")), "--out", str(out), "--tokenizer", str(tok),
                    *model_args(name)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=300)
    return out


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = make_model(tmp_path_factory, "release")
    s = Server(out, ["--api-key", API_KEY, "--max-body-bytes", "16MiB"])
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


@pytest.fixture(scope="module")
def release_script(tmp_path_factory):
    out = make_model(tmp_path_factory, "release_script")
    s = Server(out, ["--api-key", API_KEY])
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


def http_client(server):
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"},
                        timeout=300)


def png(w: int, h: int) -> bytes:
    """A w x h RGB PNG: a horizontal ramp that shifts every row (fast to build, small)."""
    ramp = bytes((x * 5 + c * 40) & 255 for x in range(w + 256) for c in range(3))
    rows = b"".join(b"\x00" + ramp[3 * (y % 256): 3 * (y % 256 + w)] for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def goldens():
    return json.loads(GOLDENS.read_text())


def openai_messages(g):
    """The golden conversation as a client sends it: image parts first, then the text (the
    canonical form; user-placed markers stay in the text)."""
    sizes = iter(g["images"])
    out = []
    for m in g["messages"]:
        if m["role"] != "user" or not m["n_images"]:
            out.append({"role": m["role"], "content": m["text"]})
            continue
        parts = [{"type": "image_url", "image_url": {"url": data_url(png(*next(sizes)))}}
                 for _ in range(m["n_images"])]
        parts.append({"type": "text", "text": m["text"]})
        out.append({"role": "user", "content": parts})
    return out


def request_extra(g):
    extra = {"chat_template_kwargs": {"enable_thinking": g["opts"]["enable_thinking"]}}
    if g["mm_processor_kwargs"]:
        extra["mm_processor_kwargs"] = g["mm_processor_kwargs"]
    return extra


def test_starts_without_tokenizer_json(release):
    model = Path(release.proc.args[release.proc.args.index("--model") + 1])
    assert not (model / "tokenizer.json").exists()
    assert (model / "vocab.json").exists() and (model / "merges.txt").exists()
    assert (model / "model.safetensors.index.json").exists()
    cfg = json.loads((model / "config.json").read_text())
    assert "use_special_start_end_token" not in cfg and cfg["eos_token_id"] == 151643
    assert cfg["vocab_size"] == 151679
    assert httpx.get(release.url + "/health", timeout=10).status_code == 200
    log = release.log_text()
    assert "image markers <im_start> = [151669], <im_end> = [151670]" in log
    assert "images are wrapped as <im_start><image><im_end> (config.json does not say false)" in log
    assert "generation stops at" in log and "151645" in log


@pytest.mark.parametrize("name", [g["name"] for g in goldens()])
def test_tokenize_matches_release_golden(release, name):
    g = next(g for g in goldens() if g["name"] == name)
    body = {"model": "tiny", "messages": openai_messages(g), **request_extra(g)}
    with http_client(release) as c:
        r = c.post("/tokenize", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["tokens"] == g["expanded"]


@pytest.mark.parametrize("name", ["one image, thinking off",
                                  "1080p at max_pixels 200704: 1932x1092 then 588x336",
                                  "900x506 at max_pixels 200704: two stages 252 tokens, one "
                                  "stage would give 231",
                                  "text only: the implicit image, wrapped"])
def test_prompt_tokens_match_release_golden(release, name):
    from openai import OpenAI
    g = next(g for g in goldens() if g["name"] == name)
    client = OpenAI(base_url=release.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)
    r = client.chat.completions.create(model="tiny", messages=openai_messages(g), max_tokens=1,
                                       extra_body=request_extra(g))
    assert r.usage.prompt_tokens == len(g["expanded"])


def test_goldens_tell_one_stage_from_two():
    """The goldens hold the reference sizes; these cases make /tokenize fail if the server
    gave the user's limits to fetch_image too."""
    g = next(g for g in goldens() if g["name"].startswith("1080p"))
    assert g["resized"] == [[588, 336]] and g["image_tokens"] == [252]
    g = next(g for g in goldens() if g["name"].startswith("900x506"))
    assert g["image_tokens"] == [252] and g["one_stage_image_tokens"] == [231]
    g = next(g for g in goldens() if "min_pixels" in g["name"])
    assert g["image_tokens"] != g["one_stage_image_tokens"]


@pytest.mark.parametrize("think", [True, False])
def test_im_end_first_stops_with_eos_151643_only(release_script, think):
    from openai import OpenAI
    model = Path(release_script.proc.args[release_script.proc.args.index("--model") + 1])
    assert json.loads((model / "config.json").read_text())["eos_token_id"] == 151643
    client = OpenAI(base_url=release_script.url + "/v1", api_key=API_KEY, max_retries=0,
                    timeout=120)
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=16,
        extra_body={"chat_template_kwargs": {"enable_thinking": think}}, logprobs=True)
    ch = r.choices[0]
    assert ch.finish_reason == "stop"
    assert not ch.message.content
    assert r.usage.completion_tokens == 1  # <|im_end|> itself, nothing after it
    # the same request may still run on with ignore_eos
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
        extra_body={"chat_template_kwargs": {"enable_thinking": think}, "ignore_eos": True})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3


def test_image_start_end_tokens_off_overrides_the_default(tmp_path_factory):
    """auto (the default) wraps on this folder (no use_special_start_end_token key); off
    leaves the markers out."""
    out = make_model(tmp_path_factory, "release")
    s = Server(out, ["--api-key", API_KEY, "--image-start-end-tokens", "off"])
    try:
        with http_client(s) as c:
            r = c.post("/tokenize", json={"model": "tiny",
                                          "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 200, r.text
        toks = r.json()["tokens"]
        assert 151669 not in toks and 151670 not in toks and toks.count(151655) == 4
        assert "images are not wrapped as <im_start><image><im_end> (--image-start-end-tokens)" \
            in s.log_text()
    finally:
        assert s.stop() == 0
