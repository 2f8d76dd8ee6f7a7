"""Stopping at <|im_end|> when the checkpoint's eos lists only <|endoftext|> (Qwen3 Base
configs do; the chat reference still ends at <|im_end|>), on a folder shaped like the
release's tokenizer: only the slow files (vocab.json, merges.txt, ...; no tokenizer.json)
with the 10 Valley added tokens.

The model is a scripted decoder (engine/testmodel.h) whose first token after either
generation prompt ("\\n" thinking on, "\\n\\n" thinking off) is <|im_end|> (151645);
config.json and generation_config.json are rewritten to eos_token_id 151643 only.
"""

import json
import shlex
import subprocess

import httpx
import pytest

from conftest import API_KEY, ROOT, Server, binary, fixtures_dir

IM_END, ENDOFTEXT = 151645, 151643


def script_geometry() -> list:
    """The script model's geometry from tests/models.txt, without its --script."""
    for line in (ROOT / "tests" / "models.txt").read_text().splitlines():
        if line.startswith("script:"):
            args = shlex.split(line.split(":", 1)[1])
            i = args.index("--script")
            return args[:i] + args[i + 2:]
    raise AssertionError("tests/models.txt has no script model")


@pytest.fixture(scope="module")
def stopper(tmp_path_factory):
    tok = fixtures_dir() / "qwen3-tokenizer"
    if not tok.is_dir():
        pytest.skip("the scripted model's ids are the Qwen3 tokenizer's (fixture missing)")
    out = tmp_path_factory.mktemp("stop") / "im-end-first"
    subprocess.run([str(binary("valley-make-model")), "--out", str(out), "--tokenizer", str(tok),
                    *script_geometry(), "--script", f"198,{IM_END},-1,271,{IM_END}",
                    "--slow-tokenizer", "--valley-tokens"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    assert not (out / "tokenizer.json").exists()
    for name in ("config.json", "generation_config.json"):
        cfg = json.loads((out / name).read_text())
        cfg["eos_token_id"] = ENDOFTEXT
        (out / name).write_text(json.dumps(cfg, indent=2))
    s = Server(out, ["--api-key", API_KEY])
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


def chat(server, **body):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
            "logprobs": True, **body}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120,
                   headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_start_up_log_names_tokenizer_files_and_stop_set(stopper):
    log = stopper.log_text()
    assert "slow files vocab.json + merges.txt + tokenizer_config.json" in log
    assert "(151679 ids, 36 added)" in log
    assert "generation stops at 151645 <|im_end|>, 151643 <|endoftext|>" in log


@pytest.mark.parametrize("thinking", [True, False])
def test_first_token_im_end_stops(stopper, thinking):
    r = chat(stopper, chat_template_kwargs={"enable_thinking": thinking})
    c = r["choices"][0]
    assert c["finish_reason"] == "stop"
    assert c["message"]["content"] in ("", None)
    assert r["usage"]["completion_tokens"] == 1  # <|im_end|> alone, counted, then nothing
    assert [t["token"] for t in c["logprobs"]["content"]] in ([], ["<|im_end|>"])


def test_first_token_im_end_stops_streamed(stopper):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
            "stream": True, "stream_options": {"include_usage": True}}
    finish, text, usage = None, "", None
    with httpx.stream("POST", stopper.url + "/v1/chat/completions", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for ch in chunk.get("choices", []):
                text += ch["delta"].get("content") or ""
                finish = ch.get("finish_reason") or finish
    assert finish == "stop" and text == ""
    assert usage["completion_tokens"] == 1


def test_ignore_eos_overrides(stopper):
    r = chat(stopper, max_tokens=3, ignore_eos=True)
    assert r["choices"][0]["finish_reason"] == "length"
    assert r["usage"]["completion_tokens"] == 3
