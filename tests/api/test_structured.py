"""Structured outputs through the HTTP API with the openai SDK (server/structured.h,
scheduler/constrain.h). The model is the random-weight test checkpoint: unconstrained, its
output is never JSON, so every parse below is the constraint's doing. Sampling is at
temperature 1 with n >= 3.
"""

import json
import math
import re

import httpx
import jsonschema
import pytest
from pydantic import BaseModel, Field
from typing import List, Literal, Optional

from conftest import API_KEY
from test_scripted import scripted, sclient  # noqa: F401 (fixtures: the scripted decoder)

MSG = [{"role": "user", "content": "Answer in JSON."}]
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}
COMPACT = {"structured_outputs": {"disable_any_whitespace": True}}

# Schemas whose every string and array is bounded, so that a random model ends them within
# max_tokens (an unbounded string ends only when the model happens to pick a closing quote).
SCHEMAS = {
    "flat": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 6}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "ok": {"type": "boolean"}}, "required": ["name", "age", "ok"], "additionalProperties": False},
    "enums": {"type": "object", "properties": {
        "color": {"enum": ["red", "green", "blue"]}, "size": {"enum": [1, 2, 3]},
        "maybe": {"type": ["null", "boolean"]}}, "required": ["color", "size"]},
    "array_len": {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5},
                  "minItems": 2, "maxItems": 4},
    "nested": {"type": "object", "properties": {
        "user": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 999},
                                                  "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2}},
                 "required": ["id", "tags"]},
        "when": {"type": "string", "format": "date"}}, "required": ["user", "when"]},
    "recursive": {"$defs": {"n": {"type": "object", "properties": {
        "v": {"type": "integer", "minimum": 0, "maximum": 9},
        "kids": {"type": "array", "items": {"$ref": "#/$defs/n"}, "maxItems": 1}},
        "required": ["v", "kids"]}}, "$ref": "#/$defs/n"},
    "anyof_pattern": {"anyOf": [
        {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
        {"type": "object", "properties": {"code": {"type": "string", "format": "uuid"}}, "required": ["code"]}]},
    "formats": {"type": "object", "properties": {
        "ip": {"type": "string", "format": "ipv4"}, "at": {"type": "string", "format": "time"}},
        "required": ["ip", "at"]},
    "prefix_items": {"type": "array", "prefixItems": [{"const": "xy"}, {"type": "number", "minimum": 0, "maximum": 1}],
                     "items": False, "minItems": 2},
}


def chat(client, extra, n=3, max_tokens=400, **kw):
    kw.setdefault("seed", 1234)  # choice i samples with seed + i: reproducible runs
    return client.chat.completions.create(model="tiny", messages=MSG, n=n, temperature=1.0,
                                          max_tokens=max_tokens, extra_body={**NO_THINK, **extra}, **kw)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_outputs_validate(client, name):
    schema = SCHEMAS[name]
    rf = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    r = chat(client, COMPACT, response_format=rf)
    assert len(r.choices) == 3
    for c in r.choices:
        assert c.finish_reason == "stop", c.message.content
        jsonschema.validate(json.loads(c.message.content), schema,
                            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_unconstrained_output_is_not_json(client):
    """The control: the same request without a constraint does not produce JSON."""
    r = chat(client, {}, max_tokens=30)
    for c in r.choices:
        with pytest.raises(ValueError):
            json.loads(c.message.content)


def test_default_whitespace_and_guided_json(client):
    """vLLM's default whitespace (any run of space/tab/newline) and the older guided_json."""
    schema = {"type": "object", "properties": {"a": {"enum": ["x", "y"]}, "b": {"type": "boolean"}},
              "required": ["a", "b"]}
    r = chat(client, {"guided_json": schema}, max_tokens=1000)
    for c in r.choices:
        if c.finish_reason == "stop":
            jsonschema.validate(json.loads(c.message.content), schema)
        else:  # whitespace runs may outlast max_tokens; what came is still a valid prefix
            assert c.finish_reason == "length"
            assert re.fullmatch(r'[{ \t\n"a:xyb,truefals}]*', c.message.content)


def test_json_object(client):
    r = chat(client, {**COMPACT, "structured_outputs": {"json_object": True, "disable_any_whitespace": True}},
             max_tokens=300)
    done = [c for c in r.choices if c.finish_reason == "stop"]
    for c in done:
        assert isinstance(json.loads(c.message.content), dict)
    r = chat(client, COMPACT, response_format={"type": "json_object"}, max_tokens=8)
    for c in r.choices:
        assert c.message.content.startswith("{")


def test_choice(client):
    choices = ["positive", "negative", "neutral", "mixed feelings"]
    r = chat(client, {"structured_outputs": {"choice": choices}}, n=4, max_tokens=20)
    for c in r.choices:
        assert c.message.content in choices
        assert c.finish_reason == "stop"
    r = chat(client, {"guided_choice": ["a", "b"]}, n=3)
    assert {c.message.content for c in r.choices} <= {"a", "b"}


def test_regex(client):
    pat = r"(\+1 )?\d{3}-\d{3}-\d{4}|[A-Z][a-z]{2,5} [0-9]{1,2}"
    r = chat(client, {"guided_regex": pat}, n=4, max_tokens=40)
    for c in r.choices:
        assert re.fullmatch(pat, c.message.content), c.message.content
    r = chat(client, {"structured_outputs": {"regex": "[01]{8}"}}, n=3)
    for c in r.choices:
        assert re.fullmatch("[01]{8}", c.message.content)


# ---- GBNF grammars (structured_outputs.grammar / guided_grammar), each with the same
# language written for lark (an independent recognizer) ----

GRAMMARS = {
    "arith": ("""
# sums of products; parentheses nest two levels at most, so a random model ends in time
root  ::= expr
expr  ::= term (("+" | "-") term){0,3}
term  ::= num | "(" expr2 ")"
expr2 ::= term2 (("*" | "/") term2){0,2}
term2 ::= num | "(" num ("+" num)? ")"
num   ::= [1-9] [0-9]{0,2} | "0"
""", r"""
start: expr
expr: term (("+" | "-") term)~0..3
term: NUM | "(" expr2 ")"
expr2: term2 (("*" | "/") term2)~0..2
term2: NUM | "(" NUM ("+" NUM)? ")"
NUM: /[1-9][0-9]{0,2}|0/
"""),
    "record": (r"""
root ::= "{" ws "\"name\":" ws str "," ws "\"tags\":" ws "[" (str ("," ws str){0,2})? "]" ws "}"
str  ::= "\"" [^"\\\x00-\x1F\x7F]{0,8} "\""
ws   ::= " "?
""", r"""
start: "{" WS? "\"name\":" WS? STR "," WS? "\"tags\":" WS? "[" (STR ("," WS? STR)~0..2)? "]" WS? "}"
STR: /"[^"\\\x00-\x1f\x7f]{0,8}"/
WS: " "
"""),
    "greeting": (r"""
root     ::= greet " " name punct
greet    ::= "Hello" | "Hi" | "Bonjour" | "Grüß Gott"
name     ::= [A-Z] [a-zéèü]{1,6}
punct    ::= [.!?] | "\u2026"
""", r"""
start: GREET " " NAME PUNCT
GREET: "Hello" | "Hi" | "Bonjour" | "Grüß Gott"
NAME: /[A-Z][a-zéèü]{1,6}/
PUNCT: /[.!?\u2026]/
"""),
}


def lark_check(name, text):
    import lark
    lark.Lark(GRAMMARS[name][1], start="start", parser="earley", lexer="dynamic").parse(text)


@pytest.mark.parametrize("name", sorted(GRAMMARS))
def test_grammar_outputs_match(client, name):
    gbnf = GRAMMARS[name][0]
    for extra in ({"structured_outputs": {"grammar": gbnf}}, {"guided_grammar": gbnf}):
        r = chat(client, extra, max_tokens=300)
        assert len(r.choices) == 3
        for c in r.choices:
            assert c.finish_reason == "stop", c.message.content
            lark_check(name, c.message.content)
    if name == "record":  # and it is JSON, as written
        for c in r.choices:
            assert set(json.loads(c.message.content)) == {"name", "tags"}


def test_grammar_on_completions(client):
    gbnf = GRAMMARS["arith"][0]
    r = client.completions.create(model="tiny", prompt="1+1=", n=3, temperature=1.0, max_tokens=200,
                                  seed=11, extra_body={"guided_grammar": gbnf})
    for c in r.choices:
        assert c.finish_reason == "stop", c.text
        lark_check("arith", c.text)


def test_grammar_the_recognizer_is_strict():
    """The control: the lark recognizer refuses what the grammars refuse."""
    import lark
    for name, text in (("arith", "1+"), ("arith", "(((1)))"), ("record", '{"name":"a","tags":[]'),
                       ("greeting", "Hello bob!")):
        with pytest.raises(lark.exceptions.LarkError):
            lark_check(name, text)


def test_completions_endpoint(client):
    schema = SCHEMAS["flat"]
    r = client.completions.create(model="tiny", prompt="JSON:", n=3, temperature=1.0, max_tokens=300, seed=3,
                                  extra_body={"guided_json": schema, **COMPACT})
    for c in r.choices:
        jsonschema.validate(json.loads(c.text), schema)
    r = client.completions.create(model="tiny", prompt="x", n=3, temperature=1.0, max_tokens=20,
                                  extra_body={"response_format": {"type": "json_schema", "json_schema": {
                                      "name": "c", "schema": {"enum": ["up", "down"]}}}})
    assert {json.loads(c.text) for c in r.choices} <= {"up", "down"}


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                         "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"]}}},
    {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                         "b": {"type": "integer", "minimum": 0, "maximum": 99}},
        "required": ["a", "b"]}}},
]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def check_calls(choice, names):
    calls = choice.message.tool_calls
    assert calls, choice.message.content
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])
    assert choice.finish_reason == "tool_calls"


def test_tool_choice_named(client):
    r = chat(client, COMPACT, tools=TOOLS, max_tokens=300,
             tool_choice={"type": "function", "function": {"name": "add"}})
    for c in r.choices:
        check_calls(c, {"add"})
        assert len(c.message.tool_calls) == 1


def test_tool_choice_required(client):
    r = chat(client, COMPACT, tools=TOOLS, max_tokens=600, tool_choice="required")
    for c in r.choices:
        if c.finish_reason == "length":  # several calls may outlast max_tokens
            continue
        check_calls(c, {"get_weather", "add"})


def test_tool_choice_named_stream(client):
    """A forced call streams as the usual tool-call deltas."""
    stream = client.chat.completions.create(
        model="tiny", messages=MSG, temperature=1.0, max_tokens=300, stream=True, tools=TOOLS, seed=5,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        extra_body={**NO_THINK, **COMPACT})
    args, name, finish = "", None, None
    for chunk in stream:
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                name = tc.function.name or name
                args += tc.function.arguments or ""
            finish = ch.finish_reason or finish
    assert name == "get_weather" and finish == "tool_calls"
    jsonschema.validate(json.loads(args), PARAMS["get_weather"])


class Pet(BaseModel):
    kind: Literal["cat", "dog", "fish"]
    name: str = Field(max_length=6)
    age: int = Field(ge=0, le=30)
    vaccinated: Optional[bool] = None


class Household(BaseModel):
    pets: List[Pet] = Field(min_length=1, max_length=2)
    city: Literal["Paris", "Oslo"]


def test_sdk_parse_with_pydantic(client):
    r = client.chat.completions.parse(model="tiny", messages=MSG, n=3, temperature=1.0,
                                      max_tokens=400, response_format=Household, seed=99,
                                      extra_body={**NO_THINK, **COMPACT})
    for c in r.choices:
        assert isinstance(c.message.parsed, Household), c.message.content
        assert 1 <= len(c.message.parsed.pets) <= 2


def test_logprobs_are_the_masked_distribution(client):
    """With a constraint, logprobs are those of the masked distribution: the allowed tokens'
    probabilities sum to one (unmasked, on a 151 936-token random model, a handful of tokens
    carries almost nothing), and top entries past the allowed ones are -9999."""
    r = chat(client, {"guided_choice": ["yes", "no"]}, n=3, logprobs=True, top_logprobs=20)
    for c in r.choices:
        first = c.logprobs.content[0]
        allowed = [t for t in first.top_logprobs if t.logprob > -9999]
        assert {t.token for t in allowed} <= {"y", "ye", "yes", "n", "no"}
        assert math.isclose(sum(math.exp(t.logprob) for t in allowed), 1.0, rel_tol=1e-3)
        assert all(t.logprob == -9999 for t in first.top_logprobs[len(allowed):])
        assert first.token in {t.token for t in allowed}


def test_thinking_constraint_starts_after_think(sclient):
    """Thinking on: the scripted decoder's <think>Let me check.</think> goes through
    unconstrained (a constraint from the first token would mask "<think>" out), and what
    follows </think> is constrained."""
    for choices in (["Hello!", "Bye"], ["Bye", "Ciao"]):
        r = sclient.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            max_tokens=40, temperature=0,
            extra_body={"chat_template_kwargs": {"enable_thinking": True}, "guided_choice": choices})
        msg = r.choices[0].message
        assert getattr(msg, "reasoning_content", None) == "Let me check."
        assert msg.content in choices
        assert r.choices[0].finish_reason == "stop"
    # thinking off: constrained from the first token (the script's <tool_call> is masked out)
    r = sclient.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        max_tokens=40, temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}, "guided_choice": ["Bye"]})
    assert r.choices[0].message.content == "Bye"


# ---- Bad requests: each a 400 with this exact message and param ----

S = {"type": "object"}
BAD = [
    ({"response_format": "json"}, "response_format", "'response_format' must be an object"),
    ({"response_format": {}}, "response_format.type",
     "'response_format.type' must be one of 'text', 'json_object', 'json_schema'"),
    ({"response_format": {"type": "yaml"}}, "response_format.type",
     "'response_format.type' must be one of 'text', 'json_object', 'json_schema', not 'yaml'"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema",
     "'response_format.json_schema' is required when the type is 'json_schema'"),
    ({"response_format": {"type": "json_schema", "json_schema": []}}, "response_format.json_schema",
     "'response_format.json_schema' must be an object"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema", "'response_format.json_schema.schema' is required"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": 1, "schema": S}}},
     "response_format.json_schema.name", "'response_format.json_schema.name' must be a string"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": S, "strict": "yes"}}},
     "response_format.json_schema.strict", "'response_format.json_schema.strict' must be a boolean"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}},
     "response_format.json_schema.schema", "'response_format.json_schema.schema' must be an object"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"allOf": [{}, {}]}}}},
     "response_format.json_schema.schema",
     "bad schema in 'response_format.json_schema.schema': unsupported JSON Schema keyword 'allOf' at '#'"),
    ({"guided_json": {"type": "object", "properties": {"a": {"not": {}}}}}, "guided_json",
     "bad schema in 'guided_json': unsupported JSON Schema keyword 'not' at '#/properties/a'"),
    ({"guided_json": {"type": "array", "items": {"type": "integer", "multipleOf": 3}}}, "guided_json",
     "bad schema in 'guided_json': unsupported JSON Schema keyword 'multipleOf' at '#/items'"),
    ({"guided_json": {"type": "array", "uniqueItems": True}}, "guided_json",
     "bad schema in 'guided_json': unsupported JSON Schema keyword 'uniqueItems' at '#'"),
    ({"guided_json": {"$ref": "#/$defs/nope"}}, "guided_json",
     "bad schema in 'guided_json': '$ref' '#/$defs/nope' does not resolve at '#'"),
    ({"guided_json": {"$ref": "https://example.com/s.json"}}, "guided_json",
     "bad schema in 'guided_json': only local '$ref' (\"#...\") is supported, not "
     "'https://example.com/s.json' at '#'"),
    ({"guided_json": {"type": "string", "minLength": 5, "maxLength": 2}}, "guided_json",
     "bad schema in 'guided_json': 'minLength' 5 is above 'maxLength' 2 at '#'"),
    ({"guided_json": {"type": "tuple"}}, "guided_json", "bad schema in 'guided_json': unknown type 'tuple' at '#'"),
    ({"guided_json": {"type": "object", "properties": {"a": {}}, "required": ["b"]}}, "guided_json",
     "bad schema in 'guided_json': required property 'b' is not in 'properties' at '#'"),
    ({"guided_json": {"enum": []}}, "guided_json", "bad schema in 'guided_json': 'enum' must be a non-empty array at '#'"),
    ({"guided_json": {"type": "array", "minItems": 3, "maxItems": 1}}, "guided_json",
     "bad schema in 'guided_json': no array satisfies 'minItems' 3 with at most 1 items at '#'"),
    ({"guided_json": {"type": "string", "pattern": "(?=x)"}}, "guided_json",
     "bad schema in 'guided_json': bad 'pattern': the group construct (?= is not supported at '#'"),
    ({"guided_json": {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}}, "$ref": "#/$defs/a"}},
     "guided_json", "bad schema in 'guided_json': the grammar is left-recursive or too ambiguous "
     "(a rule reaches itself without reading a character, or more than 4096 states are live at "
     "once)"),
    ({"guided_regex": "((a?){100}){100}"}, "guided_regex",
     "bad regular expression in 'guided_regex': the grammar is left-recursive or too ambiguous "
     "(a rule reaches itself without reading a character, or more than 4096 states are live at "
     "once)"),
    ({"guided_json": "{not json"}, "guided_json", "'guided_json' is not valid JSON"),
    ({"guided_json": 5}, "guided_json", "'guided_json' must be a JSON Schema (an object or its text)"),
    ({"guided_regex": "a(b"}, "guided_regex", "bad regular expression in 'guided_regex': missing ')'"),
    ({"guided_regex": "a\\1"}, "guided_regex",
     "bad regular expression in 'guided_regex': backreferences are not supported"),
    ({"guided_regex": ""}, "guided_regex", "'guided_regex' must be a non-empty string"),
    ({"guided_choice": []}, "guided_choice", "'guided_choice' must be a non-empty array of strings"),
    ({"guided_choice": ["a", 1]}, "guided_choice", "'guided_choice' must be a non-empty array of non-empty strings"),
    ({"guided_grammar": "root ::= item\nitem ::= \"a\" other"}, "guided_grammar",
     "bad grammar in 'guided_grammar': undefined rule 'other' (used at line 2, column 14)"),
    ({"structured_outputs": {"grammar": "root ::= (\"a\" | \"b\"\n"}}, "structured_outputs.grammar",
     "bad grammar in 'structured_outputs.grammar': syntax error at line 1, column 10: unbalanced '(' "
     "(no matching ')')"),
    ({"guided_grammar": "root ::= \"a\" [b-"}, "guided_grammar",
     "bad grammar in 'guided_grammar': syntax error at line 1, column 14: unterminated character class"),
    ({"guided_grammar": "start: \"a\""}, "guided_grammar",
     "bad grammar in 'guided_grammar': syntax error at line 1, column 6: expected '::=' after the rule name "
     "'start'"),
    ({"guided_grammar": "answer ::= \"a\""}, "guided_grammar",
     "bad grammar in 'guided_grammar': the grammar has no 'root' rule (the start symbol)"),
    ({"guided_grammar": "root ::= expr\nexpr ::= expr \"+\" num | num\nnum ::= [0-9]+"}, "guided_grammar",
     "bad grammar in 'guided_grammar': left recursion (expr -> expr) is not supported; write it with * or +"),
    ({"guided_grammar": "root ::= \"\\q\""}, "guided_grammar",
     "bad grammar in 'guided_grammar': syntax error at line 1, column 12: unknown escape '\\q'"),
    ({"guided_grammar": "root ::= [a-z]{5,2}"}, "guided_grammar",
     "bad grammar in 'guided_grammar': syntax error at line 1, column 15: bad repetition {5,2}: the maximum is "
     "below the minimum"),
    ({"guided_grammar": 7}, "guided_grammar", "'guided_grammar' must be a non-empty string"),
    ({"structured_outputs": {"grammar": "root ::= \"a\"", "regex": "a"}}, "structured_outputs.grammar",
     "only one structured-output constraint may be given; 'structured_outputs.regex' and "
     "'structured_outputs.grammar' both ask for one"),
    ({"guided_whitespace_pattern": " *"}, "guided_whitespace_pattern",
     "'guided_whitespace_pattern' is not supported; use structured_outputs.disable_any_whitespace"),
    ({"structured_outputs": []}, "structured_outputs", "'structured_outputs' must be an object"),
    ({"structured_outputs": {"whitespace_pattern": " ?"}}, "structured_outputs.whitespace_pattern",
     "'structured_outputs.whitespace_pattern' is not supported"),
    ({"structured_outputs": {"structural_tag": "{}"}}, "structured_outputs.structural_tag",
     "'structured_outputs.structural_tag' is not supported"),
    ({"structured_outputs": {"json": S, "regex": "a"}}, "structured_outputs.regex",
     "only one structured-output constraint may be given; 'structured_outputs.json' and "
     "'structured_outputs.regex' both ask for one"),
    ({"structured_outputs": {"json_object": "yes"}}, "structured_outputs.json_object",
     "'structured_outputs.json_object' must be a boolean"),
    ({"structured_outputs": {"disable_any_whitespace": 1}}, "structured_outputs.disable_any_whitespace",
     "'structured_outputs.disable_any_whitespace' must be a boolean"),
    ({"response_format": {"type": "json_object"}, "guided_regex": "a"}, "guided_regex",
     "only one structured-output constraint may be given; 'response_format' and 'guided_regex' both ask for one"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name", "tool_choice names the function 'nope', which is not in 'tools'"),
    ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "tool_choice.function.name",
     "'tool_choice.function.name' must be a string"),
    ({"tools": TOOLS, "tool_choice": {"type": "retrieval", "function": {"name": "add"}}}, "tool_choice.type",
     "'tool_choice.type' must be \"function\""),
    ({"tool_choice": "required"}, "tool_choice", "'tool_choice' requires 'tools' to be set"),
    ({"tools": TOOLS, "tool_choice": "required", "guided_json": S}, "tool_choice",
     "only one structured-output constraint may be given; 'guided_json' and 'tool_choice' both ask for one"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "x": {"if": {}}}}}}], "tool_choice": "required"}, "tools",
     "bad tool parameters: unsupported JSON Schema keyword 'if' at '#/tools/0/function/parameters/properties/x'"),
]


@pytest.mark.parametrize("extra,param,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests(server, extra, param, message):
    body = {"model": "tiny", "messages": MSG, "max_tokens": 4, **extra}
    r = httpx.post(server.url + "/v1/chat/completions", json=body,
                   headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["message"] == message
    assert err["param"] == param[:47]
    assert err["type"] == "BadRequestError" or err["type"] == "invalid_request_error"


def test_bad_requests_leave_the_server_serving(client):
    assert len(BAD) >= 25
    r = chat(client, {"guided_choice": ["ok"]}, n=1)
    assert r.choices[0].message.content == "ok"
