"""What only a trained model emits, end to end through the official openai SDK: the server runs
the scripted decoder of tests/models.txt ("script", engine/testmodel.h), whose greedy and
sampled output after a thinking-on generation prompt is

    <think>Let me check.</think>Hello!<|im_end|>

and after a thinking-off prompt

    <tool_call>{"name":"get_weather","arguments":{"city": "Paris"}}</tool_call><|im_end|>

so the split into reasoning_content / content is checked on real generated tokens, streamed
and not, instead of only on canned text.
"""

import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import API_KEY, ROOT, Server, binary, fixtures_dir

THINK = {"chat_template_kwargs": {"enable_thinking": True}}
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}
TOOL_TEXT = '<tool_call>{"name":"get_weather","arguments":{"city": "Paris"}}</tool_call>'


def script_args() -> list:
    for line in (ROOT / "tests" / "models.txt").read_text().splitlines():
        if line.startswith("script:"):
            return shlex.split(line.split(":", 1)[1])
    raise AssertionError("tests/models.txt has no script model")


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    tok = fixtures_dir() / "qwen3-tokenizer"
    if not tok.is_dir():
        pytest.skip("the scripted model's ids are the Qwen3 tokenizer's (fixture missing)")
    out = tmp_path_factory.mktemp("script") / "scripted-valley"
    subprocess.run([str(binary("valley-make-model")), "--out", str(out), "--tokenizer", str(tok),
                    *script_args()], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=300)
    s = Server(out, ["--api-key", API_KEY, "--max-n", "4"])
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


@pytest.fixture()
def sclient(scripted):
    from openai import OpenAI
    return OpenAI(base_url=scripted.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def ask(client, extra, **kw):
    kw.setdefault("max_tokens", 32)
    return client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        extra_body=extra, **kw)


def test_thinking_split_into_reasoning_content(sclient):
    r = ask(sclient, THINK)
    msg = r.choices[0].message
    assert getattr(msg, "reasoning_content", None) == "Let me check."
    assert msg.content == "Hello!"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 9  # <think> ... <|im_end|>, EOS counted


def test_thinking_split_streamed(sclient):
    reasoning, content, finish = "", "", None
    for chunk in ask(sclient, THINK, stream=True):
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        reasoning += getattr(d, "reasoning_content", None) or ""
        content += d.content or ""
        finish = chunk.choices[0].finish_reason or finish
    assert reasoning == "Let me check."
    assert content == "Hello!"
    assert finish == "stop"


def test_sampled_choices_follow_the_script(sclient):
    r = ask(sclient, THINK, n=3, temperature=1.0, seed=11)
    assert len(r.choices) == 3
    for c in r.choices:
        assert c.message.content == "Hello!"
        assert getattr(c.message, "reasoning_content", None) == "Let me check."


def test_thinking_off_the_other_chain(sclient):
    r = ask(sclient, NO_THINK)
    msg = r.choices[0].message
    assert getattr(msg, "reasoning_content", None) in (None, "")
    assert msg.content == TOOL_TEXT
    assert r.choices[0].finish_reason == "stop"


def test_stop_string_inside_the_reasoning(sclient):
    # the stop string cuts the output inside <think>: what was generated is reasoning
    r = ask(sclient, THINK, stop=[" check"])
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "stop"
    assert getattr(msg, "reasoning_content", None) == "Let me"
    assert msg.content in (None, "")


def test_length_inside_the_reasoning(sclient):
    # max_tokens ends the output before </think>: still reasoning, finish_reason length
    r = ask(sclient, THINK, max_tokens=3)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "length"
    assert getattr(msg, "reasoning_content", None) == "Let me"
    assert msg.content in (None, "")
