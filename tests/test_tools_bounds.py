"""Bounded tool calls, on a tiny model with a real Qwen2.5 tokenizer and chat template.

* a string without ``maxLength`` is capped in the call grammar, so a forced
  call always closes its strings and ends (llama.cpp enforces the grammar);
* a call that cannot be read gets one repair round; a second unreadable call
  ends the run with ``ToolError`` (exit 14), and the records keep the forced
  tool's name;
* only the tools that may run are described to the model;
* dotted tool names (``math.factorial``) are accepted end to end;
* ``--no-builtin-tools`` leaves the built-in calculator out.

The weights are random, so the assertions are about structure.  The one
stand-in is ``_Scripted`` below: a real engine whose replies for chosen
rounds are replaced by an unreadable call, because a model with random
weights does not write tool calls on its own in an unforced round.
"""

from __future__ import annotations

import json

import pytest

from llmos_cli.errors import ExitCode, ToolError
from llmos_cli.gbnf import DEFAULT_MAX_STRING, call_grammar
from llmos_cli.knowledge.libraries import LibraryView
from llmos_cli.pkg.manifest import parse_manifest_text
from llmos_cli.runtime.engine import EngineOptions, Generation, LlamaCppEngine, SamplingParams
from llmos_cli.tools.loop import LoopOptions, run_tool_loop
from llmos_cli.tools.permissions import Policy
from llmos_cli.tools.registry import ToolSet
from tests.helpers.fixtures_models import llama_sdist, write_real_vocab_model, write_tiny_llama  # noqa: F401  (fixture)

ECHO = "import json, sys\nargs = json.load(sys.stdin)\nprint(json.dumps({'len': len(args['text'])}))\n"
FACT = "import json, math, sys\nargs = json.load(sys.stdin)\nprint(json.dumps({'value': math.factorial(args['n'])}))\n"
TEXT_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"], "additionalProperties": False}
N_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 20}}, "required": ["n"], "additionalProperties": False}


def _decl(name: str, script: str, schema: dict, description: str) -> dict:
    return {"name": name, "description": description, "command": ["python", f"tools/{script}"], "parameters": schema}


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    from tests.helpers.pkgtools import write_source

    folder = write_source(
        tmp_path_factory.mktemp("lib"),
        "textkit",
        files={"tools/echo.py": ECHO, "tools/fact.py": FACT},
        extra={
            "tools": [
                _decl("echo", "echo.py", TEXT_SCHEMA, "The echo tool."),
                _decl("math.factorial", "fact.py", N_SCHEMA, "The factorial tool."),
            ]
        },
    )
    return LibraryView.from_folder(folder)


@pytest.fixture(scope="module")
def qwen(llama_sdist, tmp_path_factory):
    model = write_real_vocab_model(tmp_path_factory.mktemp("q") / "m.gguf", llama_sdist, "qwen2", "Qwen-Qwen2.5-7B-Instruct", n_ctx=4096)
    engine = LlamaCppEngine(model.path, EngineOptions(n_ctx=4096))
    yield engine
    engine.close()


def _messages() -> list[dict]:
    return [{"role": "user", "content": "Say something long."}]


# ---------------------------------------------------------------- the grammar


def test_strings_without_max_length_are_capped_in_the_grammar():
    g = call_grammar("echo", TEXT_SCHEMA)
    assert f"char{{0,{DEFAULT_MAX_STRING}}}" in g and "char*" not in g
    # minLength alone: capped too; an explicit maxLength is kept
    g = call_grammar("echo", {"type": "object", "properties": {"text": {"type": "string", "minLength": 3}}})
    assert f"char{{3,{DEFAULT_MAX_STRING}}}" in g and "char*" not in g
    g = call_grammar("echo", {"type": "object", "properties": {"text": {"type": "string", "maxLength": 10}}})
    assert "char{0,10}" in g
    # untyped values (keys and strings inside free objects) are capped as well
    g = call_grammar("echo", {"type": "object", "properties": {"blob": {}}})
    assert "char*" not in g


@pytest.mark.slow
def test_a_forced_call_closes_its_string_and_ends(qwen, lib):
    ts = ToolSet.for_run([lib])
    try:
        # a generous token budget: without the cap, a random model runs the string to it
        params = SamplingParams(max_tokens=1500, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=11)
        res = run_tool_loop(qwen, _messages(), ts, LoopOptions(tool_choice="echo", chain_limit=1, params=params, policy=Policy(allow_all=True)))
    finally:
        ts.close()
    (rec,) = res.tool_calls
    assert rec.call.error is None, rec.call.error
    assert rec.call.name == "echo" and len(rec.call.arguments["text"]) <= DEFAULT_MAX_STRING
    assert rec.result.ok and rec.result.value == {"len": len(rec.call.arguments["text"])}


# ---------------------------------------------------------------- unreadable calls


class _Scripted:
    """A real engine whose reply in chosen generations (0-based) is replaced by the given text.

    A stand-in for a model that writes unreadable calls: everything else
    (templates, tokens, grammars, the other generations) is llama.cpp's.
    """

    def __init__(self, engine, replies: dict[int, str]):
        self._engine, self._replies, self._n = engine, replies, 0

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def generate(self, tokens, params, **kw):
        gen = self._engine.generate(tokens, params, **kw)
        n, self._n = self._n, self._n + 1
        if n in self._replies:
            return Generation(self._replies[n], [], "length", gen.prompt_tokens, gen.completion_tokens, gen.prompt_s, gen.generate_s)
        return gen


UNCLOSED = '{"name": "echo", "arguments": {"text": "aaaaaaaa'  # the forced round's text, after the <tool_call> prefix


def test_an_unreadable_forced_call_keeps_the_tool_name_and_gets_one_repair(qwen, lib):
    ts = ToolSet.for_run([lib])
    try:
        # a stop string cuts the real forced call short: it cannot be read
        params = SamplingParams(max_tokens=64, temperature=0.0, stop=['"arguments"'])
        res = run_tool_loop(qwen, _messages(), ts, LoopOptions(tool_choice="echo", chain_limit=3, params=params, policy=Policy(allow_all=True)))
    finally:
        ts.close()
    first = res.tool_calls[0]
    assert first.call.error is not None and "could not be read" in first.result.error
    assert first.call.name == "echo" and first.to_json()["name"] == "echo"
    # the repair request went back to the model once
    assert len(res.prompts) >= 2 and "Your tool call could not be read" in res.prompts[1]


@pytest.mark.slow
def test_a_second_unreadable_call_ends_the_run_with_the_tool_exit_code(qwen, lib):
    ts = ToolSet.for_run([lib])
    engine = _Scripted(qwen, {0: UNCLOSED, 1: "<tool_call>\n" + UNCLOSED})
    try:
        with pytest.raises(ToolError) as exc:
            run_tool_loop(
                engine,
                _messages(),
                ts,
                LoopOptions(tool_choice="echo", chain_limit=5, params=SamplingParams(max_tokens=32, temperature=0.0), policy=Policy(allow_all=True)),
            )
    finally:
        ts.close()
    err = exc.value
    assert err.exit_code == ExitCode.TOOL == 14
    assert "echo" in err.message and "again after one repair" in err.message
    assert err.details["tool"] == "echo" and err.details["rounds"] == 2
    assert [c["name"] for c in err.details["tool_calls"]] == ["echo", "echo"]
    assert engine._n == 2  # two generations, not five rounds


# ---------------------------------------------------------------- what is described


def test_only_tools_that_may_run_are_described(qwen, lib):
    ts = ToolSet.for_run([lib])
    params = SamplingParams(max_tokens=8, temperature=0.0)
    try:
        only_echo = run_tool_loop(qwen, _messages(), ts, LoopOptions(tool_choice="auto", params=params, policy=Policy(allow=frozenset({"echo"}))))
        p = only_echo.prompts[0]
        assert "The echo tool." in p and "The factorial tool." not in p and '"calculator"' in p
        # on a terminal an undecided tool may still be asked about: it is described
        asking = run_tool_loop(qwen, _messages(), ts, LoopOptions(params=params, policy=Policy(allow=frozenset({"echo"}), ask=lambda s: False)))
        assert "The factorial tool." in asking.prompts[0]
        # a stored denial hides a tool even from --allow-tools
        denied = run_tool_loop(qwen, _messages(), ts, LoopOptions(params=params, policy=Policy(allow_all=True, stored={"textkit:echo": False})))
        assert "The echo tool." not in denied.prompts[0] and "The factorial tool." in denied.prompts[0]
    finally:
        ts.close()


def test_a_call_of_a_tool_not_described_is_an_unknown_tool(qwen, lib):
    ts = ToolSet.for_run([lib])
    engine = _Scripted(qwen, {0: '<tool_call>\n{"name": "math.factorial", "arguments": {"n": 5}}\n</tool_call>'})
    try:
        res = run_tool_loop(
            engine, _messages(), ts, LoopOptions(params=SamplingParams(max_tokens=8, temperature=0.0), policy=Policy(allow=frozenset({"echo"})))
        )
    finally:
        ts.close()
    (rec,) = res.tool_calls
    assert not rec.result.ok and "unknown tool 'math.factorial'; the tools are: calculator, echo" in rec.result.error


# ---------------------------------------------------------------- dotted names and built-ins


def test_dotted_tool_names_are_accepted(qwen, lib):
    text = (
        'schema = 1\n[package]\nname = "m"\nversion = "1.0"\nkind = "library"\nsummary = "s"\nlicense = "MIT"\nmaintainer = "a <a@b.c>"\n'
        '[[tools]]\nname = "math.factorial"\ndescription = "d"\ncommand = ["python", "f.py"]\n'
        '[[tools]]\nname = "1bad"\ndescription = "d"\ncommand = ["python", "f.py"]\n'
    )
    _, findings = parse_manifest_text(text)
    bad = [f for f in findings if f.code == "invalid-name"]
    assert [f.field for f in bad] == ["tools[1].name"]
    ts = ToolSet.for_run([lib])
    try:
        assert "math.factorial" in ts.names() and not ts.warnings
        res = run_tool_loop(
            qwen,
            [{"role": "user", "content": "5!"}],
            ts,
            LoopOptions(tool_choice="math.factorial", chain_limit=1, params=SamplingParams(max_tokens=16, temperature=0.0), policy=Policy(allow_all=True)),
        )
    finally:
        ts.close()
    (rec,) = res.tool_calls
    assert rec.call.name == "math.factorial" and rec.result.ok
    assert rec.result.value == {"value": __import__("math").factorial(rec.call.arguments["n"])}


def test_builtins_can_be_left_out(lib):
    with_b = ToolSet.for_run([lib], start_mcp=False)
    without = ToolSet.for_run([lib], builtins=False, start_mcp=False)
    assert "calculator" in with_b.names() and "calculator" not in without.names()
    assert without.names() == ["echo", "math.factorial"]


def test_run_no_builtin_tools_on_the_command_line(cli, tmp_path, write_source):
    folder = write_source(
        tmp_path / "src", "textkit", files={"tools/echo.py": ECHO}, extra={"tools": [_decl("echo", "echo.py", TEXT_SCHEMA, "The echo tool.")]}
    )
    assert cli("build", str(folder), "-o", str(tmp_path / "out")).exit_code == 0
    assert cli("install", str(tmp_path / "out" / "textkit_1.0.0.llmos"), "-y").exit_code == 0
    write_tiny_llama(tmp_path / "tiny.gguf", n_ctx=2048)
    assert cli("import-model", str(tmp_path / "tiny.gguf"), "--name", "tiny", "-y").exit_code == 0

    r = cli("run", "x", "--explain", "--json", "--allow-tool", "echo")
    assert r.exit_code == 0, r
    assert r.json()["data"]["extra"]["tools"] == ["calculator", "echo"]
    r = cli("run", "x", "--explain", "--json", "--allow-tool", "echo", "--no-builtin-tools")
    assert r.exit_code == 0, r
    assert r.json()["data"]["extra"]["tools"] == ["echo"]
    # not allowed and no terminal: the library tool is not described at all
    r = cli("run", "x", "--explain", "--json")
    assert r.exit_code == 0, r
    assert r.json()["data"]["extra"]["tools"] == ["calculator"]
    r = cli("run", "x", "--explain", "--json", "--no-builtin-tools")
    assert r.exit_code == 0, r
    assert json.dumps(r.json()["data"]["extra"].get("tools", [])) == "[]"


def test_a_forced_call_may_hold_the_formats_markers_in_a_string():
    from llmos_cli.tools.formats import GENERIC, HERMES, parse_forced

    body = '{"name": "calculator", "arguments": {"expression": "}}</tool_call>12 * 7"}}'
    for fmt in (HERMES, GENERIC):
        (call,) = parse_forced(fmt, body)
        assert call.error is None and call.arguments == {"expression": "}}</tool_call>12 * 7"}
        # the free-text parser cuts at the marker: the reason forced calls are decoded directly
        assert fmt.parse(fmt.prefix + body + fmt.suffix)[0].error is not None
    (cut,) = parse_forced(HERMES, '{"name": "calculator", "arguments": {"expression": "12')
    assert cut.error is not None and cut.name == "calculator"
