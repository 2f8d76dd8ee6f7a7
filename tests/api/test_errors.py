"""Bad input table: each case gets the right status and an OpenAI error body, and the server
stays healthy afterwards."""

import base64
import socket

import httpx
import pytest

from conftest import API_KEY, data_url, png_bytes

MSG = [{"role": "user", "content": "hi"}]


def body(**kw):
    b = {"model": "tiny", "messages": MSG, "max_tokens": 2}
    b.update(kw)
    return b


def cbody(**kw):
    b = {"model": "tiny", "prompt": "hi", "max_tokens": 2}
    b.update(kw)
    return b


def rbody(**kw):
    b = {"model": "tiny", "input": "hi", "max_output_tokens": 2}
    b.update(kw)
    return b


R = "/v1/responses"
FC = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
RTOOL = {"type": "function", "name": "f", "parameters": {"type": "object"}}


def ritem(*parts):
    return [{"role": "user", "content": list(parts)}]


def img_msg(url):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "what is this?"}]}]


# (name, path, json body or raw bytes, expected status, expected param or None)
CASES = [
    ("invalid json", "/v1/chat/completions", b"{not json", 400, None),
    ("empty body", "/v1/chat/completions", b"", 400, None),
    ("json array", "/v1/chat/completions", b"[1,2]", 400, None),
    ("messages wrong type", "/v1/chat/completions", body(messages="hi"), 400, "messages"),
    ("messages missing", "/v1/chat/completions", {"model": "tiny"}, 400, "messages"),
    ("empty messages", "/v1/chat/completions", body(messages=[]), 400, "messages"),
    ("empty role", "/v1/chat/completions",
     body(messages=[{"role": "", "content": "x"}]), 400, "messages[0].role"),
    ("only a custom role", "/v1/chat/completions",
     body(messages=[{"role": "wizard", "content": "x"}]), 400, "messages"),
    ("tool message first", "/v1/chat/completions",
     body(messages=[{"role": "tool", "content": "x"}]), 400, "messages"),
    ("image in a custom role", "/v1/chat/completions",
     body(messages=[{"role": "critic", "content": [{"type": "image_url",
                                                     "image_url": {"url": "data:,"}}]}]),
     400, "messages[0].content[0].image_url"),
    ("content wrong type", "/v1/chat/completions",
     body(messages=[{"role": "user", "content": 5}]), 400, "messages[0].content"),
    ("part type unknown", "/v1/chat/completions",
     body(messages=[{"role": "user", "content": [{"type": "audio"}]}]), 400,
     "messages[0].content[0].type"),
    ("temperature wrong type", "/v1/chat/completions", body(temperature="hot"), 400, "temperature"),
    ("temperature out of range", "/v1/chat/completions", body(temperature=5), 400, "temperature"),
    ("top_p out of range", "/v1/chat/completions", body(top_p=0), 400, "top_p"),
    ("max_tokens zero", "/v1/chat/completions", body(max_tokens=0), 400, "max_tokens"),
    ("max_tokens negative", "/v1/chat/completions", body(max_tokens=-5), 400, "max_tokens"),
    ("max_tokens float", "/v1/chat/completions", body(max_tokens=1.5), 400, "max_tokens"),
    ("max_tokens over context", "/v1/chat/completions", body(max_tokens=100000), 400, "max_tokens"),
    ("n over limit", "/v1/chat/completions", body(n=9), 400, "n"),
    ("n zero", "/v1/chat/completions", body(n=0), 400, "n"),
    ("stop wrong type", "/v1/chat/completions", body(stop=5), 400, "stop"),
    ("stream wrong type", "/v1/chat/completions", body(stream="yes"), 400, "stream"),
    ("top_logprobs without logprobs", "/v1/chat/completions", body(top_logprobs=2), 400,
     "top_logprobs"),
    ("top_logprobs over 20", "/v1/chat/completions", body(logprobs=True, top_logprobs=21), 400,
     "top_logprobs"),
    ("unknown model", "/v1/chat/completions", body(model="gpt-9"), 404, "model"),
    ("prompt over max-model-len", "/v1/chat/completions",
     body(messages=[{"role": "user", "content": "word " * 5000}]), 400, None),
    ("image not an image", "/v1/chat/completions",
     body(messages=img_msg("data:image/png;base64," + base64.b64encode(b"hello").decode())),
     400, None),
    ("bad base64", "/v1/chat/completions", body(messages=img_msg("data:image/png;base64,@@@!")),
     400, None),
    ("image url bad scheme", "/v1/chat/completions", body(messages=img_msg("ftp://x/y.png")),
     400, None),
    ("pixels kwargs out of range", "/v1/chat/completions",
     body(mm_processor_kwargs={"max_pixels": 10}), 400, "mm_processor_kwargs.max_pixels"),
    ("completions prompt missing", "/v1/completions", {"model": "tiny"}, 400, "prompt"),
    ("completions prompt bad ids", "/v1/completions", {"model": "tiny", "prompt": [-1, 5]}, 400,
     "prompt"),
    ("detokenize bad tokens", "/detokenize", {"tokens": "abc"}, 400, "tokens"),
    # logit_bias, completions batches, echo, prompt_logprobs and vLLM's extras
    ("logit_bias not an object", "/v1/chat/completions", body(logit_bias=[1]), 400,
     "logit_bias"),
    ("logit_bias key not an id", "/v1/chat/completions", body(logit_bias={"abc": 1}), 400,
     "logit_bias.abc"),
    ("logit_bias key negative", "/v1/chat/completions", body(logit_bias={"-1": 1}), 400,
     "logit_bias.-1"),
    ("logit_bias key past the vocab", "/v1/completions",
     cbody(logit_bias={"99999999": 1}), 400, "logit_bias.99999999"),
    ("logit_bias key with junk", "/v1/completions", cbody(logit_bias={"12x": 1}), 400,
     "logit_bias.12x"),
    ("logit_bias value not a number", "/v1/completions", cbody(logit_bias={"5": "up"}), 400,
     "logit_bias.5"),
    ("prompt list mixed", "/v1/completions", cbody(prompt=["a", [1, 2]]), 400, "prompt"),
    ("prompt list empty", "/v1/completions", cbody(prompt=[]), 400, "prompt"),
    ("prompt id list bad id", "/v1/completions", cbody(prompt=[[1], [-3]]), 400, "prompt[1]"),
    ("prompt list entry too long", "/v1/completions",
     cbody(prompt=["hi", "word " * 5000]), 400, "prompt[1]"),
    ("prompt list too long", "/v1/completions", cbody(prompt=["a"] * 257), 400, "prompt"),
    ("suffix", "/v1/completions", cbody(suffix="the end"), 400, "suffix"),
    ("suffix wrong type", "/v1/completions", cbody(suffix=3), 400, "suffix"),
    ("echo wrong type", "/v1/completions", cbody(echo="yes"), 400, "echo"),
    ("completions max_tokens 0 without echo", "/v1/completions", cbody(max_tokens=0), 400,
     "max_tokens"),
    ("prompt_logprobs over 20", "/v1/completions", cbody(prompt_logprobs=21), 400,
     "prompt_logprobs"),
    ("prompt_logprobs -1 (whole vocab)", "/v1/chat/completions", body(prompt_logprobs=-1), 400,
     "prompt_logprobs"),
    ("prompt_logprobs wrong type", "/v1/chat/completions", body(prompt_logprobs="2"), 400,
     "prompt_logprobs"),
    ("prompt_logprobs with stream", "/v1/completions", cbody(prompt_logprobs=2, stream=True), 400,
     "prompt_logprobs"),
    ("return_token_ids wrong type", "/v1/completions", cbody(return_token_ids="yes"), 400,
     "return_token_ids"),
    ("return_tokens_as_token_ids wrong type", "/v1/chat/completions",
     body(return_tokens_as_token_ids=1), 400, "return_tokens_as_token_ids"),
    ("include_reasoning wrong type", "/v1/chat/completions", body(include_reasoning="no"), 400,
     "include_reasoning"),
    ("truncate_prompt_tokens zero", "/v1/completions", cbody(truncate_prompt_tokens=0), 400,
     "truncate_prompt_tokens"),
    ("truncate_prompt_tokens below -1", "/v1/completions", cbody(truncate_prompt_tokens=-2), 400,
     "truncate_prompt_tokens"),
    ("truncate_prompt_tokens float", "/v1/chat/completions", body(truncate_prompt_tokens=2.5),
     400, "truncate_prompt_tokens"),
    ("truncate_prompt_tokens over max_model_len", "/v1/completions",
     cbody(truncate_prompt_tokens=5000), 400, "truncate_prompt_tokens"),
    ("stream_options without stream", "/v1/chat/completions",
     body(stream_options={"include_usage": True}), 400, "stream_options"),
    ("continuous_usage_stats wrong type", "/v1/completions",
     cbody(stream=True, stream_options={"continuous_usage_stats": "y"}), 400,
     "stream_options.continuous_usage_stats"),
    ("seed 2**63", "/v1/chat/completions", body(seed=2 ** 63), 400, "seed"),
    ("seed -2**63-1", "/v1/completions", cbody(seed=-(2 ** 63) - 2048), 400, "seed"),
    ("seed 1e30", "/v1/completions", cbody(seed=1e30), 400, "seed"),
    ("invocations without prompt", "/invocations", {"max_tokens": 2}, 400, "prompt"),
    ("continue_final_message with add_generation_prompt", "/v1/chat/completions",
     body(messages=MSG + [{"role": "assistant", "content": "x"}], continue_final_message=True),
     400, "continue_final_message"),
    ("continue_final_message wrong type", "/v1/chat/completions",
     body(continue_final_message="yes", add_generation_prompt=False), 400,
     "continue_final_message"),
    ("add_generation_prompt wrong type", "/v1/chat/completions", body(add_generation_prompt=0),
     400, "add_generation_prompt"),
    ("continue_final_message after a user message", "/v1/chat/completions",
     body(continue_final_message=True, add_generation_prompt=False), 400, "messages"),
    ("ends on assistant without prefill", "/v1/chat/completions",
     body(messages=MSG + [{"role": "assistant", "content": "x"}]), 400, "messages"),
    ("continue, final text dropped by the template", "/v1/chat/completions",
     body(messages=MSG + [{"role": "assistant", "content": "<think>t</think>"}],
          continue_final_message=True, add_generation_prompt=False), 400, "messages"),
    ("unknown route", "/v1/nothing", {}, 404, None),
    # bodies over 64 KiB are parsed by a worker instead of the HTTP thread
    ("big invalid json", "/v1/chat/completions", b"{\"messages\": [" + b" " * 100000, 400, None),
    ("big wrong type", "/v1/chat/completions", body(temperature="x", pad="p" * 100000), 400,
     "temperature"),
    ("big unknown model", "/v1/chat/completions", body(model="m", pad="p" * 100000), 404, "model"),
    # strict JSON (as Python's json.loads; NUL refused since the JSON library stops at it)
    ("nul escape in a string", "/v1/chat/completions",
     b'{"model": "tiny", "messages": [{"role": "user", "content": "a\\u0000b"}]}', 400, None),
    ("raw control character", "/v1/chat/completions",
     b'{"model": "tiny", "messages": [{"role": "user", "content": "a\x01b"}]}', 400, None),
    ("raw newline in a string", "/v1/chat/completions",
     b'{"model": "tiny", "messages": [{"role": "user", "content": "a\nb"}]}', 400, None),
    ("raw nul byte", "/v1/chat/completions",
     b'{"model": "tiny", "messages": [{"role": "user", "content": "a\x00b"}]}', 400, None),
    ("trailing bytes", "/v1/chat/completions", b'{"model": "tiny", "messages": []} xyz', 400,
     None),
    ("two json values", "/v1/chat/completions", b'{"model": "tiny"}{"model": "tiny"}', 400, None),
    ("nesting too deep", "/v1/chat/completions", b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     400, None),
    ("bad escape", "/v1/chat/completions", b'{"model": "ti\\qny"}', 400, None),
    ("seed 2^63", "/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", '
     b'"content": "x"}], "seed": 9223372036854775808}', 400, "seed"),
    ("seed 1e30", "/v1/chat/completions", body(seed=1e30), 400, "seed"),
    ("seed below -2^63", "/v1/chat/completions", body(seed=-(2 ** 63) - 4096), 400, "seed"),
    # the Responses API (tests/api/test_responses.py)
    ("responses: invalid json", R, b"{not json", 400, None),
    ("responses: input missing", R, {"model": "tiny"}, 400, "input"),
    ("responses: input wrong type", R, rbody(input=5), 400, "input"),
    ("responses: empty input", R, rbody(input=[]), 400, "input"),
    ("responses: item not an object", R, rbody(input=["x"]), 400, "input[0]"),
    ("responses: item role unknown", R, rbody(input=[{"role": "robot", "content": "x"}]), 400,
     "input[0].role"),
    ("responses: item type unknown", R, rbody(input=[{"type": "item_reference", "id": "x"}]),
     400, "input[0].type"),
    ("responses: content wrong type", R, rbody(input=[{"role": "user", "content": 5}]), 400,
     "input[0].content"),
    ("responses: content part unknown", R, rbody(input=ritem({"type": "input_file"})), 400,
     "input[0].content[0].type"),
    ("responses: input_text without text", R, rbody(input=ritem({"type": "input_text"})), 400,
     "input[0].content[0].text"),
    ("responses: input_image without url", R, rbody(input=ritem({"type": "input_image"})), 400,
     "input[0].content[0].image_url"),
    ("responses: input_image file_id", R,
     rbody(input=ritem({"type": "input_image", "file_id": "file-1"})), 400,
     "input[0].content[0].file_id"),
    ("responses: input_image detail", R,
     rbody(input=ritem({"type": "input_image", "image_url": "data:,", "detail": "max"})), 400,
     "input[0].content[0].detail"),
    ("responses: input_image not an image", R,
     rbody(input=ritem({"type": "input_text", "text": "see"},
                       {"type": "input_image", "image_url": "data:image/png;base64,aGVsbG8="})),
     400, "input[0].content[1].image_url"),
    ("responses: image url bad scheme", R,
     rbody(input=[{"role": "user", "content": "first"},
                  {"role": "user", "content": [{"type": "input_image",
                                                "image_url": data_url(png_bytes(16, 16))},
                                               {"type": "input_image",
                                                "image_url": "ftp://x/y.png"}]}]),
     400, "input[1].content[1].image_url"),
    ("responses: function_call without name", R,
     rbody(input=[{"role": "user", "content": "x"}, {**FC, "name": ""}]), 400, "input[1].name"),
    ("responses: function_call arguments not JSON", R,
     rbody(input=[{"role": "user", "content": "x"}, {**FC, "arguments": "{x"}]), 400,
     "input[1].arguments"),
    ("responses: function_call_output without call_id", R,
     rbody(input=[{"type": "function_call_output", "output": "x"}]), 400, "input[0].call_id"),
    ("responses: function_call_output output wrong type", R,
     rbody(input=[{"type": "function_call_output", "call_id": "c1", "output": 5}]), 400,
     "input[0].output"),
    ("responses: instructions wrong type", R, rbody(instructions=["x"]), 400, "instructions"),
    ("responses: max_output_tokens zero", R, rbody(max_output_tokens=0), 400,
     "max_output_tokens"),
    ("responses: max_output_tokens float", R, rbody(max_output_tokens=1.5), 400,
     "max_output_tokens"),
    ("responses: max_output_tokens over context", R, rbody(max_output_tokens=100000), 400,
     "max_output_tokens"),
    ("responses: temperature out of range", R, rbody(temperature=5), 400, "temperature"),
    ("responses: top_p out of range", R, rbody(top_p=0), 400, "top_p"),
    ("responses: stream wrong type", R, rbody(stream="yes"), 400, "stream"),
    ("responses: store wrong type", R, rbody(store="yes"), 400, "store"),
    ("responses: parallel_tool_calls wrong type", R, rbody(parallel_tool_calls=1), 400,
     "parallel_tool_calls"),
    ("responses: previous_response_id wrong type", R, rbody(previous_response_id=5), 400,
     "previous_response_id"),
    ("responses: previous_response_id unknown", R, rbody(previous_response_id="resp_nope"), 404,
     "previous_response_id"),
    ("responses: tools wrong type", R, rbody(tools={}), 400, "tools"),
    ("responses: tool type not function", R, rbody(tools=[{"type": "web_search"}]), 400,
     "tools[0].type"),
    ("responses: tool without name", R, rbody(tools=[{"type": "function"}]), 400,
     "tools[0].name"),
    ("responses: tool parameters wrong type", R,
     rbody(tools=[{**RTOOL, "parameters": "x"}]), 400, "tools[0].parameters"),
    ("responses: tool strict wrong type", R, rbody(tools=[{**RTOOL, "strict": "x"}]), 400,
     "tools[0].strict"),
    ("responses: tool_choice unknown", R, rbody(tools=[RTOOL], tool_choice="any"), 400,
     "tool_choice"),
    ("responses: tool_choice type", R, rbody(tools=[RTOOL], tool_choice={"type": "mcp"}), 400,
     "tool_choice.type"),
    ("responses: tool_choice without name", R,
     rbody(tools=[RTOOL], tool_choice={"type": "function"}), 400, "tool_choice.name"),
    ("responses: tool_choice without tools", R, rbody(tool_choice="required"), 400,
     "tool_choice"),
    ("responses: reasoning wrong type", R, rbody(reasoning="high"), 400, "reasoning"),
    ("responses: reasoning effort unknown", R, rbody(reasoning={"effort": "huge"}), 400,
     "reasoning.effort"),
    ("responses: reasoning summary wrong type", R, rbody(reasoning={"summary": 1}), 400,
     "reasoning.summary"),
    ("responses: text wrong type", R, rbody(text="json"), 400, "text"),
    ("responses: text.format type unknown", R, rbody(text={"format": {"type": "xml"}}), 400,
     "text.format.type"),
    ("responses: text.format schema wrong type", R,
     rbody(text={"format": {"type": "json_schema", "name": "x", "schema": 5}}), 400,
     "text.format.schema"),
    ("responses: metadata not strings", R, rbody(metadata={"a": 1}), 400, "metadata"),
    ("responses: include wrong type", R, rbody(include="x"), 400, "include"),
    ("responses: background", R, rbody(background=True), 400, "background"),
    ("responses: conversation", R, rbody(conversation="conv_1"), 400, "conversation"),
    ("responses: truncation auto", R, rbody(truncation="auto"), 400, "truncation"),
    ("responses: unknown model", R, rbody(model="gpt-9"), 404, "model"),
    ("responses: big body, bad field", R, rbody(max_output_tokens=0, pad="p" * 100000), 400,
     "max_output_tokens"),
    ("responses: big body, unknown previous id", R,
     rbody(previous_response_id="resp_x", pad="p" * 100000), 404, "previous_response_id"),
]


def check_error(r, status, param=None):
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"}
    assert isinstance(e["message"], str) and e["message"]
    assert isinstance(e["type"], str)
    if param is not None:
        assert e["param"] == param, e


def still_healthy(http):
    assert http.get("/health").status_code == 200
    r = http.post("/v1/chat/completions", json=body())
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("name,path,payload,status,param", CASES, ids=[c[0] for c in CASES])
def test_bad_input(http, name, path, payload, status, param):
    if isinstance(payload, bytes):
        r = http.post(path, content=payload, headers={"Content-Type": "application/json"})
    else:
        r = http.post(path, json=payload)
    check_error(r, status, param)
    still_healthy(http)


@pytest.mark.parametrize("path,status", [("/404", 400), ("/slow", 400), ("/loop", 400),
                                         ("/big", 400), ("/text", 400)])
def test_bad_image_urls(http, media_server, path, status):
    r = http.post("/v1/chat/completions", json=body(messages=img_msg(media_server + path)))
    check_error(r, status)
    still_healthy(http)


def test_body_over_limit(http):
    big = "x" * (5 << 20)  # the test server allows 4 MiB
    r = http.post("/v1/chat/completions", json=body(messages=[{"role": "user", "content": big}]))
    check_error(r, 413)
    still_healthy(http)


def test_api_key(server):
    url = server.url + "/v1/chat/completions"
    r = httpx.post(url, json=body(), headers={"Authorization": "Bearer wrong"})
    check_error(r, 401)
    r = httpx.post(url, json=body())
    check_error(r, 401)
    # probes stay open without a key
    assert httpx.get(server.url + "/health").status_code == 200
    r = httpx.post(url, json=body(), headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200


def test_openai_sdk_raises(client):
    import openai
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="tiny", messages=[], max_tokens=2)
    assert ei.value.status_code == 400
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=MSG, max_tokens=2)


def test_garbage_on_the_socket(server, http):
    """Raw bytes that are not HTTP: the connection is dropped, the server lives on."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"\x00\x01\x02 garbage\r\n\r\n")
        try:
            s.recv(1024)
        except OSError:
            pass
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        s.shutdown(socket.SHUT_WR)
        try:
            s.recv(1024)
        except OSError:
            pass
    still_healthy(http)


def test_images_in_data_url_ok(http):
    """Control case for the table: a valid data URL is accepted."""
    r = http.post("/v1/chat/completions", json=body(messages=img_msg(data_url(png_bytes(32, 32)))))
    assert r.status_code == 200, r.text


def test_duplicate_keys_last_wins(http):
    """As Python's json: a repeated key takes its last value."""
    raw = (b'{"model": "nope", "model": "tiny", "max_tokens": 100000, "max_tokens": 2, '
           b'"messages": [{"role": "user", "content": "hi", "content": "hello"}]}')
    r = http.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 2
    raw = b'{"model": "tiny", "max_tokens": 2, "messages": 5, "messages": [{"role": "user", "content": "x"}]}'
    r = http.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text


def test_seed_bounds_ok(http):
    for seed in (2 ** 63 - 4096, -(2 ** 63), 0):
        r = http.post("/v1/chat/completions", json=body(seed=seed))
        assert r.status_code == 200, (seed, r.text)


def test_405_is_invalid_request(http):
    r = http.get("/v1/chat/completions")
    check_error(r, 405)
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_data_url_sniffed_by_content(http):
    """data:image/jpeg;base64,<PNG> decodes as the PNG it is (vLLM does the same)."""
    b64 = data_url(png_bytes(32, 32)).split(",", 1)[1]
    for mime in ("image/jpeg", "image/gif", "application/octet-stream"):
        r = http.post("/v1/chat/completions",
                      json=body(messages=img_msg(f"data:{mime};base64,{b64}")))
        assert r.status_code == 200, (mime, r.text)
