"""The Responses API (POST /v1/responses, GET and DELETE /v1/responses/{id}) through the
official openai SDK: the request is translated into the chat request whose prompt /tokenize
counts (instructions, message items, images, function calls and their outputs, the stored
conversation of previous_response_id), the output items (reasoning, message, function_call)
come from the scripted decoder's real tokens, the stream's events follow the documented
sequence and assemble the non-streamed object, the store keeps what it should for as long as
its bound allows, and bad fields are 400s naming them (the table is in test_errors.py).
LangChain's ChatOpenAI(use_responses_api=True) runs against it end to end."""

import json

import openai
import pytest

from conftest import API_KEY, Server, data_url, png_bytes
from test_scripted import sclient, scripted  # noqa: F401  (its fixtures)

NO_THINK = {"effort": "none"}
THINK = {"effort": "medium"}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
CHAT_WEATHER = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
ASK = "What is the weather in Paris?"


def tokens(http, messages, **kw):
    """The prompt length of the equivalent chat request."""
    r = http.post("/tokenize", json={"model": "tiny", "messages": messages, **kw})
    assert r.status_code == 200, r.text
    return r.json()["count"]


def check_shape(r):
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status in ("completed", "incomplete")
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    if r.status == "incomplete":
        assert r.incomplete_details.reason == "max_output_tokens"


# ---- requests: the prompt each input shape makes ----

def test_string_input(client, http):
    r = client.responses.create(model="tiny", input="Hello there", max_output_tokens=4,
                                temperature=0)
    check_shape(r)
    assert r.usage.output_tokens <= 4
    assert r.usage.input_tokens == tokens(http, [{"role": "user", "content": "Hello there"}])
    assert [o.type for o in r.output] in (["message"], ["reasoning", "message"])
    assert r.output[-1].role == "assistant"
    assert isinstance(r.output_text, str)
    assert r.max_output_tokens == 4 and r.temperature == 0 and r.store is True


def test_message_items_and_instructions(client, http):
    items = [{"role": "user", "content": "First question"},
             {"role": "assistant", "content": "First answer"},
             {"type": "message", "role": "developer",
              "content": [{"type": "input_text", "text": "Be brief."}]},
             {"type": "message", "role": "user",
              "content": [{"type": "input_text", "text": "Second"},
                          {"type": "input_text", "text": "question"}]}]
    r = client.responses.create(model="tiny", input=items, instructions="You are terse.",
                                max_output_tokens=2)
    check_shape(r)
    assert r.instructions == "You are terse."
    chat = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer"},
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "Second"},
                                         {"type": "text", "text": "question"}]}]
    assert r.usage.input_tokens == tokens(http, chat)


def test_image_input(client, http):
    url = data_url(png_bytes(160, 160, seed=2))
    content = [{"type": "input_image", "image_url": url, "detail": "auto"},
               {"type": "input_text", "text": "What is in the picture?"}]
    r = client.responses.create(model="tiny", input=[{"role": "user", "content": content}],
                                max_output_tokens=2)
    check_shape(r)
    chat = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "What is in the picture?"}]}]
    n = tokens(http, chat)
    assert r.usage.input_tokens == n
    assert n > tokens(http, [{"role": "user", "content": "What is in the picture?"}]) + 4


def test_function_call_items_in_the_input(client, http):
    items = [{"role": "user", "content": ASK},
             {"type": "function_call", "call_id": "call_1", "name": "get_weather",
              "arguments": '{"city": "Paris"}'},
             {"type": "function_call_output", "call_id": "call_1", "output": '{"temp": 21}'}]
    r = client.responses.create(model="tiny", input=items, tools=[WEATHER], max_output_tokens=2)
    check_shape(r)
    assert r.tools[0].name == "get_weather"
    chat = [{"role": "user", "content": ASK},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'}]
    assert r.usage.input_tokens == tokens(http, chat, tools=[CHAT_WEATHER])


def test_sampling_fields_reach_the_sampler(client):
    """Same seed, same output; greedy twice, same output."""
    kw = dict(model="tiny", input="Tell me a story", max_output_tokens=8)
    a = client.responses.create(**kw, temperature=1.0, top_p=0.9, extra_body={"seed": 5})
    b = client.responses.create(**kw, temperature=1.0, top_p=0.9, extra_body={"seed": 5})
    assert a.output_text == b.output_text
    g = [client.responses.create(**kw, temperature=0).output_text for _ in range(2)]
    assert g[0] == g[1]


# ---- output items from generated tokens (the scripted decoder) ----

def test_reasoning_item_and_message(sclient):
    r = sclient.responses.create(model="tiny", input=ASK, reasoning=THINK, max_output_tokens=32)
    assert r.status == "completed"
    assert [o.type for o in r.output] == ["reasoning", "message"]
    assert r.output[0].content[0].type == "reasoning_text"
    assert r.output[0].content[0].text == "Let me check."
    assert r.output[0].summary == []
    assert r.output_text == "Hello!"
    assert r.output[1].content[0].annotations == []
    # <think> Let me check. </think> counted as reasoning; 9 in all with Hello! and EOS
    assert r.usage.output_tokens == 9
    assert 3 <= r.usage.output_tokens_details.reasoning_tokens < 9


def test_max_output_tokens_inside_the_reasoning(sclient):
    r = sclient.responses.create(model="tiny", input=ASK, reasoning=THINK, max_output_tokens=3)
    assert r.status == "incomplete"
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].type == "reasoning" and r.output[0].content[0].text == "Let me"
    assert r.usage.output_tokens == 3


def test_tools_give_function_call_items(sclient):
    r = sclient.responses.create(model="tiny", input=ASK, tools=[WEATHER], reasoning=NO_THINK,
                                 max_output_tokens=64)
    assert r.status == "completed"
    assert [o.type for o in r.output] == ["function_call"]
    fc = r.output[0]
    assert fc.name == "get_weather" and json.loads(fc.arguments) == {"city": "Paris"}
    assert fc.call_id.startswith("call_") and fc.id.startswith("fc_")
    assert fc.status == "completed"
    # the client runs the tool and continues the conversation from the stored response
    out = {"type": "function_call_output", "call_id": fc.call_id, "output": '{"temp": 21}'}
    r2 = sclient.responses.create(model="tiny", input=[out], previous_response_id=r.id,
                                  tools=[WEATHER], reasoning=THINK, max_output_tokens=32)
    assert r2.previous_response_id == r.id
    assert r2.output_text == "Hello!"


def test_tool_choice_none_gives_text(sclient):
    r = sclient.responses.create(model="tiny", input=ASK, tools=[WEATHER], tool_choice="none",
                                 reasoning=NO_THINK, max_output_tokens=64)
    assert [o.type for o in r.output] == ["message"]
    assert r.output_text.startswith("<tool_call>")


# ---- previous_response_id and the store ----

def test_previous_response_id_chain(client, http):
    r1 = client.responses.create(model="tiny", input="My name is Bob.", instructions="Be kind.",
                                 max_output_tokens=3, temperature=0)
    r2 = client.responses.create(model="tiny", input="What is my name?",
                                 previous_response_id=r1.id, max_output_tokens=3)
    r3 = client.responses.create(model="tiny", input=[{"role": "user", "content": "Again?"}],
                                 previous_response_id=r2.id, instructions="Be short.",
                                 max_output_tokens=2)
    # instructions are not carried over; each answer is
    turns = [{"role": "user", "content": "My name is Bob."},
             {"role": "assistant", "content": r1.output_text},
             {"role": "user", "content": "What is my name?"}]
    assert r2.usage.input_tokens == tokens(http, turns)
    chat = ([{"role": "system", "content": "Be short."}] + turns +
            [{"role": "assistant", "content": r2.output_text},
             {"role": "user", "content": "Again?"}])
    assert r3.usage.input_tokens == tokens(http, chat)


def test_retrieve_and_delete(client):
    r = client.responses.create(model="tiny", input="Hi", max_output_tokens=2,
                                metadata={"k": "v"})
    got = client.responses.retrieve(r.id)
    assert got.model_dump() == r.model_dump()
    assert got.metadata == {"k": "v"}
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(r.id)


def test_store_false_is_not_kept(client, http):
    r = client.responses.create(model="tiny", input="Hi", max_output_tokens=2, store=False)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    e = http.post("/v1/responses", json={"model": "tiny", "input": "x",
                                         "previous_response_id": r.id})
    assert e.status_code == 404
    assert e.json()["error"]["param"] == "previous_response_id"


def test_unknown_ids(http):
    for method in ("GET", "DELETE"):
        r = http.request(method, "/v1/responses/resp_nope")
        assert r.status_code == 404, r.text
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert http.put("/v1/responses/resp_nope").status_code == 405


def test_store_is_bounded(model_dir):
    """--responses-store-size 2: the least recently used response goes first."""
    s = Server(model_dir, ["--api-key", API_KEY, "--responses-store-size", "2"])
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
        ids = [c.responses.create(model="tiny", input=f"n{i}", max_output_tokens=1).id
               for i in range(2)]
        c.responses.retrieve(ids[0])  # now the most recent
        ids.append(c.responses.create(model="tiny", input="n2", max_output_tokens=1).id)
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(ids[1])
        assert c.responses.retrieve(ids[0]).id == ids[0]
        assert c.responses.retrieve(ids[2]).id == ids[2]
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]


# ---- streaming ----

def strip(obj):
    """The object without what differs between two calls (ids, times)."""
    d = obj.model_dump() if hasattr(obj, "model_dump") else obj
    d = json.loads(json.dumps(d))
    for k in ("id", "created_at", "completed_at"):
        d.pop(k, None)
    d["usage"]["input_tokens_details"].pop("cached_tokens")  # the prefix cache's share
    for o in d["output"]:
        o.pop("id", None)
        o.pop("parsed_arguments", None)  # the SDK's stream helper adds these (None here)
        for c in o.get("content") or []:
            c.pop("parsed", None)
        if o.get("type") == "function_call":
            o.pop("call_id")
    return d


def events_of(stream):
    evs = list(stream)
    return evs, stream.get_final_response()


def test_stream_event_sequence_with_reasoning(sclient):
    kw = dict(model="tiny", input=ASK, reasoning=THINK, max_output_tokens=32)
    with sclient.responses.stream(**kw) as stream:
        evs, final = events_of(stream)
    types = [e.type for e in evs]
    assert [e.sequence_number for e in evs] == list(range(len(evs)))
    head = ["response.created", "response.in_progress",
            "response.output_item.added", "response.content_part.added"]
    assert types[:4] == head
    assert evs[2].item.type == "reasoning" and evs[0].response.status == "in_progress"
    rd = [e for e in evs if e.type == "response.reasoning_text.delta"]
    assert "".join(e.delta for e in rd) == "Let me check."
    td = [e for e in evs if e.type == "response.output_text.delta"]
    assert "".join(e.delta for e in td) == "Hello!"
    # each item closes before the next opens: done events in the documented order
    i = types.index("response.reasoning_text.done")
    assert types[i:i + 3] == ["response.reasoning_text.done", "response.content_part.done",
                              "response.output_item.done"]
    assert types[i + 3:i + 5] == ["response.output_item.added", "response.content_part.added"]
    j = types.index("response.output_text.done")
    assert types[j:] == ["response.output_text.done", "response.content_part.done",
                         "response.output_item.done", "response.completed"]
    assert evs[j].text == "Hello!"
    assert all(e.output_index == 1 for e in td) and all(e.output_index == 0 for e in rd)
    assert final.status == "completed" and final.output_text == "Hello!"
    assert strip(final) == strip(sclient.responses.create(**kw))


def test_stream_function_call(sclient):
    kw = dict(model="tiny", input=ASK, tools=[WEATHER], reasoning=NO_THINK,
              max_output_tokens=64)
    with sclient.responses.stream(**kw) as stream:
        evs, final = events_of(stream)
    types = [e.type for e in evs]
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.function_call_arguments.delta",
                     "response.function_call_arguments.done", "response.output_item.done",
                     "response.completed"]
    added, delta, done = evs[2], evs[3], evs[4]
    assert added.item.type == "function_call" and added.item.arguments == ""
    assert json.loads(delta.delta) == {"city": "Paris"}
    assert done.name == "get_weather" and done.arguments == delta.delta
    assert evs[5].item.arguments == delta.delta
    assert strip(final) == strip(sclient.responses.create(**kw))


def test_stream_equals_create_on_the_random_model(client):
    """Greedy, cut by max_output_tokens: status incomplete (response.incomplete ends the
    stream), the same object as the non-streamed call."""
    kw = dict(model="tiny", input="Say something long", max_output_tokens=6, temperature=0)
    plain = client.responses.create(**kw)
    evs = list(client.responses.create(**kw, stream=True))
    assert evs[-1].type == ("response.incomplete" if plain.status == "incomplete"
                            else "response.completed")
    assert strip(evs[-1].response) == strip(plain)
    text = "".join(e.delta for e in evs if e.type == "response.output_text.delta")
    assert text == plain.output_text


# ---- LangChain ----

def test_langchain_use_responses_api(sclient):
    lc = pytest.importorskip("langchain_openai")
    from langchain_core.messages import HumanMessage, ToolMessage
    url = str(sclient.base_url).rstrip("/")
    llm = lc.ChatOpenAI(model="tiny", base_url=url, api_key=API_KEY, use_responses_api=True,
                        max_retries=0, max_tokens=64,
                        reasoning={"effort": "none"})
    tool_llm = llm.bind_tools([WEATHER])
    msgs = [HumanMessage(ASK)]
    ai = tool_llm.invoke(msgs)
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "get_weather"
    assert ai.tool_calls[0]["args"] == {"city": "Paris"}
    msgs += [ai, ToolMessage('{"temp": 21}', tool_call_id=ai.tool_calls[0]["id"])]
    think = lc.ChatOpenAI(model="tiny", base_url=url, api_key=API_KEY, use_responses_api=True,
                          max_retries=0, max_tokens=64, reasoning={"effort": "medium"})
    final = think.bind_tools([WEATHER]).invoke(msgs)
    assert final.text == "Hello!"
    chunks = list(think.stream([HumanMessage("Hi")]))
    assert "".join(c.text for c in chunks) == "Hello!"
