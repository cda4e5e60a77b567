"""GBNF grammars from JSON schemas: parsed by llama.cpp before use, and they make calls valid."""

from __future__ import annotations

import json

import jsonschema
import pytest

from llmos_cli.errors import RuntimeFailure, ToolError
from llmos_cli.gbnf import SchemaNotExpressible, arguments_grammar, call_grammar, gbnf_literal, validate_grammar
from llmos_cli.runtime.engine import EngineOptions, LlamaCppEngine, SamplingParams
from tests.helpers.fixtures_models import write_tiny_llama

SCHEMAS = {
    "empty": {"type": "object", "properties": {}},
    "enum_int_bool": {
        "type": "object",
        "properties": {
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "detailed": {"type": "boolean"},
        },
        "required": ["unit", "days"],
    },
    "short_strings_and_arrays": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1, "maxLength": 8},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "minItems": 1, "maxItems": 3},
        },
        "required": ["city", "tags"],
        "additionalProperties": False,
    },
    "nested_refs_and_nullable": {
        "type": "object",
        "$defs": {
            "Point": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 99}, "y": {"const": 0}}, "required": ["x", "y"]}
        },
        "properties": {
            "p": {"$ref": "#/$defs/Point"},
            "note": {"anyOf": [{"type": "string", "maxLength": 4}, {"type": "null"}]},
            "mode": {"type": ["boolean", "null"]},
        },
        "required": ["p", "note", "mode"],
    },
    "only_optional": {
        "type": "object",
        "properties": {"a": {"type": "boolean"}, "b": {"type": "boolean"}, "c": {"type": "null"}},
    },
    "numbers_and_formats": {
        "type": "object",
        "properties": {
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "day": {"type": "string", "format": "date"},
        },
        "required": ["ratio", "day"],
    },
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    model = write_tiny_llama(tmp_path_factory.mktemp("g") / "tiny.gguf", n_ctx=512)
    e = LlamaCppEngine(model.path, EngineOptions(n_ctx=512))
    yield e
    e.close()


def _vocab(engine):
    import llama_cpp

    return llama_cpp.llama_model_get_vocab(engine.llm.model)


def test_literals_escape():
    assert gbnf_literal('a"b\\c\n') == '"a\\"b\\\\c\\n"'


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_grammar_parses_in_llama_cpp(engine, name):
    g = call_grammar("tool_x", SCHEMAS[name])
    assert g.startswith("root ::= ")
    validate_grammar(_vocab(engine), g)
    validate_grammar(_vocab(engine), arguments_grammar("tool_x", SCHEMAS[name]))


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_constrained_generation_gives_valid_calls(engine, name):
    schema = SCHEMAS[name]
    g = call_grammar("tool_x", schema, args_key="parameters")
    prompt = engine.prompt_tokens([{"role": "user", "content": "call the tool"}])
    for seed in (1, 2, 3):
        gen = engine.generate(prompt, SamplingParams(max_tokens=120, temperature=1.0, seed=seed), grammar=g)
        assert gen.finish_reason == "stop", gen  # the grammar completed, then end of generation
        obj = json.loads(gen.text)
        assert list(obj) == ["name", "parameters"] and obj["name"] == "tool_x"
        jsonschema.validate(obj["parameters"], schema)


@pytest.mark.parametrize(
    "schema, message",
    [
        ({"type": "object", "properties": {"s": {"type": "string", "pattern": "^a+$"}}}, "'pattern' is not supported"),
        ({"type": "object", "properties": {"s": {"not": {"type": "string"}}}}, "'not' is not supported"),
        ({"type": "object", "properties": {"s": {"type": "string", "format": "email"}}}, "format 'email' is not supported"),
        ({"type": "object", "properties": {"s": {"$ref": "https://example.org/s.json"}}}, "only local \\$ref"),
        ({"type": "object", "properties": {"s": {"allOf": [{"type": "string"}, {"maxLength": 3}]}}}, "allOf with more than one"),
        ({"type": "object", "patternProperties": {"^x": {"type": "string"}}}, "'patternProperties' is not supported"),
        ({"type": "array"}, "must describe an object"),
        ({"type": "object", "properties": {"n": {"type": "integer", "minimum": "zero"}}}, "not a valid JSON schema"),
        ({"type": "object", "properties": {}, "required": ["ghost"]}, "not declared"),
    ],
)
def test_inexpressible_schemas_fail_clearly(schema, message):
    with pytest.raises(SchemaNotExpressible, match=message) as exc:
        call_grammar("weird", schema)
    assert isinstance(exc.value, ToolError)
    assert "tool 'weird'" in exc.value.message


def test_a_broken_grammar_is_an_error_not_a_crash(engine):
    with pytest.raises(ToolError, match="rejected a generated tool-call grammar"):
        validate_grammar(_vocab(engine), 'root ::= "unterminated')
    with pytest.raises(RuntimeFailure, match="does not parse"):
        engine.generate(engine.prompt_tokens([{"role": "user", "content": "x"}]), SamplingParams(max_tokens=2), grammar="root ::= ( ")
