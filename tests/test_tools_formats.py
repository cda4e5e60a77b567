"""Native tool-call syntaxes: detection from real chat templates, parsing, rendering."""

from __future__ import annotations

import pytest

from llmos_cli.runtime.chat import render_chat
from llmos_cli.tools.formats import (
    GENERIC,
    HERMES,
    LLAMA3,
    MISTRAL,
    ParsedCall,
    assistant_message,
    detect_format,
    prepare_chat,
    tool_message,
)
from tests.helpers.fixtures_models import llama_sdist  # noqa: F401  (fixture)


@pytest.mark.parametrize(
    "template, fmt",
    [
        ("Qwen-Qwen2.5-7B-Instruct", HERMES),
        ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use", HERMES),
        ("meta-llama-Llama-3.2-3B-Instruct", LLAMA3),
        ("meta-llama-Llama-3.1-8B-Instruct", LLAMA3),
        ("mistralai-Mistral-Nemo-Instruct-2407", MISTRAL),
        ("google-gemma-2-2b-it", GENERIC),
    ],
)
def test_detect_from_real_templates(llama_sdist, template, fmt):
    assert detect_format(llama_sdist.template(template).read_text()) is fmt


def test_detect_without_template():
    assert detect_format(None) is GENERIC


def test_hermes_calls():
    text = 'Let me check.\n<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n<tool_call>{"name": "calc", "arguments": "{\\"x\\": 1}"}</tool_call>'
    calls = HERMES.parse(text)
    assert [(c.name, c.arguments, c.error) for c in calls] == [("weather", {"city": "Oslo"}, None), ("calc", {"x": 1}, None)]
    assert all(len(c.id) == 9 and c.id.isalnum() for c in calls)
    bad = HERMES.parse('<tool_call>\n{"name": "weather", "arguments": {"city": \n</tool_call>')
    assert len(bad) == 1 and bad[0].error and "not valid JSON" in bad[0].error
    assert HERMES.parse("no calls here") == []
    assert HERMES.parse('<tool_call>{"arguments": {}}</tool_call>')[0].error == 'a call must be a JSON object with a "name" string'
    assert HERMES.parse('<tool_call>{"name": "x", "arguments": [1]}</tool_call>')[0].error == "the arguments must be a JSON object"


def test_llama3_calls():
    calls = LLAMA3.parse('{"name": "weather", "parameters": {"city": "Oslo"}}')
    assert [(c.name, c.arguments) for c in calls] == [("weather", {"city": "Oslo"})]
    assert LLAMA3.parse('<|python_tag|>{"name": "w", "parameters": {}}')[0].name == "w"
    assert LLAMA3.parse("The answer is 42.") == []
    assert LLAMA3.parse('{"city": "Oslo"}') == []  # JSON, but not a call
    assert LLAMA3.parse('{"name": "w", "parameters": {')[0].error


def test_mistral_calls():
    calls = MISTRAL.parse('[TOOL_CALLS][{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]')
    assert [(c.name, c.arguments) for c in calls] == [("a", {"x": 1}), ("b", {})]
    assert MISTRAL.parse("plain answer") == []
    assert MISTRAL.parse("[TOOL_CALLS][{broken")[0].error


def test_render_then_parse_round_trips():
    call = ParsedCall("weather", {"city": "Oslo"}, "")
    for fmt in (HERMES, LLAMA3, MISTRAL, GENERIC):
        (back,) = fmt.parse(fmt.render_call(call))
        assert (back.name, back.arguments) == ("weather", {"city": "Oslo"})


TOOLS = [
    {
        "type": "function",
        "function": {"name": "weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
]


@pytest.mark.parametrize(
    "template, expect_tools, expect_call, expect_result",
    [
        (
            "Qwen-Qwen2.5-7B-Instruct",
            '"name": "weather"',
            '<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
            '<tool_response>\n{"temp": 3}\n</tool_response>',
        ),
        (
            "meta-llama-Llama-3.2-3B-Instruct",
            '"name": "weather"',
            '{"name": "weather", "parameters": {"city": "Oslo"}}',
            '<|start_header_id|>ipython<|end_header_id|>\n\n{"temp": 3}',
        ),
        (
            "mistralai-Mistral-Nemo-Instruct-2407",
            "[AVAILABLE_TOOLS]",
            '[TOOL_CALLS][{"name": "weather", "arguments": {"city": "Oslo"}',
            '[TOOL_RESULTS]{"content": {"temp": 3}',
        ),
    ],
)
def test_conversation_with_a_call_renders_through_real_templates(llama_sdist, template, expect_tools, expect_call, expect_result):
    src = llama_sdist.template(template).read_text()
    fmt = detect_format(src)
    call = ParsedCall("weather", {"city": "Oslo"}, "")
    convo = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        assistant_message(fmt, [call]),
        tool_message(call, '{"temp": 3}'),
    ]
    msgs, tools = prepare_chat(fmt, convo, TOOLS)
    text = render_chat(src, msgs, tools=tools, bos_token="<s>", eos_token="</s>").text
    assert expect_tools in text and "Weather of a city" in text
    assert expect_call in text
    assert expect_result in text


def test_generic_format_describes_tools_itself():
    convo = [{"role": "user", "content": "hi"}]
    msgs, tools = prepare_chat(GENERIC, convo, TOOLS)
    assert tools is None
    assert msgs[0]["role"] == "system" and "<tools>" in msgs[0]["content"] and '"weather"' in msgs[0]["content"]
    call = ParsedCall("weather", {"city": "Oslo"}, "")
    convo += [assistant_message(GENERIC, [call]), tool_message(call, "{}")]
    msgs, _ = prepare_chat(GENERIC, convo, TOOLS)
    assert msgs[2] == {"role": "assistant", "content": GENERIC.render_call(call)}
    assert msgs[3] == {"role": "user", "content": "<tool_response>\n{}\n</tool_response>"}
