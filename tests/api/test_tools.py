"""Tool calling through the official openai SDK (vLLM's --enable-auto-tool-choice
--tool-call-parser hermes behaviour): requests with tools are accepted in both shapes, the
unsupported tool_choice values are 400s, a conversation with assistant tool calls and tool
results is accepted, /tokenize with tools gives the ids of the jinja2 golden rendering
(tests/golden/chat/conversations.json), the SDK reads the response and stream shapes the
output path makes of canned outputs (tests/api/tool_shapes.c), and, end to end on generated
tokens, the scripted decoder's <tool_call> becomes message.tool_calls (streamed and not, n=3,
tool_choice none, cut by max_tokens). The parser's edge cases are in tests/unit/test_tools.c."""
import json
import subprocess
from pathlib import Path

import openai
import pytest
from conftest import build_dir

GOLDENS = Path(__file__).resolve().parents[1] / "golden" / "chat" / "conversations.json"

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object",
                   "properties": {"location": {"type": "string"},
                                  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["location"]}}}
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]
CALL = {"id": "call_abc123", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"location": "Paris, France"}'}}


def test_tools_request_accepted(client):
    r = client.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER],
                                       max_tokens=4, temperature=0)
    c = r.choices[0]
    assert r.object == "chat.completion"
    assert c.message.role == "assistant"
    assert c.finish_reason in ("stop", "length", "tool_calls")
    assert not c.message.tool_calls  # the random model writes no <tool_call> block
    assert r.usage.prompt_tokens > 0


def test_tools_stream_accepted(client):
    stream = client.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER],
                                            tool_choice="auto", parallel_tool_calls=True,
                                            max_tokens=4, stream=True)
    finish = None
    for chunk in stream:
        for c in chunk.choices:
            finish = c.finish_reason or finish
    assert finish in ("stop", "length", "tool_calls")


def test_tool_choice_none_accepted(client):
    r = client.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER],
                                       tool_choice="none", max_tokens=2)
    assert r.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("choice", ["required",
                                    {"type": "function", "function": {"name": "get_weather"}}])
def test_tool_choice_forced_accepted(client, choice):
    """Forced calls are constrained decoding (tests/api/test_structured.py checks them in
    full); two tokens are only the start of a <tool_call> block."""
    r = client.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER],
                                       tool_choice=choice, max_tokens=2)
    assert r.choices[0].finish_reason == "length"


def test_bad_tool_names_the_field(http):
    bad = {"type": "function", "function": {"description": "no name"}}
    r = http.post("/v1/chat/completions", json={"model": "tiny", "messages": ASK,
                                                "tools": [WEATHER, bad]})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "tools[1].function.name"


def test_multi_turn_with_tool_results(client):
    msgs = ASK + [{"role": "assistant", "content": None, "tool_calls": [CALL]},
                  {"role": "tool", "tool_call_id": "call_abc123",
                   "content": '{"temperature": 21, "condition": "sunny"}'}]
    r = client.chat.completions.create(model="tiny", messages=msgs, tools=[WEATHER],
                                       max_tokens=3)
    assert r.choices[0].message.role == "assistant"
    # a tool message straight after the user message is refused (roles)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", max_tokens=2, tools=[WEATHER],
                                       messages=ASK + [{"role": "tool", "tool_call_id": "x",
                                                        "content": "r"}])


def openai_messages(golden):
    """The golden's messages as an OpenAI client sends them."""
    out = []
    for m in golden["messages"]:
        msg = {"role": m["role"], "content": m["text"]}
        if m.get("tool_calls"):
            msg["tool_calls"] = [{"id": "call_%d" % k, "type": "function",
                                  "function": {"name": c["name"], "arguments": c["arguments"]}}
                                 for k, c in enumerate(m["tool_calls"])]
        if m["role"] == "tool":
            msg["tool_call_id"] = "call_0"
        out.append(msg)
    return out


@pytest.mark.parametrize("name", ["tools: one tool", "tools: several tools, nested schemas",
                                  "tools: call without content, tool result last",
                                  "tools: parallel calls and results"])
def test_tokenize_with_tools_matches_golden(http, name):
    golden = next(g for g in json.loads(GOLDENS.read_text()) if g["name"] == name)
    o = golden["opts"]
    # the server's defaults: thinking on, the default system prompt, the implicit image
    assert o["enable_thinking"] and o["implicit_image"] and not o["default_system"]
    msgs = openai_messages(golden)
    body = {"model": "tiny", "messages": msgs}
    with_tools = http.post("/tokenize", json={**body, "tools": golden["tools"]}).json()
    plain = http.post("/tokenize", json=body).json()
    t, p = with_tools["tokens"], plain["tokens"]
    assert with_tools["count"] == len(t)
    ids = golden["ids"]
    cut = ids.index(-200)  # the implicit image: its tokens depend on the model's config
    prefix, suffix = ids[:cut], ids[cut + 1:]
    assert t[:len(prefix)] == prefix  # system turn with the tools block, "<|im_start|>user\n"
    assert t[len(t) - len(suffix):] == suffix
    # the image region is the same with and without tools
    rest = t[len(prefix):]
    assert p[len(p) - len(rest):] == rest
    assert len(t) > len(p)


def shapes(model_output: str):
    """tool_shapes on a canned output -> (ChatCompletion, the stream's final completion)."""
    from openai.lib.streaming.chat._completions import ChatCompletionStreamState
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
    exe = build_dir() / "tests" / "tool_shapes"
    if not exe.exists():
        pytest.skip(f"{exe} not built")
    out = subprocess.run([str(exe)], input=model_output.encode(), capture_output=True,
                         check=True, timeout=60).stdout.decode()
    lines = out.split("\n")
    plain = ChatCompletion.model_validate(json.loads(lines[0]))
    state = ChatCompletionStreamState()
    n_tool_chunks = 0
    for line in lines[1:]:
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = ChatCompletionChunk.model_validate(json.loads(line[6:]))
            n_tool_chunks += bool(chunk.choices and chunk.choices[0].delta.tool_calls)
            state.handle_chunk(chunk)
    return plain, state.get_final_completion(), n_tool_chunks


def test_sdk_reads_tool_calls():
    text = ('<think>\nThe user wants the weather.\n</think>\n\nChecking both.\n<tool_call>\n'
            '{"name": "get_weather", "arguments": {"location": "Paris", "n": 1.0, "t": "é"}}\n'
            '</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": '
            '{"location": "Rome"}}\n</tool_call>')
    plain, streamed, n_tool_chunks = shapes(text)
    assert n_tool_chunks == 2  # one delta per completed call
    for done in (plain, streamed):
        c = done.choices[0]
        assert c.finish_reason == "tool_calls"
        assert c.message.content == "\n\nChecking both.\n"  # the think split keeps "\n\n"
        assert c.message.reasoning_content == "\nThe user wants the weather.\n"
        calls = c.message.tool_calls
        assert [t.function.name for t in calls] == ["get_weather", "get_weather"]
        assert calls[0].function.arguments == '{"location": "Paris", "n": 1.0, "t": "é"}'
        assert json.loads(calls[1].function.arguments) == {"location": "Rome"}
        assert all(t.type == "function" and t.id.startswith("call_") and len(t.id) == 29
                   for t in calls)
        assert calls[0].id != calls[1].id


def test_sdk_reads_calls_only_and_malformed():
    plain, streamed, _ = shapes('<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>')
    for done in (plain, streamed):
        assert done.choices[0].message.content in (None, "")
        assert done.choices[0].message.tool_calls[0].function.arguments == "{}"
    assert plain.choices[0].message.content is None
    bad = '<tool_call>\n{"name": "f", "arguments": {}\n</tool_call>'
    plain, streamed, n_tool_chunks = shapes(bad)
    assert n_tool_chunks == 0
    for done in (plain, streamed):
        assert done.choices[0].finish_reason == "stop"
        assert done.choices[0].message.content == bad
        assert not done.choices[0].message.tool_calls


# ==== End to end on generated tokens: the scripted decoder of tests/models.txt ====
# After a thinking-off prompt it writes TOOL_TEXT (test_scripted.py); with tools given, the
# server must turn it into a tool call.

from test_scripted import NO_THINK, TOOL_TEXT, scripted, sclient  # noqa: E402,F401 (fixtures)


def ask_tools(client, **kw):
    kw.setdefault("max_tokens", 32)
    kw.setdefault("tools", [WEATHER])
    return client.chat.completions.create(model="tiny", messages=ASK, extra_body=NO_THINK, **kw)


def test_scripted_tool_call(sclient):
    r = ask_tools(sclient)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    assert c.message.content is None
    (call,) = c.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and len(call.id) == 29
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Paris"}'  # json.dumps of the parsed arguments


def test_scripted_tool_call_streamed(sclient):
    from openai.lib.streaming.chat._completions import ChatCompletionStreamState
    state = ChatCompletionStreamState()
    content, n_tool_chunks = "", 0
    for chunk in ask_tools(sclient, stream=True, stream_options={"include_usage": True}):
        state.handle_chunk(chunk)
        if chunk.choices:
            content += chunk.choices[0].delta.content or ""
            n_tool_chunks += bool(chunk.choices[0].delta.tool_calls)
    done = state.get_final_completion()
    assert n_tool_chunks == 1 and content == ""
    assert done.choices[0].finish_reason == "tool_calls"
    (call,) = done.choices[0].message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')


def test_scripted_n3_unique_ids(sclient):
    r = ask_tools(sclient, n=3, temperature=1.0, seed=5)
    ids = set()
    for c in r.choices:
        assert c.finish_reason == "tool_calls"
        assert c.message.tool_calls[0].function.name == "get_weather"
        ids.add(c.message.tool_calls[0].id)
    assert len(ids) == 3


def test_scripted_tool_choice_none_and_no_tools(sclient):
    for kw in ({"tool_choice": "none"}, {"tools": openai.NOT_GIVEN}):
        r = ask_tools(sclient, **kw)
        assert r.choices[0].finish_reason == "stop"
        assert r.choices[0].message.content == TOOL_TEXT
        assert not r.choices[0].message.tool_calls


def test_scripted_cut_inside_the_call(sclient):
    # max_tokens ends the output inside the block: no call, the text stays content
    r = ask_tools(sclient, max_tokens=4)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content.startswith("<tool_call>")
    assert not r.choices[0].message.tool_calls
    streamed = "".join(ch.choices[0].delta.content or "" for ch in
                       ask_tools(sclient, max_tokens=4, stream=True) if ch.choices)
    assert streamed == r.choices[0].message.content
