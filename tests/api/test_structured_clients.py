"""Structured outputs end to end through the client libraries people point at vLLM:
LangChain (`with_structured_output` in its json_schema, json_mode and function_calling
methods, `bind_tools(tool_choice=...)`), instructor (TOOLS, JSON and JSON_SCHEMA modes) and
litellm (`completion` with `response_format`). The model is the random-weight test checkpoint
at temperature 1: its text is random, so each parse below succeeds only because the server
constrained the output to what the library asked for.

json_mode (LangChain) and instructor's JSON mode send `response_format: {"type":
"json_object"}` and keep the schema in the prompt: the server can only promise some JSON
object, so their models here have optional fields (a random object validates) and the server
is asked for JSON without whitespace (`structured_outputs.disable_any_whitespace`), which
any client may send in `extra_body`.
"""

import os
from typing import List, Literal, Optional

import pytest
from pydantic import BaseModel, Field

from conftest import API_KEY

# litellm fetches a price list from the internet at import unless told to use its copy
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}
COMPACT = {"structured_outputs": {"disable_any_whitespace": True}}
EXTRA = {**NO_THINK, **COMPACT}
MSG = [{"role": "user", "content": "Describe a city in JSON."}]


class City(BaseModel):
    """A city."""
    name: str = Field(max_length=5)
    country: Literal["FR", "NO", "JP"]
    coastal: bool


class Trip(BaseModel):
    """A short trip."""
    cities: List[City] = Field(min_length=1, max_length=2)
    days: int = Field(ge=1, le=30)


class Loose(BaseModel):
    """Any object validates: every field is optional and extra members are ignored."""
    note: Optional[str] = None


# tools as LangChain takes them (pydantic classes); strings and integers bounded, so that a
# random model ends its arguments within max_tokens
class get_weather(BaseModel):
    """Get the weather in a city."""
    city: str = Field(max_length=5)
    unit: Literal["celsius", "fahrenheit"]


class add(BaseModel):
    """Add two integers."""
    a: int = Field(ge=0, le=99)
    b: int = Field(ge=0, le=99)


# ---- LangChain ----

def lc_model(base_url, **kw):
    from langchain_openai import ChatOpenAI
    return ChatOpenAI(model="tiny", base_url=base_url, api_key=API_KEY, temperature=1.0,
                      max_tokens=kw.pop("max_tokens", 400), max_retries=0, timeout=120,
                      extra_body=kw.pop("extra_body", EXTRA), **kw)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_langchain_json_schema(base_url, seed):
    model = Trip if seed == 1 else City
    out = lc_model(base_url, seed=seed).with_structured_output(model, method="json_schema").invoke(MSG)
    assert isinstance(out, model)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_langchain_function_calling(base_url, seed):
    llm = lc_model(base_url, seed=seed).with_structured_output(City, method="function_calling")
    out = llm.invoke(MSG)
    assert isinstance(out, City)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_langchain_json_mode(base_url, seed):
    llm = lc_model(base_url, seed=seed, max_tokens=300).with_structured_output(
        Loose, method="json_mode")
    out = llm.invoke(MSG)
    assert isinstance(out, Loose)


@pytest.mark.parametrize("seed", [1, 2])
def test_langchain_bind_tools(base_url, seed):
    llm = lc_model(base_url, seed=seed)
    named = llm.bind_tools([get_weather, add], tool_choice="add").invoke(MSG)
    assert [c["name"] for c in named.tool_calls] == ["add"]
    assert set(named.tool_calls[0]["args"]) == {"a", "b"}
    assert all(isinstance(v, int) for v in named.tool_calls[0]["args"].values())
    req = llm.bind_tools([get_weather, add], tool_choice="required").invoke(MSG)
    assert req.tool_calls and {c["name"] for c in req.tool_calls} <= {"get_weather", "add"}
    assert not req.invalid_tool_calls
    for c in req.tool_calls:
        if c["name"] == "get_weather":
            assert c["args"]["unit"] in ("celsius", "fahrenheit")


# ---- instructor ----

def instructor_client(base_url, mode):
    import instructor
    from openai import OpenAI
    raw = OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0, timeout=120)
    return instructor.from_openai(raw, mode=getattr(instructor.Mode, mode))


@pytest.mark.parametrize("mode,model,max_tokens", [("TOOLS", City, 200), ("JSON_SCHEMA", City, 200),
                                                   ("JSON", Loose, 300)])
def test_instructor_modes(base_url, mode, model, max_tokens):
    client = instructor_client(base_url, mode)
    for seed in (1, 2, 3):
        out = client.chat.completions.create(model="tiny", messages=MSG, response_model=model,
                                             max_retries=0, temperature=1.0, max_tokens=max_tokens,
                                             seed=seed, extra_body=EXTRA)
        assert isinstance(out, model)


# ---- litellm ----

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_litellm_response_format(base_url, seed):
    import litellm
    r = litellm.completion(model="openai/tiny", api_base=base_url, api_key=API_KEY, messages=MSG,
                           response_format=City, temperature=1.0, max_tokens=200, seed=seed,
                           extra_body=EXTRA, num_retries=0)
    City.model_validate_json(r.choices[0].message.content)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}},
              "required": ["ok", "n"], "additionalProperties": False}
    r = litellm.completion(model="openai/tiny", api_base=base_url, api_key=API_KEY, messages=MSG,
                           response_format={"type": "json_schema", "json_schema": {
                               "name": "flags", "schema": schema, "strict": True}},
                           temperature=1.0, max_tokens=100, seed=seed, extra_body=EXTRA,
                           num_retries=0)
    import json
    import jsonschema
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_litellm_tools(base_url):
    import json
    import litellm
    tools = [{"type": "function", "function": {"name": "add", "description": "Add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9},
                                         "b": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["a", "b"]}}}]
    r = litellm.completion(model="openai/tiny", api_base=base_url, api_key=API_KEY, messages=MSG,
                           tools=tools, tool_choice={"type": "function", "function": {"name": "add"}},
                           temperature=1.0, max_tokens=100, seed=4, extra_body=EXTRA, num_retries=0)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "add"
    assert set(json.loads(call.function.arguments)) == {"a", "b"}
