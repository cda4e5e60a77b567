"""The tool loop end to end on tiny models with REAL tokenizers and chat templates of three families.

Each forced call goes round the whole loop: tools rendered by the model's own
template, the call generated under a grammar, parsed in the family's native
syntax, executed (a real command tool), the result rendered back through the
template, and a final answer generated.  The weights are random, so the
prose is gibberish: the assertions are about structure.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from llmos_cli.errors import ToolError, UsageError
from llmos_cli.gbnf import SchemaNotExpressible
from llmos_cli.knowledge.libraries import LibraryView
from llmos_cli.runtime.engine import EngineOptions, LlamaCppEngine, SamplingParams
from llmos_cli.tools.formats import HERMES
from llmos_cli.tools.loop import LoopOptions, execute_calls, run_tool_loop
from llmos_cli.tools.permissions import Policy
from llmos_cli.tools.registry import ToolSet
from tests.helpers.fixtures_models import llama_sdist, write_real_vocab_model  # noqa: F401  (fixture)

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Oslo", "Paris", "Lima"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 3},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
SCRIPTS = {
    "tools/weather.py": ("import json, sys\nargs = json.load(sys.stdin)\nprint(json.dumps({'city': args['city'], 'forecast': ['sunny'] * args['days']}))\n"),
    "tools/broken.py": "import sys\nsys.stderr.write('station offline\\n')\nsys.exit(2)\n",
}
FAMILIES = {
    # format: (vocabulary, chat template, marker of the tool list, marker of a rendered result)
    "hermes": ("qwen2", "Qwen-Qwen2.5-7B-Instruct", "<tools>", "<tool_response>\n{"),
    "llama3": ("llama-bpe", "meta-llama-Llama-3.2-3B-Instruct", "Given the following functions", "<|start_header_id|>ipython<|end_header_id|>\n\n{"),
    "mistral": ("llama-spm", "mistralai-Mistral-Nemo-Instruct-2407", "[AVAILABLE_TOOLS]", '[TOOL_RESULTS]{"content": {'),
}


def _decl(name: str, script: str, schema: dict) -> dict:
    return {"name": name, "description": f"The {name} tool.", "command": ["python", f"tools/{script}"], "parameters": schema}


@pytest.fixture(scope="module")
def weather_lib(tmp_path_factory):
    from tests.helpers.pkgtools import write_source

    folder = write_source(
        tmp_path_factory.mktemp("lib"),
        "meteo",
        files=SCRIPTS,
        extra={"tools": [_decl("weather", "weather.py", WEATHER_SCHEMA), _decl("station", "broken.py", WEATHER_SCHEMA)]},
    )
    return LibraryView.from_folder(folder)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, llama_sdist, tmp_path_factory):
    vocab, template, _, _ = FAMILIES[request.param]
    model = write_real_vocab_model(tmp_path_factory.mktemp(request.param) / "m.gguf", llama_sdist, vocab, template, n_ctx=2048)
    engine = LlamaCppEngine(model.path, EngineOptions(n_ctx=2048))
    yield request.param, engine
    engine.close()


def _messages():
    return [{"role": "system", "content": "You are a weather assistant."}, {"role": "user", "content": "Weather in Oslo for two days?"}]


def _options(**kw) -> LoopOptions:
    kw.setdefault("params", SamplingParams(max_tokens=48, temperature=0.8, seed=7))
    kw.setdefault("policy", Policy(allow=frozenset({"weather", "station"})))
    return LoopOptions(**kw)


@pytest.mark.slow
def test_forced_call_goes_round_the_whole_loop(family, weather_lib):
    fmt_name, engine = family
    _, _, tools_marker, result_marker = FAMILIES[fmt_name]
    events: list[tuple[str, dict]] = []
    ts = ToolSet.for_run([weather_lib])
    try:
        res = run_tool_loop(engine, _messages(), ts, _options(tool_choice="weather", on_event=lambda k, d: events.append((k, d))))
    finally:
        ts.close()
    assert res.format == fmt_name
    # 1. the tools were rendered by the model's own template, the call prefix ends the prompt
    first = res.prompts[0]
    assert tools_marker in first and "The weather tool." in first
    assert "The station tool." in first and "calculator" in first
    # 2. + 3. the constrained call parsed into a valid call of the forced tool
    assert res.rounds == 1 and len(res.tool_calls) == 1
    rec = res.tool_calls[0]
    assert rec.call.name == "weather" and rec.source == "meteo" and rec.call.error is None
    jsonschema.validate(rec.call.arguments, WEATHER_SCHEMA)
    # 4. executed for real
    assert rec.result.ok, rec.result.error
    assert rec.result.value == {"city": rec.call.arguments["city"], "forecast": ["sunny"] * rec.call.arguments["days"]}
    # 5. the result went back through the template
    second = res.prompts[1]
    assert result_marker in second
    assert json.dumps(rec.result.value)[1:-1] in second or json.dumps(rec.result.value, indent=None)[1:-1] in second.replace("\n", "")
    # 6. a final answer came out
    assert isinstance(res.text, str) and res.finish_reason in ("stop", "length")
    assert res.completion_tokens > 0 and not res.chain_limit_reached
    js = res.to_json()
    assert js["tool_calls"][0]["name"] == "weather" and js["tool_calls"][0]["ok"] is True
    assert js["tool_calls"][0]["library"] == "meteo"
    assert [k for k, _ in events] == ["round", "call", "result", "round"]


def test_a_failing_tool_is_fed_back_and_the_run_goes_on(family, weather_lib):
    fmt_name, engine = family
    ts = ToolSet.for_run([weather_lib])
    try:
        res = run_tool_loop(engine, _messages(), ts, _options(tool_choice="station"))
    finally:
        ts.close()
    rec = res.tool_calls[0]
    assert not rec.result.ok and "exited with status 2: station offline" in rec.result.error
    assert "station offline" in res.prompts[1]  # the model read the error
    assert isinstance(res.text, str)


def test_chain_limit_and_tool_choice_none(family, weather_lib):
    fmt_name, engine = family
    ts = ToolSet.for_run([weather_lib])
    try:
        res = run_tool_loop(engine, _messages(), ts, _options(tool_choice="weather", chain_limit=1))
        assert res.rounds == 1 and res.chain_limit_reached
        none = run_tool_loop(engine, _messages(), ts, _options(tool_choice="none"))
        assert none.rounds == 0 and none.tool_calls == [] and len(none.prompts) == 1
        assert "The weather tool." not in none.prompts[0]
        with pytest.raises(UsageError, match="chain-limit is 0"):
            run_tool_loop(engine, _messages(), ts, _options(tool_choice="weather", chain_limit=0))
    finally:
        ts.close()


@pytest.fixture(scope="module")
def qwen(llama_sdist, tmp_path_factory):
    model = write_real_vocab_model(tmp_path_factory.mktemp("q") / "m.gguf", llama_sdist, "qwen2", "Qwen-Qwen2.5-7B-Instruct", n_ctx=2048)
    engine = LlamaCppEngine(model.path, EngineOptions(n_ctx=2048))
    yield engine
    engine.close()


@pytest.mark.slow
def test_not_allowed_without_a_terminal_fails_naming_the_flag(qwen, weather_lib):
    ts = ToolSet.for_run([weather_lib])
    try:
        with pytest.raises(ToolError) as exc:
            run_tool_loop(qwen, _messages(), ts, _options(tool_choice="weather", policy=Policy()))
        assert "not allowed" in exc.value.message and "--allow-tool weather" in exc.value.hint
        assert "llmos tools allow meteo:weather" in exc.value.hint
        # --allow-tools opens library tools; a stored denial closes one again
        ok = run_tool_loop(qwen, _messages(), ts, _options(tool_choice="weather", policy=Policy(allow_all=True)))
        assert ok.tool_calls[0].result.ok
        with pytest.raises(ToolError, match="denied"):
            run_tool_loop(qwen, _messages(), ts, _options(tool_choice="weather", policy=Policy(allow_all=True, stored={"meteo:weather": False})))
        # on a terminal the user is asked (before generation for a forced call); "no" stops a forced call
        asked: list[str] = []
        with pytest.raises(ToolError, match="denied"):
            run_tool_loop(qwen, _messages(), ts, _options(tool_choice="weather", policy=Policy(ask=lambda s: asked.append(s.key) or False)))
        assert asked == ["meteo:weather"]
        said_yes = run_tool_loop(qwen, _messages(), ts, _options(tool_choice="weather", policy=Policy(ask=lambda s: True)))
        assert said_yes.tool_calls[0].result.ok
        # built-ins never ask
        assert Policy(ask=lambda s: asked.append(s.key) or False).check(ts.get("calculator")) and len(asked) == 1
    finally:
        ts.close()


def test_unknown_tool_bad_json_and_denied_calls_become_error_results(weather_lib):
    ts = ToolSet.for_run([weather_lib])
    try:
        calls = HERMES.parse(
            '<tool_call>{"name": "teleport", "arguments": {}}</tool_call>'
            '<tool_call>{"name": "weather", "arguments": {"city": "Oslo"</tool_call>'
            '<tool_call>{"name": "weather", "arguments": {"city": "Rome", "days": 1}}</tool_call>'
            '<tool_call>{"name": "station", "arguments": {"city": "Oslo", "days": 1}}</tool_call>'
        )
        recs = execute_calls(calls, ts, Policy(allow=frozenset({"weather"}), ask=lambda spec: False))
        errors = [r.result.error for r in recs]
        assert "unknown tool 'teleport'; the tools are: calculator, weather, station" in errors[0]
        assert "could not be read" in errors[1]
        assert "invalid arguments for 'weather': city: 'Rome' is not one of" in errors[2]
        assert "did not allow tool 'station'" in errors[3]
        assert not any(r.result.ok for r in recs)
    finally:
        ts.close()


def test_inexpressible_schema_fails_before_generation(qwen, tmp_path, write_source):
    decl = _decl("regex", "weather.py", {"type": "object", "properties": {"q": {"type": "string", "pattern": "^[a-z]+$"}}})
    lib = LibraryView.from_folder(write_source(tmp_path, "odd", files=SCRIPTS, extra={"tools": [decl]}))
    ts = ToolSet.for_run([lib])
    try:
        with pytest.raises(SchemaNotExpressible, match="tool 'regex'.*'pattern' is not supported"):
            run_tool_loop(qwen, _messages(), ts, _options(tool_choice="auto"))
    finally:
        ts.close()


def test_lookup_tool_reads_the_knowledge(qwen, tmp_path, write_source):
    from llmos_cli.knowledge.indexer import build_artifacts
    from llmos_cli.pkg.manifest import load_manifest

    folder = write_source(
        tmp_path,
        "atlas",
        files={"docs/oslo.md": "# Oslo\n\nOslo is the capital of Norway, on the Oslofjord."},
        extra={"knowledge": {"documents": ["docs/*.md"]}},
    )
    for rel, data in build_artifacts(load_manifest(folder), folder).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    lib = LibraryView.from_folder(folder)
    ts = ToolSet.for_run([lib])
    assert ts.names() == ["calculator", "lookup"]
    direct = ts.call(ts.get("lookup"), {"query": "capital of Norway"})
    assert direct.ok and direct.value["results"][0]["citation"] == "[atlas:docs/oslo.md#1]"
    # the query string is bounded (maxLength 100), so even random weights finish the call
    res = run_tool_loop(qwen, _messages(), ts, _options(tool_choice="lookup", params=SamplingParams(max_tokens=200, temperature=0.8, seed=3)))
    rec = res.tool_calls[0]
    assert rec.call.name == "lookup" and rec.result.ok and rec.source == "builtin"
    assert "results" in rec.result.value
