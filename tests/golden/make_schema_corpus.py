"""Writes tests/schemas/corpus.json: JSON Schemas written for this project, each with
instance texts and the verdict of Python's jsonschema (Draft 2020-12, with format checking)
on each. test_schema_corpus (C) checks that the grammar compiled from each schema accepts
exactly the instances jsonschema validates.

Run with the reference venv (jsonschema and rfc3339-validator installed there):
    /work/refvenv/bin/python tests/golden/make_schema_corpus.py

The instances are written in the form the grammars produce (docs/HTTP.md, "Structured
outputs"): object members in "properties" order, no extra members unless
additionalProperties allows them, no exponent in bounded numbers, no "-0", integers without
a fraction, characters of pattern/format strings unescaped. On texts outside that form the
matcher is stricter than jsonschema by design, so they are not verdict cases here.
"""
import json
from pathlib import Path

import jsonschema

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "schemas" / "corpus.json"

C = []  # (name, schema, [instance texts])


def add(name, schema, *instances):
    C.append((name, schema, list(instances)))


# ---- primitives ----
add("string", {"type": "string"}, '"abc"', '""', '"a\\"b\\\\c\\n\\u00e9"', '"é中"', "12", "null", '"a', "'a'")
add("integer", {"type": "integer"}, "0", "-7", "123456789", "01", "1.5", '"1"', "-", "+1")
add("number", {"type": "number"}, "0", "-0.5", "3.25e10", "1E-3", "12.", ".5", "1e", "true")
add("boolean", {"type": "boolean"}, "true", "false", "True", "1", "null")
add("null", {"type": "null"}, "null", "nul", "0", '"null"')
add("any_value", {}, '{"a":[1,{"b":null}]}', "[]", '"x"', "-1.5", "tru", "{,}", "[1,]")
add("type_array", {"type": ["string", "null"]}, '"x"', "null", "0", "false")

# ---- integer and number bounds ----
add("int_0_10", {"type": "integer", "minimum": 0, "maximum": 10}, "0", "5", "10", "11", "-1", "100")
add("int_neg", {"type": "integer", "minimum": -100, "maximum": -5}, "-100", "-5", "-57", "-4", "-101", "0", "5")
add("int_across", {"type": "integer", "minimum": -9, "maximum": 99}, "-9", "-1", "0", "99", "-10", "100", "999")
add("int_min_only", {"type": "integer", "minimum": 18}, "18", "19", "1000000", "17", "-18", "9")
add("int_max_only", {"type": "integer", "maximum": 3}, "3", "-99999", "0", "4", "10")
add("int_exclusive", {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 256}, "1", "255", "0", "256", "128")
add("int_big", {"type": "integer", "minimum": 1000, "maximum": 123456}, "1000", "123456", "99999", "999", "123457", "5000")
add("int_frac_bound", {"type": "integer", "minimum": 1.5, "maximum": 4.5}, "2", "4", "1", "5")
add("num_0_1", {"type": "number", "minimum": 0, "maximum": 1}, "0", "0.5", "1", "1.0", "1.01", "-0.1", "2")
add("num_neg", {"type": "number", "minimum": -5, "maximum": 5}, "-5", "-4.99", "4.5", "5.00", "-5.1", "5.5", "6")
add("num_min", {"type": "number", "minimum": 10}, "10", "10.5", "12345.678", "9.99", "-10")
add("num_max_neg", {"type": "number", "maximum": -2}, "-2", "-2.5", "-100.25", "-1.5", "0", "3")

# ---- strings ----
add("str_len_2_4", {"type": "string", "minLength": 2, "maxLength": 4}, '"ab"', '"abcd"', '"éé"', '"a"', '"abcde"', '""')
add("str_min_1", {"type": "string", "minLength": 1}, '"x"', '"hello world"', '""')
add("str_max_0", {"type": "string", "maxLength": 0}, '""', '"a"')
add("str_exact_3", {"type": "string", "minLength": 3, "maxLength": 3}, '"abc"', '"a\\nb"', '"ab"', '"abcd"')
add("str_max_10", {"type": "string", "maxLength": 10}, '""', '"0123456789"', '"01234567890"')

# ---- enum and const ----
add("enum_str", {"enum": ["red", "green", "blue"]}, '"red"', '"blue"', '"Red"', '"yellow"', '"re"')
add("enum_mixed", {"enum": ["a", 1, None, True, [1, 2], {"k": "v"}]}, '"a"', "1", "null", "true", "[1,2]", '{"k":"v"}', "false", "2", '"b"')
add("enum_int", {"type": "integer", "enum": [1, 2, 3, 5, 8, 13]}, "1", "13", "4", "21")
add("enum_typed", {"type": "string", "enum": ["x", 1, "y"]}, '"x"', '"y"', "1")
add("enum_prefixes", {"enum": ["a", "ab", "abc", "b"]}, '"a"', '"ab"', '"abc"', '"b"', '"abcd"', '"ba"')
add("enum_big", {"enum": [f"item_{i:02d}" for i in range(60)]}, '"item_00"', '"item_59"', '"item_42"', '"item_60"', '"item_5"')
add("enum_unicode", {"enum": ["café", "naïve", "日本"]}, '"café"', '"日本"', '"cafe"', '"日"')
add("const_str", {"const": "fixed"}, '"fixed"', '"Fixed"', '"fixe"')
add("const_obj", {"const": {"a": 1, "b": [True]}}, '{"a":1,"b":[true]}', '{"a":1}', '{"a":2,"b":[true]}')
add("const_num", {"const": 42}, "42", "43", "4")

# ---- arrays ----
add("arr_any", {"type": "array"}, "[]", '[1,"a",null]', "[ 1 , 2 ]", "[1,]", "{}")
add("arr_int", {"type": "array", "items": {"type": "integer"}}, "[]", "[1,2,3]", "[1,\n 2]", '[1,"2"]', "[1.5]")
add("arr_min2", {"type": "array", "items": {"type": "boolean"}, "minItems": 2}, "[true,false]", "[true,true,true]", "[true]", "[]")
add("arr_max2", {"type": "array", "items": {"type": "null"}, "maxItems": 2}, "[]", "[null]", "[null,null]", "[null,null,null]")
add("arr_1_3", {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}, '["a"]', '["a","b","c"]', "[]", '["a","b","c","d"]')
add("arr_exact2", {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}, "[1,2]", "[1.5,-2]", "[1]", "[1,2,3]")
add("tuple_closed", {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
    '["a",1]', '["a"]', "[]", '["a",1,2]', '[1,"a"]')
add("tuple_open", {"type": "array", "prefixItems": [{"type": "integer"}], "items": {"type": "string"}},
    "[]", "[1]", '[1,"x","y"]', '["x"]', "[1,2]")
add("tuple_min", {"type": "array", "prefixItems": [{"const": "op"}, {"type": "integer"}], "minItems": 2, "items": False},
    '["op",3]', '["op"]', '["op",3,4]', '["no",3]')
add("arr_nested", {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}, "maxItems": 3},
    "[]", "[[],[1],[1,2]]", "[[1,2,3]]", "[[],[],[],[]]", "[1]")
add("arr_of_obj", {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}, "minItems": 1},
    '[{"id":1}]', '[{"id":1},{"id":2}]', "[]", "[{}]", '[{"id":"1"}]')
add("arr_uniq_false", {"type": "array", "items": {"enum": [1, 2]}, "uniqueItems": False}, "[1,1,2]", "[3]")

# ---- objects ----
add("obj_req", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}, "required": ["a", "b"]},
    '{"a":1,"b":"x"}', '{ "a" : 1 , "b" : "x" }', '{"a":1}', '{"b":"x"}', "{}", '{"a":"1","b":"x"}')
add("obj_opt", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}}},
    "{}", '{"a":1}', '{"b":2}', '{"a":1,"c":3}', '{"a":1,"b":2,"c":3}', '{"a":"x"}', '{"a":1,}')
add("obj_mixed_req", {"type": "object", "properties": {"x": {"type": "boolean"}, "y": {"type": "null"}, "z": {"type": "number"}}, "required": ["y"]},
    '{"y":null}', '{"x":true,"y":null}', '{"y":null,"z":1.5}', '{"x":true}', '{"x":true,"z":1}')
add("obj_closed", {"type": "object", "properties": {"k": {"type": "string"}}, "additionalProperties": False},
    "{}", '{"k":"v"}', '{"k":1}', '{"k":"v",,}')
add("obj_addl_true", {"type": "object", "properties": {"k": {"type": "integer"}}, "required": ["k"], "additionalProperties": True},
    '{"k":1}', '{"k":1,"extra":[1,{}]}', '{"k":1,"a":1,"b":"c"}', '{"extra":1}', '{"k":"1","x":1}')
add("obj_addl_schema", {"type": "object", "additionalProperties": {"type": "integer"}},
    "{}", '{"a":1}', '{"a":1,"b":-2}', '{"a":"1"}', '{"a":1,"b":null}')
add("obj_empty", {"type": "object", "properties": {}, "additionalProperties": False}, "{}", "{ }", '{"a":1}', "[]")
add("obj_nested3", {"type": "object", "properties": {"l1": {"type": "object", "properties": {"l2": {"type": "object", "properties": {"l3": {"type": "string", "maxLength": 3}}, "required": ["l3"]}}, "required": ["l2"]}}, "required": ["l1"]},
    '{"l1":{"l2":{"l3":"abc"}}}', '{"l1":{"l2":{"l3":""}}}', '{"l1":{"l2":{}}}', '{"l1":{"l2":{"l3":"abcd"}}}', '{"l1":{}}')
add("obj_keys_escaped", {"type": "object", "properties": {"a\"b": {"type": "integer"}, "é": {"type": "integer"}}, "required": ["a\"b"]},
    '{"a\\"b":1}', '{"a\\"b":1,"é":2}', '{"é":2}', '{"ab":1}')
add("obj_json_object_like", {"type": "object"}, "{}", '{"a":{"b":[1,2,{"c":null}]}}', '{"x":1, "y":"z"}', "[]", '{"a"}', '{"a":1')
add("obj_infer_type", {"properties": {"n": {"type": "integer"}}, "required": ["n"]}, '{"n":1}', '{"n":"1"}', "{}")

# ---- anyOf / oneOf ----
add("anyof_prims", {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]}, "5", '"ab"', '"abc"', "1.5", "null")
add("oneof_disjoint", {"oneOf": [{"type": "boolean"}, {"type": "null"}]}, "true", "null", "0")
add("nullable_obj", {"anyOf": [{"type": "object", "properties": {"v": {"type": "integer"}}, "required": ["v"]}, {"type": "null"}]},
    '{"v":1}', "null", "{}", '{"v":null}')
add("anyof_objs", {"anyOf": [
        {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}}, "required": ["kind", "r"], "additionalProperties": False},
        {"type": "object", "properties": {"kind": {"const": "rect"}, "w": {"type": "number"}, "h": {"type": "number"}}, "required": ["kind", "w", "h"], "additionalProperties": False}]},
    '{"kind":"circle","r":1}', '{"kind":"rect","w":1,"h":2}', '{"kind":"circle","w":1,"h":2}', '{"kind":"rect","r":1}', '{"kind":"tri"}')
add("allof_single", {"allOf": [{"type": "integer", "minimum": 5}]}, "5", "6", "4")

# ---- $ref / $defs ----
add("ref_simple", {"$defs": {"id": {"type": "integer", "minimum": 1}}, "type": "object", "properties": {"a": {"$ref": "#/$defs/id"}, "b": {"$ref": "#/$defs/id"}}, "required": ["a"]},
    '{"a":1}', '{"a":1,"b":2}', '{"a":0}', '{"a":1,"b":0}')
add("ref_definitions", {"definitions": {"s": {"type": "string", "maxLength": 2}}, "type": "array", "items": {"$ref": "#/definitions/s"}},
    '["a","bc"]', "[]", '["abc"]')
add("ref_tree", {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["v"]}}, "$ref": "#/$defs/node"},
    '{"v":1}', '{"v":1,"children":[]}', '{"v":1,"children":[{"v":2,"children":[{"v":3}]},{"v":4}]}', '{"v":1,"children":[{}]}', '{"children":[]}')
add("ref_list", {"$defs": {"cell": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"head": {"type": "string"}, "tail": {"$ref": "#/$defs/cell"}}, "required": ["head", "tail"]}]}}, "$ref": "#/$defs/cell"},
    "null", '{"head":"a","tail":null}', '{"head":"a","tail":{"head":"b","tail":null}}', '{"head":"a"}', '{"head":"a","tail":{"head":1,"tail":null}}')
add("ref_mutual", {"$defs": {"a": {"type": "object", "properties": {"b": {"$ref": "#/$defs/b"}}}, "b": {"type": "array", "items": {"$ref": "#/$defs/a"}, "maxItems": 2}}, "$ref": "#/$defs/a"},
    "{}", '{"b":[]}', '{"b":[{},{"b":[{}]}]}', '{"b":[{},{},{}]}', '{"b":{}}')
add("ref_root", {"type": "object", "properties": {"name": {"type": "string", "maxLength": 4}, "sub": {"$ref": "#"}}, "required": ["name"]},
    '{"name":"a"}', '{"name":"a","sub":{"name":"b","sub":{"name":"c"}}}', '{"name":"a","sub":{}}', '{"sub":{"name":"b"}}')

# ---- formats ----
add("fmt_date", {"type": "string", "format": "date"}, '"2024-02-29"', '"1999-12-31"', '"2024-13-01"', '"2024-1-01"', '"24-01-01"', '"2024-01-32"')
add("fmt_time", {"type": "string", "format": "time"}, '"12:34:56Z"', '"23:59:59.123+05:30"', '"00:00:00-08:00"', '"24:00:00Z"', '"12:34:56"', '"12:34Z"')
add("fmt_datetime", {"type": "string", "format": "date-time"}, '"2024-05-06T07:08:09Z"', '"2024-05-06t07:08:09.5+01:00"', '"2024-05-06 07:08:09Z"', '"2024-05-06T07:08Z"', '"2024-05-06"')
add("fmt_uuid", {"type": "string", "format": "uuid"}, '"123e4567-e89b-12d3-a456-426614174000"', '"ABCDEF01-2345-6789-ABCD-EF0123456789"', '"123e4567e89b12d3a456426614174000"', '"123e4567-e89b-12d3-a456-42661417400"', '"g23e4567-e89b-12d3-a456-426614174000"')
add("fmt_email", {"type": "string", "format": "email"}, '"a.b+c@example.com"', '"x@y.org"', '"no-at-sign"', '""')
add("fmt_ipv4", {"type": "string", "format": "ipv4"}, '"192.168.0.1"', '"0.0.0.0"', '"255.255.255.255"', '"256.1.1.1"', '"1.2.3"', '"01.2.3.4"', '"1.2.3.4.5"')
add("fmt_in_object", {"type": "object", "properties": {"when": {"type": "string", "format": "date"}, "id": {"type": "string", "format": "uuid"}}, "required": ["when", "id"]},
    '{"when":"2020-01-01","id":"00000000-0000-0000-0000-000000000000"}', '{"when":"2020-01-01","id":"x"}', '{"when":"2020/01/01","id":"00000000-0000-0000-0000-000000000000"}')

# ---- patterns ----
add("pat_anchored", {"type": "string", "pattern": "^[a-z]+$"}, '"abc"', '"a"', '""', '"abC"', '"ab1"')
add("pat_phone", {"type": "string", "pattern": "^\\d{3}-\\d{4}$"}, '"555-1234"', '"555-12345"', '"55-1234"', '"abc-defg"')
add("pat_unanchored", {"type": "string", "pattern": "ab+c"}, '"abc"', '"xxabbbcyy"', '"ac"', '"ABC"', '""')
add("pat_start_only", {"type": "string", "pattern": "^id_"}, '"id_"', '"id_123 x"', '"xid_"', '"id"')
add("pat_end_only", {"type": "string", "pattern": "\\.json$"}, '"a.json"', '".json"', '"a.jsonx"', '"ajson"')
add("pat_alt", {"type": "string", "pattern": "^(cat|dog)s?$"}, '"cat"', '"dogs"', '"cats"', '"cow"', '"catss"')
add("pat_class_neg", {"type": "string", "pattern": "^[^0-9 ]{2,3}$"}, '"ab"', '"é!x"', '"a"', '"a1"', '"abcd"', '"a b"')
add("pat_hex", {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"}, '"#00ff7F"', '"#00ff7"', '"00ff7F0"', '"#GGGGGG"')
add("pat_optional_groups", {"type": "string", "pattern": "^v(\\d+)(\\.\\d+){0,2}(-[a-z]+)?$"}, '"v1"', '"v1.2.3"', '"v10.0-beta"', '"v1.2.3.4"', '"v"', '"1.2"')
add("pat_dot", {"type": "string", "pattern": "^a.c$"}, '"abc"', '"a-c"', '"aéc"', '"ac"', '"abbc"')

# ---- realistic ----
add("person", {"type": "object", "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 5}},
        "required": ["name", "age"], "additionalProperties": False},
    '{"name":"Ann","age":31}', '{"name":"Ann","age":31,"email":"ann@x.io","tags":["a","b"]}',
    '{\n  "name": "Bo",\n  "age": 0,\n  "tags": []\n}', '{"name":"","age":31}', '{"name":"Ann","age":151}',
    '{"name":"Ann"}', '{"name":"Ann","age":31,"tags":["a","b","c","d","e","f"]}')
add("weather_args", {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14}},
        "required": ["city", "unit"]},
    '{"city":"Paris","unit":"celsius"}', '{"city":"Paris","unit":"fahrenheit","days":7}',
    '{"city":"Paris","unit":"kelvin"}', '{"city":"Paris","unit":"celsius","days":15}', '{"unit":"celsius"}')
add("order", {"type": "object", "properties": {
        "id": {"type": "string", "pattern": "^ORD-[0-9]{4}$"},
        "items": {"type": "array", "minItems": 1, "items": {"type": "object", "properties": {
            "sku": {"type": "string", "maxLength": 8}, "qty": {"type": "integer", "minimum": 1, "maximum": 99},
            "price": {"type": "number", "minimum": 0}}, "required": ["sku", "qty", "price"], "additionalProperties": False}},
        "status": {"enum": ["new", "paid", "shipped"]}, "note": {"type": ["string", "null"]}},
        "required": ["id", "items", "status"]},
    '{"id":"ORD-0001","items":[{"sku":"A1","qty":2,"price":9.99}],"status":"new"}',
    '{"id":"ORD-1234","items":[{"sku":"A1","qty":1,"price":0},{"sku":"B","qty":99,"price":100}],"status":"paid","note":null}',
    '{"id":"ORD-12","items":[{"sku":"A1","qty":2,"price":9.99}],"status":"new"}',
    '{"id":"ORD-0001","items":[],"status":"new"}',
    '{"id":"ORD-0001","items":[{"sku":"A1","qty":0,"price":1}],"status":"new"}',
    '{"id":"ORD-0001","items":[{"sku":"A1","qty":2,"price":-1}],"status":"new"}',
    '{"id":"ORD-0001","items":[{"sku":"A1","qty":2,"price":1}],"status":"lost"}')
add("event", {"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 20}, "start": {"type": "string", "format": "date-time"},
        "attendees": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "rsvp": {"type": "boolean"}}, "required": ["name"]}},
        "repeat": {"anyOf": [{"const": "daily"}, {"const": "weekly"}, {"type": "null"}]}},
        "required": ["title", "start"]},
    '{"title":"Standup","start":"2025-01-02T09:00:00Z"}',
    '{"title":"Standup","start":"2025-01-02T09:00:00Z","attendees":[{"name":"a","rsvp":true},{"name":"b"}],"repeat":"daily"}',
    '{"title":"Standup","start":"tomorrow"}',
    '{"title":"Standup","start":"2025-01-02T09:00:00Z","repeat":"monthly"}',
    '{"title":"Standup","start":"2025-01-02T09:00:00Z","attendees":[{"rsvp":true}]}')
add("matrix", {"type": "object", "properties": {"rows": {"type": "integer", "minimum": 1, "maximum": 3}, "data": {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}, "minItems": 1, "maxItems": 3}}, "required": ["rows", "data"], "additionalProperties": False},
    '{"rows":1,"data":[[1,2]]}', '{"rows":3,"data":[[1,2],[3.5,-4],[0,0]]}', '{"rows":1,"data":[[1]]}', '{"rows":4,"data":[[1,2]]}', '{"rows":1,"data":[]}')
add("pydantic_like", {"$defs": {"Color": {"enum": ["red", "green"], "title": "Color", "type": "string"}},
        "properties": {"name": {"title": "Name", "type": "string"}, "color": {"$ref": "#/$defs/Color"},
                       "score": {"anyOf": [{"type": "number"}, {"type": "null"}], "default": None, "title": "Score"}},
        "required": ["name", "color"], "title": "Item", "type": "object"},
    '{"name":"x","color":"red"}', '{"name":"x","color":"green","score":null}', '{"name":"x","color":"green","score":0.5}',
    '{"name":"x","color":"blue"}', '{"name":"x"}')


def more(name, *instances):
    """More instances for a schema added above."""
    for n, _, inst in C:
        if n == name:
            inst.extend(instances)
            return
    raise KeyError(name)


# ---- more instances for the schemas above (at least two valid and two invalid each) ----
more("str_min_1", "0", '"')
more("str_max_0", '"\\u0041"', "null")
more("str_max_10", '"abcdefghijk"')
more("enum_typed", '"z"')
more("const_obj", '{"a":1,"b":[false]}')
more("arr_max2", "[1]")
more("tuple_min", '["op",-12]', '["op","3"]')
more("arr_uniq_false", "[]", '[1,"1"]', "[2,2,2]")
more("obj_infer_type", '{"n":-5}', '{"n":1.5}')
more("oneof_disjoint", '"true"')
more("allof_single", "-5", "100")
more("ref_definitions", '["a",1]', '["","ab"]')
more("fmt_in_object", '{"when":"1970-12-31","id":"ffffffff-ffff-ffff-ffff-ffffffffffff"}', '{"id":"00000000-0000-0000-0000-000000000000"}')
more("pat_phone", '"000-0000"', '"123-4567"')
more("pat_hex", '"#abcdef"', '"#ABCDEF"')

# ---- enum-heavy ----
add("enum_weekday", {"type": "string", "enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
    '"mon"', '"sun"', '"Mon"', '"monday"', '""')
add("enum_http_status", {"type": "integer", "enum": [200, 201, 204, 301, 302, 400, 401, 403, 404, 500, 503]},
    "200", "404", "503", "202", "20", "2000", '"200"')
add("enum_num_mixed_sign", {"enum": [-1, 0, 1, 2.5, -3.75]}, "-1", "0", "2.5", "-3.75", "-2", "3", "2.6")
add("enum_countries", {"enum": ["US", "CA", "MX", "GB", "FR", "DE", "IT", "ES", "NL", "BE", "CH", "AT", "SE", "NO", "DK", "FI", "PL", "CZ", "PT", "IE", "JP", "CN", "KR", "IN", "BR", "AR", "AU", "NZ", "ZA", "EG"]},
    '"US"', '"EG"', '"NZ"', '"us"', '"USA"', '"U"', '"XX"')
add("enum_bool_null", {"enum": [True, None]}, "true", "null", "false", '"true"', "0")
add("enum_arrays", {"enum": [[], [1], [1, 2], ["a", ["b"]]]}, "[]", "[1]", "[1,2]", '["a",["b"]]', "[2]", "[1,2,3]", '["a","b"]')
add("enum_objects", {"enum": [{"op": "add"}, {"op": "del", "n": 1}]}, '{"op":"add"}', '{"op":"del","n":1}', '{"op":"del"}', '{"op":"mul"}', "{}")
add("enum_shared_prefix", {"enum": ["get", "getAll", "getAllById", "getOne", "set"]},
    '"get"', '"getAll"', '"getAllById"', '"getOne"', '"getAllBy"', '"getO"', '"gets"')
add("enum_with_escapes", {"enum": ["a\"b", "c\\d", "tab\there", "line\nbreak"]},
    '"a\\"b"', '"c\\\\d"', '"tab\\there"', '"line\\nbreak"', '"ab"', '"a\\\\b"', '"cd"')
add("enum_in_array", {"type": "array", "items": {"enum": ["x", "y", "z"]}, "minItems": 1, "maxItems": 4},
    '["x"]', '["z","y","x","x"]', "[]", '["w"]', '["x","y","z","x","y"]')
add("enum_obj_fields", {"type": "object", "properties": {
        "size": {"enum": ["S", "M", "L", "XL"]}, "color": {"enum": ["red", "black", "white"]},
        "fit": {"enum": ["slim", "regular"]}}, "required": ["size", "color"], "additionalProperties": False},
    '{"size":"M","color":"red"}', '{"size":"XL","color":"white","fit":"slim"}', '{"size":"XXL","color":"red"}',
    '{"size":"M","color":"blue"}', '{"size":"M"}', '{"size":"S","color":"red","fit":"loose"}')
add("enum_typed_int_filter", {"type": "integer", "enum": [1, "1", 2, None, 3]}, "1", "3", '"1"', "null", "4")
add("enum_large_ints", {"enum": [1000000, 2000000, -3000000]}, "1000000", "-3000000", "100000", "3000000", "2000001")

# ---- const ----
add("const_null_in_obj", {"type": "object", "properties": {"v": {"const": None}, "t": {"const": "x"}}, "required": ["v", "t"]},
    '{"v":null,"t":"x"}', '{ "v" : null , "t" : "x" }', '{"v":0,"t":"x"}', '{"v":null,"t":"y"}', '{"v":null}')
add("const_array", {"const": [1, "two", None]}, '[1,"two",null]', '[1,"two"]', '[1,"two",null,4]', '["two",1,null]')
add("const_bool_tuple", {"type": "array", "prefixItems": [{"const": True}, {"const": False}], "items": False},
    "[true,false]", "[true]", "[]", "[false,false]", "[true,false,true]")
add("const_discriminator", {"anyOf": [
        {"type": "object", "properties": {"type": {"const": "a"}, "x": {"type": "integer"}}, "required": ["type", "x"], "additionalProperties": False},
        {"type": "object", "properties": {"type": {"const": "b"}, "y": {"type": "string"}}, "required": ["type", "y"], "additionalProperties": False}]},
    '{"type":"a","x":1}', '{"type":"b","y":"s"}', '{"type":"a","y":"s"}', '{"type":"b","x":1}', '{"type":"c","x":1}')
add("const_nested_obj", {"const": {"outer": {"inner": [1, {"k": "v"}]}}},
    '{"outer":{"inner":[1,{"k":"v"}]}}', '{"outer":{"inner":[1]}}', '{"outer":{"inner":[1,{"k":"w"}]}}')

# ---- integer and number bounds ----
add("int_single", {"type": "integer", "minimum": 7, "maximum": 7}, "7", "6", "8", "77")
more("int_single", "-7")
add("int_0_999", {"type": "integer", "minimum": 0, "maximum": 999}, "0", "9", "99", "999", "1000", "-1", "9999")
add("int_10_19", {"type": "integer", "minimum": 10, "maximum": 19}, "10", "15", "19", "9", "20", "1", "100")
add("int_neg_only", {"type": "integer", "maximum": -1}, "-1", "-1000", "0", "1")
add("int_excl_neg", {"type": "integer", "exclusiveMinimum": -10, "exclusiveMaximum": -2}, "-9", "-3", "-10", "-2", "0")
add("int_min_0", {"type": "integer", "minimum": 0}, "0", "42", "99999999", "-1", "-42", "0.5")
add("int_year", {"type": "integer", "minimum": 1900, "maximum": 2100}, "1900", "1999", "2024", "2100", "1899", "2101", "190", "21000")
add("int_port", {"type": "integer", "minimum": 1, "maximum": 65535}, "1", "80", "65535", "0", "65536", "100000")
add("num_percent", {"type": "number", "minimum": 0, "maximum": 100}, "0", "99.9", "100", "100.000", "100.01", "-0.01", "101")
add("num_temp", {"type": "number", "minimum": -273, "maximum": 1000}, "-273", "-272.5", "25.5", "1000", "-273.1", "1000.5", "-300")
add("num_neg_range", {"type": "number", "minimum": -10, "maximum": -1}, "-10", "-1", "-5.5", "-1.0", "-0.5", "0", "-10.5")
add("num_big_min", {"type": "number", "minimum": 1000}, "1000", "1000.5", "123456", "999.99", "-1000", "10")
add("num_unbounded_forms", {"type": "number"}, "1e5", "-2.5E+3", "0.000", "1.", "--1", "1e+", "0x10")
add("int_or_null_bounded", {"type": ["integer", "null"], "minimum": 1, "maximum": 5}, "1", "5", "null", "0", "6", '"3"')
add("num_in_obj", {"type": "object", "properties": {"lat": {"type": "number", "minimum": -90, "maximum": 90},
        "lon": {"type": "number", "minimum": -180, "maximum": 180}}, "required": ["lat", "lon"], "additionalProperties": False},
    '{"lat":48.85,"lon":2.35}', '{"lat":-90,"lon":180}', '{"lat":91,"lon":0}', '{"lat":0,"lon":-180.5}', '{"lat":0}')

# ---- string lengths ----
add("str_len_1_1", {"type": "string", "minLength": 1, "maxLength": 1}, '"a"', '"é"', '"\\n"', '""', '"ab"', '"\\u00e9\\u00e9"')
add("str_min_5", {"type": "string", "minLength": 5}, '"abcde"', '"abcdefghij"', '"abcd"', '""', "12345")
add("str_len_escapes", {"type": "string", "minLength": 2, "maxLength": 2}, '"\\t\\n"', '"\\u0041b"', '"\\\\"', '"\\"\\"\\""', '"a"')
add("str_max_3_unicode", {"type": "string", "maxLength": 3}, '"日本語"', '"ab"', '"日本語だ"', '"abcd"')
add("str_len_in_array", {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 2}},
    '["a","bc"]', "[]", '[""]', '["abc"]', '["a",""]')
add("str_len_30", {"type": "string", "minLength": 25, "maxLength": 30}, '"' + "x" * 25 + '"', '"' + "y" * 30 + '"',
    '"' + "x" * 24 + '"', '"' + "x" * 31 + '"')
add("str_or_int_len", {"type": ["string", "integer"], "maxLength": 2}, '"ab"', "12345", '"abc"', "null")

# ---- arrays ----
add("arr_exact3", {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3}, "[1,2,3]", "[0,0,0]", "[1,2]", "[1,2,3,4]", '[1,2,"3"]')
add("arr_min0_max1", {"type": "array", "items": {"type": "string"}, "maxItems": 1}, "[]", '["a"]', '["a","b"]', '[1]')
add("arr_min5", {"type": "array", "minItems": 5}, "[1,2,3,4,5]", '[1,"a",null,true,{},[]]', "[1,2,3,4]", "[]")
add("arr_of_arr_exact", {"type": "array", "items": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 1}},
    "[]", "[[true],[false]]", "[[]]", "[[true,false]]", "[true]")
add("arr_bool_items_true", {"type": "array", "items": True, "maxItems": 2}, "[]", '[{"a":1},"x"]', "[1,2,3]", "{}")
add("arr_of_nullable", {"type": "array", "items": {"type": ["number", "null"]}}, "[1,null,2.5]", "[]", '[1,"x"]', "[true]")
add("tuple_three", {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}], "items": False, "minItems": 3},
    '["a",1,true]', '["",-2.5,false]', '["a",1]', '["a",1,true,null]', '[1,"a",true]')
add("tuple_rest_enum", {"type": "array", "prefixItems": [{"const": "cmd"}], "items": {"enum": ["-a", "-b"]}, "maxItems": 3},
    '["cmd"]', '["cmd","-a","-b"]', "[]", '["cmd","-c"]', '["cmd","-a","-a","-a"]', '["-a"]')
add("tuple_prefix_min_more", {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "integer"}], "items": {"type": "null"}, "minItems": 3},
    "[1,2,null]", "[1,2,null,null]", "[1,2]", "[1,2,3]", "[1,null,null]")
add("tuple_prefix_no_min", {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
    "[]", '["a"]', '["a",1]', '["a",1,{"any":true}]', "[1]", '["a","b"]')
add("arr_3d", {"type": "array", "items": {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 2}, "maxItems": 2}, "maxItems": 2},
    "[[[1,2],[3]],[[]]]", "[]", "[[[10]]]", "[[[1,2,3]]]", "[[],[],[]]")
add("arr_objs_bounded", {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}, "v": {"type": "integer"}}, "required": ["k", "v"], "additionalProperties": False}, "minItems": 2, "maxItems": 3},
    '[{"k":"a","v":1},{"k":"b","v":2}]', '[{"k":"a","v":1},{"k":"b","v":2},{"k":"c","v":3}]', '[{"k":"a","v":1}]', '[{"k":"a","v":1},{"k":"b"}]', '[{"k":"a","v":1},{"k":"b","v":2,"x":0}]')

# ---- objects ----
add("obj_all_optional_closed", {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "boolean"}}, "additionalProperties": False},
    "{}", '{"b":true}', '{"a":"x","b":false}', '{"c":1}', '{"a":1}', '{"a":"x","b":"y"}')
add("obj_required_all", {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}, "z": {"type": "integer"}}, "required": ["x", "y", "z"], "additionalProperties": False},
    '{"x":1,"y":2,"z":3}', '{"x":-1,"y":0,"z":99}', '{"x":1,"y":2}', '{"x":1,"z":3}', '{"x":1,"y":2,"z":"3"}')
add("obj_addl_str", {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"], "additionalProperties": {"type": "string"}},
    '{"id":1}', '{"id":1,"a":"x","b":"y"}', '{"id":1,"a":2}', '{"a":"x"}', '{"id":"1"}')
add("obj_map_of_arrays", {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}},
    "{}", '{"a":[],"b":[1,2]}', '{"a":[1,2,3]}', '{"a":["x"]}', '{"a":1}')
add("obj_nested_closed", {"type": "object", "properties": {"meta": {"type": "object", "properties": {"v": {"type": "integer"}}, "required": ["v"], "additionalProperties": False}}, "required": ["meta"], "additionalProperties": False},
    '{"meta":{"v":1}}', '{ "meta" : { "v" : 2 } }', '{"meta":{}}', '{"meta":{"v":1,"w":2}}', '{"meta":null}')
add("obj_deep5", {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "object", "properties": {"c": {"type": "object", "properties": {"d": {"type": "object", "properties": {"e": {"type": "integer"}}, "required": ["e"]}}, "required": ["d"]}}, "required": ["c"]}}, "required": ["b"]}}, "required": ["a"]},
    '{"a":{"b":{"c":{"d":{"e":5}}}}}', '{"a":{"b":{"c":{"d":{"e":-1}}}}}', '{"a":{"b":{"c":{"d":{}}}}}', '{"a":{"b":{"c":{"d":{"e":"5"}}}}}', '{"a":{"b":{}}}')
add("obj_many_props", {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(12)}, "required": ["p0", "p11"], "additionalProperties": False},
    '{"p0":0,"p11":11}', '{"p0":0,"p3":3,"p7":7,"p11":11}', '{"p0":0}', '{"p11":11}', '{"p0":0,"p5":"5","p11":11}')
add("obj_prop_any", {"type": "object", "properties": {"data": {}, "ok": {"type": "boolean"}}, "required": ["data", "ok"]},
    '{"data":[1,{"x":null}],"ok":true}', '{"data":"s","ok":false}', '{"data":1}', '{"ok":true}', '{"data":1,"ok":1}')
add("obj_unicode_keys", {"type": "object", "properties": {"名前": {"type": "string"}, "ñ": {"type": "integer"}}, "required": ["名前"], "additionalProperties": False},
    '{"名前":"太郎"}', '{"名前":"x","ñ":1}', '{"ñ":1}', '{"名前":1}', '{"名前":"x","n":1}')
add("obj_addl_obj", {"type": "object", "additionalProperties": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
    "{}", '{"a":{"n":1},"b":{"n":-2}}', '{"a":{}}', '{"a":1}', '{"a":{"n":"1"}}')
add("obj_type_only_in_array", {"type": "array", "items": {"type": "object"}}, "[]", '[{},{"a":1}]', "[1]", "[[]]", '[{"a"}]')

# ---- anyOf / oneOf ----
add("anyof_str_or_arr", {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "array", "items": {"type": "string"}, "maxItems": 2}]},
    '"abc"', '["a","b"]', "[]", '"abcd"', '["a","b","c"]', "1")
add("anyof_overlap", {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 10}, {"type": "integer", "minimum": 5, "maximum": 20}]},
    "0", "7", "20", "-1", "21")
add("anyof_nested", {"anyOf": [{"anyOf": [{"type": "null"}, {"type": "boolean"}]}, {"type": "string", "enum": ["x"]}]},
    "null", "true", '"x"', '"y"', "0")
add("oneof_objs_disjoint", {"oneOf": [
        {"type": "object", "properties": {"cat": {"type": "string"}}, "required": ["cat"], "additionalProperties": False},
        {"type": "object", "properties": {"dog": {"type": "integer"}}, "required": ["dog"], "additionalProperties": False}]},
    '{"cat":"tom"}', '{"dog":3}', "{}", '{"cat":1}', '{"cat":"tom","dog":3}')
add("oneof_types", {"oneOf": [{"type": "string", "format": "date"}, {"type": "integer", "minimum": 0}]},
    '"2020-02-02"', "5", '"2020-2-2"', "-5", "null")
add("anyof_in_array", {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 1}]}, "maxItems": 3},
    "[]", '[1,"a",2]', '[""]', "[1,2,3,4]", "[null]")
add("anyof_nullable_ref", {"$defs": {"pt": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}, "required": ["x", "y"]}},
        "type": "object", "properties": {"from": {"$ref": "#/$defs/pt"}, "to": {"anyOf": [{"$ref": "#/$defs/pt"}, {"type": "null"}]}}, "required": ["from", "to"]},
    '{"from":{"x":0,"y":0},"to":null}', '{"from":{"x":0,"y":0},"to":{"x":1.5,"y":-2}}', '{"from":null,"to":null}', '{"from":{"x":0,"y":0},"to":{"x":1}}', '{"from":{"x":0,"y":0}}')
add("anyof_enum_or_pattern", {"anyOf": [{"enum": ["auto", "none"]}, {"type": "string", "pattern": "^[0-9]+px$"}]},
    '"auto"', '"12px"', '"none"', '"px"', '"12em"', '"Auto"')

# ---- $ref / $defs ----
add("ref_chain", {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/c"}, "c": {"type": "string", "maxLength": 2}}, "$ref": "#/$defs/a"},
    '"ab"', '""', '"abc"', "1")
add("ref_expr", {"$defs": {"expr": {"anyOf": [{"type": "integer"}, {"type": "object", "properties": {"op": {"enum": ["+", "*"]}, "args": {"type": "array", "items": {"$ref": "#/$defs/expr"}, "minItems": 2, "maxItems": 2}}, "required": ["op", "args"], "additionalProperties": False}]}}, "$ref": "#/$defs/expr"},
    "1", '{"op":"+","args":[1,2]}', '{"op":"*","args":[{"op":"+","args":[1,2]},3]}', '{"op":"-","args":[1,2]}', '{"op":"+","args":[1]}', '{"op":"+","args":[1,{"op":"*","args":["x",2]}]}')
add("ref_json_value", {"$defs": {"v": {"anyOf": [{"type": "null"}, {"type": "boolean"}, {"type": "number"}, {"type": "string"},
        {"type": "array", "items": {"$ref": "#/$defs/v"}}, {"type": "object", "additionalProperties": {"$ref": "#/$defs/v"}}]}}, "$ref": "#/$defs/v"},
    "null", '{"a":[1,{"b":"c"}]}', "[[[]]]", "[1,]", '{"a":}', "tru")
add("ref_in_items", {"$defs": {"tag": {"type": "string", "pattern": "^#[a-z]+$"}}, "type": "array", "items": {"$ref": "#/$defs/tag"}, "maxItems": 3},
    '["#a","#bc"]', "[]", '["a"]', '["#A"]', '["#a","#b","#c","#d"]')
add("ref_filesystem", {"$defs": {"entry": {"anyOf": [
        {"type": "object", "properties": {"file": {"type": "string", "minLength": 1}, "size": {"type": "integer", "minimum": 0}}, "required": ["file", "size"], "additionalProperties": False},
        {"type": "object", "properties": {"dir": {"type": "string", "minLength": 1}, "entries": {"type": "array", "items": {"$ref": "#/$defs/entry"}}}, "required": ["dir", "entries"], "additionalProperties": False}]}},
        "$ref": "#/$defs/entry"},
    '{"file":"a","size":1}', '{"dir":"d","entries":[{"file":"a","size":0},{"dir":"e","entries":[]}]}', '{"dir":"d"}',
    '{"dir":"d","entries":[{"file":"","size":1}]}', '{"file":"a","size":-1}')
add("ref_defs_nested_path", {"$defs": {"group": {"$defs": {"inner": {"type": "boolean"}}}}, "type": "array", "items": {"$ref": "#/$defs/group/$defs/inner"}},
    "[true,false]", "[]", "[1]", '["true"]')
add("ref_to_property", {"type": "object", "properties": {"a": {"type": "integer", "maximum": 3}, "b": {"$ref": "#/properties/a"}}, "required": ["a", "b"]},
    '{"a":1,"b":3}', '{"a":-9,"b":0}', '{"a":1,"b":4}', '{"a":1,"b":"x"}', '{"a":4,"b":1}')
add("ref_linked_bounded", {"$defs": {"n": {"type": "object", "properties": {"val": {"type": "integer"}, "next": {"anyOf": [{"$ref": "#/$defs/n"}, {"type": "null"}]}}, "required": ["val", "next"], "additionalProperties": False}}, "$ref": "#/$defs/n"},
    '{"val":1,"next":null}', '{"val":1,"next":{"val":2,"next":{"val":3,"next":null}}}', '{"val":1}', '{"val":1,"next":{"val":2}}', '{"val":1,"next":{}}')

# ---- formats ----
add("fmt_date_arr", {"type": "array", "items": {"type": "string", "format": "date"}, "minItems": 1},
    '["2000-01-01"]', '["2000-01-01","2099-12-31"]', "[]", '["2000-00-01"]', '["2000-01-01T00:00:00Z"]')
add("fmt_ipv4_obj", {"type": "object", "properties": {"ip": {"type": "string", "format": "ipv4"}, "port": {"type": "integer", "minimum": 1, "maximum": 65535}}, "required": ["ip"]},
    '{"ip":"10.0.0.1"}', '{"ip":"127.0.0.1","port":8080}', '{"ip":"10.0.0"}', '{"ip":"10.0.0.1","port":0}', '{"ip":"300.0.0.1"}')
add("fmt_time_variants", {"type": "string", "format": "time"}, '"00:00:00z"', '"23:59:59.999999Z"', '"12:00:00+14:00"', '"12:60:00Z"', '"1:00:00Z"', '"12:00:00+1:00"')
add("fmt_uuid_list", {"type": "array", "items": {"type": "string", "format": "uuid"}, "maxItems": 2},
    '["00000000-0000-0000-0000-000000000000"]', "[]", '["0000000-0000-0000-0000-000000000000"]', '["00000000-0000-0000-0000-00000000000g"]')
add("fmt_email_variants", {"type": "string", "format": "email"}, '"first.last@sub.example.co"', '"u_1%x@a-b.io"', '"plain"', '"a.b.c"')
add("fmt_date_calendar", {"type": "string", "format": "date"},
    '"2024-02-29"', '"2000-02-29"', '"0001-01-01"', '"2023-04-30"', '"9999-12-31"', '"1600-02-29"',
    '"2023-02-29"', '"1900-02-29"', '"2100-02-29"', '"2023-02-30"', '"2023-04-31"', '"2023-11-31"', '"0000-01-01"')
add("fmt_no_leap_second", {"type": "object", "properties": {"t": {"type": "string", "format": "time"}, "dt": {"type": "string", "format": "date-time"}}},
    '{"t":"23:59:59Z"}', '{"dt":"2016-12-31T23:59:59.9Z"}', '{"t":"23:59:60Z"}', '{"dt":"2016-12-31T23:59:60Z"}',
    '{"dt":"2023-02-29T00:00:00Z"}', '{"dt":"2024-02-29T10:00:00+02:00"}')
add("fmt_datetime_offsets", {"type": "string", "format": "date-time"}, '"1999-12-31T23:59:59+23:59"', '"2000-01-01T00:00:00.000-00:00"', '"2000-01-01T00:00:00+24:00"', '"2000-01-01T00:00:00"', '"2000-01-01T00:00:00.Z"')

# ---- patterns ----
add("pat_digits_exact", {"type": "string", "pattern": "^[0-9]{5}$"}, '"12345"', '"00000"', '"1234"', '"123456"', '"1234a"')
add("pat_range_count", {"type": "string", "pattern": "^[A-Z]{2,4}[0-9]?$"}, '"AB"', '"ABCD9"', '"A"', '"ABCDE"', '"ab1"')
add("pat_star_plus", {"type": "string", "pattern": "^a*b+$"}, '"b"', '"aabbb"', '"a"', '""', '"ba"')
add("pat_semver", {"type": "string", "pattern": "^[0-9]+\\.[0-9]+\\.[0-9]+$"}, '"1.2.3"', '"10.20.30"', '"1.2"', '"1.2.3.4"', '"a.b.c"')
add("pat_slug", {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"}, '"hello-world"', '"a1"', '"-a"', '"a--b"', '"A-b"', '"a-"')
add("pat_word_class", {"type": "string", "pattern": "^\\w+$"}, '"abc_123"', '"X"', '"a b"', '""', '"a-b"')
add("pat_unanchored_digit", {"type": "string", "pattern": "[0-9]"}, '"a1b"', '"9"', '"abc"', '""')
add("pat_question", {"type": "string", "pattern": "^colou?r$"}, '"color"', '"colour"', '"colouur"', '"colr"')
add("pat_in_obj", {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}, "n": {"type": "integer"}}, "required": ["code"]},
    '{"code":"USD"}', '{"code":"EUR","n":1}', '{"code":"usd"}', '{"code":"US"}', '{"n":1}')
add("pat_space_class", {"type": "string", "pattern": "^\\S+ \\S+$"}, '"John Smith"', '"a b"', '"John"', '"a  b"', '" a b"')
add("pat_escape_dot", {"type": "string", "pattern": "^[a-z]+\\.(png|jpe?g)$"}, '"cat.png"', '"a.jpeg"', '"a.jpg"', '"catpng"', '"cat.gif"', '"a.PNG"')
add("pat_count_group", {"type": "string", "pattern": "^(ab){2,3}$"}, '"abab"', '"ababab"', '"ab"', '"abababab"', '"aabb"')

# ---- realistic tool arguments and responses ----
add("tool_search", {"type": "object", "properties": {
        "query": {"type": "string", "minLength": 1, "maxLength": 100},
        "limit": {"type": "integer", "minimum": 1, "maximum": 50},
        "sort": {"enum": ["relevance", "date"]}}, "required": ["query"], "additionalProperties": False},
    '{"query":"cats"}', '{"query":"cats","limit":10,"sort":"date"}', '{"query":""}', '{"query":"cats","limit":0}', '{"query":"cats","page":2}')
add("tool_send_email", {"type": "object", "properties": {
        "to": {"type": "array", "items": {"type": "string", "format": "email"}, "minItems": 1, "maxItems": 3},
        "subject": {"type": "string", "maxLength": 50}, "body": {"type": "string"}}, "required": ["to", "subject", "body"], "additionalProperties": False},
    '{"to":["a@b.co"],"subject":"Hi","body":"text"}', '{"to":["a@b.co","c@d.org"],"subject":"","body":""}',
    '{"to":[],"subject":"Hi","body":"x"}', '{"to":["nobody"],"subject":"Hi","body":"x"}', '{"to":["a@b.co"],"subject":"Hi"}')
add("sentiment", {"type": "object", "properties": {
        "label": {"enum": ["positive", "negative", "neutral"]}, "score": {"type": "number", "minimum": 0, "maximum": 1}},
        "required": ["label", "score"], "additionalProperties": False},
    '{"label":"positive","score":0.93}', '{"label":"neutral","score":0}', '{"label":"happy","score":0.5}', '{"label":"positive","score":1.5}', '{"score":0.5}')
add("ner_entities", {"type": "object", "properties": {"entities": {"type": "array", "items": {"type": "object", "properties": {
        "text": {"type": "string", "minLength": 1}, "type": {"enum": ["PER", "ORG", "LOC"]}, "start": {"type": "integer", "minimum": 0}},
        "required": ["text", "type", "start"], "additionalProperties": False}}}, "required": ["entities"], "additionalProperties": False},
    '{"entities":[]}', '{"entities":[{"text":"Paris","type":"LOC","start":3}]}', '{"entities":[{"text":"Paris","type":"CITY","start":3}]}',
    '{"entities":[{"text":"","type":"LOC","start":0}]}', '{"entities":[{"text":"X","type":"ORG","start":-1}]}')
add("invoice", {"$defs": {"money": {"type": "number", "minimum": 0, "maximum": 1000000}, "line": {"type": "object", "properties": {
        "desc": {"type": "string", "maxLength": 30}, "amount": {"$ref": "#/$defs/money"}}, "required": ["desc", "amount"], "additionalProperties": False}},
        "type": "object", "properties": {"number": {"type": "string", "pattern": "^INV-[0-9]+$"}, "date": {"type": "string", "format": "date"},
        "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}, "minItems": 1}, "total": {"$ref": "#/$defs/money"}},
        "required": ["number", "date", "lines", "total"], "additionalProperties": False},
    '{"number":"INV-1","date":"2024-03-01","lines":[{"desc":"x","amount":5}],"total":5}',
    '{"number":"INV-42","date":"2024-03-01","lines":[{"desc":"a","amount":1.5},{"desc":"b","amount":0}],"total":1.5}',
    '{"number":"INV-","date":"2024-03-01","lines":[{"desc":"x","amount":5}],"total":5}',
    '{"number":"INV-1","date":"2024-03-01","lines":[],"total":0}',
    '{"number":"INV-1","date":"2024-03-01","lines":[{"desc":"x","amount":-5}],"total":5}')
add("chat_message", {"type": "object", "properties": {"role": {"enum": ["system", "user", "assistant"]},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object", "properties": {"type": {"const": "text"}, "text": {"type": "string"}}, "required": ["type", "text"]}}]}},
        "required": ["role", "content"]},
    '{"role":"user","content":"hi"}', '{"role":"assistant","content":[{"type":"text","text":"a"}]}', '{"role":"tool","content":"hi"}',
    '{"role":"user","content":[{"type":"image","text":"a"}]}', '{"role":"user"}')
add("config_file", {"type": "object", "properties": {
        "version": {"const": 2}, "debug": {"type": "boolean"}, "workers": {"type": "integer", "minimum": 1, "maximum": 64},
        "log": {"type": "object", "properties": {"level": {"enum": ["debug", "info", "warn", "error"]}, "file": {"type": ["string", "null"]}}, "required": ["level"], "additionalProperties": False}},
        "required": ["version"], "additionalProperties": False},
    '{"version":2}', '{"version":2,"debug":false,"workers":8,"log":{"level":"info","file":null}}', '{"version":1}',
    '{"version":2,"workers":65}', '{"version":2,"log":{"level":"trace"}}', '{"version":2,"log":{}}')
add("recipe", {"type": "object", "properties": {"title": {"type": "string", "minLength": 1, "maxLength": 40},
        "servings": {"type": "integer", "minimum": 1, "maximum": 12},
        "ingredients": {"type": "array", "items": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number", "minimum": 0}, {"enum": ["g", "ml", "pcs"]}], "items": False, "minItems": 3}, "minItems": 1},
        "steps": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 10}},
        "required": ["title", "servings", "ingredients", "steps"], "additionalProperties": False},
    '{"title":"Tea","servings":1,"ingredients":[["water",250,"ml"]],"steps":["boil"]}',
    '{"title":"Eggs","servings":2,"ingredients":[["egg",4,"pcs"],["salt",1.5,"g"]],"steps":["crack","cook"]}',
    '{"title":"Tea","servings":1,"ingredients":[["water",250]],"steps":["boil"]}',
    '{"title":"Tea","servings":1,"ingredients":[["water",250,"cups"]],"steps":["boil"]}',
    '{"title":"Tea","servings":0,"ingredients":[["water",250,"ml"]],"steps":["boil"]}',
    '{"title":"Tea","servings":1,"ingredients":[["water",250,"ml"]],"steps":[]}')
add("geojson_point", {"type": "object", "properties": {"type": {"const": "Point"}, "coordinates": {"type": "array", "prefixItems": [{"type": "number", "minimum": -180, "maximum": 180}, {"type": "number", "minimum": -90, "maximum": 90}], "items": False, "minItems": 2}},
        "required": ["type", "coordinates"], "additionalProperties": False},
    '{"type":"Point","coordinates":[2.35,48.85]}', '{"type":"Point","coordinates":[-180,-90]}', '{"type":"Point","coordinates":[2.35]}',
    '{"type":"Point","coordinates":[200,0]}', '{"type":"Line","coordinates":[0,0]}')
add("pagination", {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "integer"}, "maxItems": 5},
        "next": {"anyOf": [{"type": "string", "pattern": "^cursor_[a-z0-9]+$"}, {"type": "null"}]}, "total": {"type": "integer", "minimum": 0}},
        "required": ["items", "next"], "additionalProperties": False},
    '{"items":[1,2],"next":"cursor_ab1"}', '{"items":[],"next":null,"total":0}', '{"items":[1,2,3,4,5,6],"next":null}',
    '{"items":[],"next":"page2"}', '{"items":[],"next":null,"total":-1}')
add("classification_multi", {"type": "object", "properties": {"labels": {"type": "array", "items": {"enum": ["spam", "ads", "nsfw", "ok"]}, "minItems": 1, "maxItems": 2},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1}}, "required": ["labels"], "additionalProperties": False},
    '{"labels":["ok"]}', '{"labels":["spam","ads"],"confidence":0.7}', '{"labels":[]}', '{"labels":["spam","ads","nsfw"]}', '{"labels":["junk"]}')
add("address", {"type": "object", "properties": {"street": {"type": "string", "minLength": 1}, "zip": {"type": "string", "pattern": "^[0-9]{5}(-[0-9]{4})?$"},
        "country": {"enum": ["US", "PR"]}}, "required": ["street", "zip", "country"], "additionalProperties": False},
    '{"street":"1 Main St","zip":"12345","country":"US"}', '{"street":"x","zip":"12345-6789","country":"PR"}',
    '{"street":"x","zip":"1234","country":"US"}', '{"street":"x","zip":"12345-678","country":"US"}', '{"street":"","zip":"12345","country":"US"}')
add("step_plan", {"$defs": {"step": {"type": "object", "properties": {"action": {"enum": ["search", "read", "answer"]}, "arg": {"type": "string", "maxLength": 20},
        "substeps": {"type": "array", "items": {"$ref": "#/$defs/step"}, "maxItems": 2}}, "required": ["action"], "additionalProperties": False}},
        "type": "array", "items": {"$ref": "#/$defs/step"}, "minItems": 1, "maxItems": 4},
    '[{"action":"answer"}]', '[{"action":"search","arg":"x","substeps":[{"action":"read","substeps":[]}]}]', "[]",
    '[{"action":"jump"}]', '[{"action":"search","substeps":[{"action":"read"},{"action":"read"},{"action":"read"}]}]')


# (enum and const values are written compactly: one text each)
SINGLE = {"null", "const_str", "const_num", "const_obj", "const_array", "const_nested_obj", "int_single",
          "str_max_0"}


def main():
    out = []
    names = set()
    for name, schema, inst in C:
        assert name not in names, name
        names.add(name)
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        v = cls(schema, format_checker=cls.FORMAT_CHECKER)
        verdicts = []
        for text in inst:
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                verdicts.append(False)
                continue
            verdicts.append(v.is_valid(doc))
        n_valid = sum(verdicts)
        # a schema with one admissible text (null, a const) has only one valid instance
        assert (n_valid >= 2 or name in SINGLE) and len(verdicts) - n_valid >= 2, (name, verdicts)
        out.append({"name": name, "schema": schema, "instances": inst, "valid": verdicts})
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    n_inst = sum(len(x["instances"]) for x in out)
    print(f"{len(out)} schemas, {n_inst} instances -> {OUT}")


if __name__ == "__main__":
    main()
