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
        assert any(verdicts) and not all(verdicts), (name, verdicts)
        out.append({"name": name, "schema": schema, "instances": inst, "valid": verdicts})
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    n_inst = sum(len(x["instances"]) for x in out)
    print(f"{len(out)} schemas, {n_inst} instances -> {OUT}")


if __name__ == "__main__":
    main()
