"""LlamaCppEngine on a real tiny model: streaming, stop strings, budgets, seeds, grammars, adapters' lifetime."""

from __future__ import annotations

import pytest

from llmos_cli.errors import AbiError, ContextOverflow, InvalidPackageError, RuntimeFailure, UsageError
from llmos_cli.runtime.engine import EngineOptions, LlamaCppEngine, SamplingParams, _StopScanner, plan_device
from tests.helpers.fixtures_models import write_lora

pytest_plugins = ["tests.helpers.fixtures_models"]  # its fixtures: tiny_model, tiny_lora, tiny_lora2, llama_sdist, real_vocab_model

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]


@pytest.fixture(scope="module")
def engine(tiny_model):
    e = LlamaCppEngine(tiny_model.path, EngineOptions(n_ctx=96))
    yield e
    e.close()


def test_chat_template_and_bos(engine):
    text = engine.apply_chat_template(MESSAGES)
    assert text == "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n"
    toks = engine.prompt_tokens(MESSAGES)
    assert toks[0] == engine.bos_id and toks[1] != engine.bos_id
    assert toks.count(3) == 3  # <|im_start|> is one special token, three times


def test_streaming_chunks_make_the_text(engine):
    chunks: list[str] = []
    g = engine.generate(engine.prompt_tokens(MESSAGES), SamplingParams(max_tokens=24, temperature=0.0), on_text=chunks.append)
    assert "".join(chunks) == g.text
    assert len(chunks) > 1
    assert g.completion_tokens == len(g.tokens) <= 24
    assert g.finish_reason in ("stop", "length")
    assert g.prompt_tokens == len(engine.prompt_tokens(MESSAGES))


def test_max_tokens_and_reproducible_seeds(engine):
    prompt = engine.prompt_tokens(MESSAGES)
    a = engine.generate(prompt, SamplingParams(max_tokens=7, temperature=0.0, seed=3))
    b = engine.generate(prompt, SamplingParams(max_tokens=7, temperature=0.0, seed=3))
    assert a.tokens == b.tokens and a.text == b.text
    if a.finish_reason == "length":
        assert a.completion_tokens == 7
    hot = [engine.generate(prompt, SamplingParams(max_tokens=16, temperature=1.5, top_p=1.0, seed=s)).tokens for s in (1, 1, 2)]
    assert hot[0] == hot[1]  # same seed, same sample
    assert hot[0] != hot[2]  # another seed, another sample


def test_stop_string_cuts_and_is_not_streamed(engine):
    prompt = engine.prompt_tokens(MESSAGES)
    full = engine.generate(prompt, SamplingParams(max_tokens=30, temperature=0.0))
    assert len(full.text) > 6
    stop = full.text[3:6]
    chunks: list[str] = []
    cut = engine.generate(prompt, SamplingParams(max_tokens=30, temperature=0.0, stop=[stop]), on_text=chunks.append)
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]
    assert "".join(chunks) == cut.text


def test_stop_scanner_holds_back_prefixes():
    s = _StopScanner(["</answer>", "STOP"])
    assert s.safe_end("hello </ans") == len("hello ")
    assert s.safe_end("hello ST") == len("hello ")
    assert s.safe_end("hello") == 5
    assert s.find("abc STOP def", 0) == 4
    assert _StopScanner([]).safe_end("x</") == 3


def test_context_overflow_says_by_how_much(engine):
    long = [{"role": "user", "content": "the model " * engine.n_ctx}]
    toks = engine.prompt_tokens(long)
    assert len(toks) > engine.n_ctx
    with pytest.raises(ContextOverflow) as ei:
        engine.generate(toks, SamplingParams(max_tokens=4))
    over = len(toks) - engine.n_ctx + 1
    assert f"{over} token" in ei.value.message and str(engine.n_ctx) in ei.value.message
    assert ei.value.details["over_by"] == over


def test_generation_stops_when_the_context_is_full(engine):
    prompt = engine.prompt_tokens(MESSAGES)
    g = engine.generate(prompt, SamplingParams(max_tokens=0, temperature=0.0))
    assert g.prompt_tokens + g.completion_tokens <= engine.n_ctx


def test_grammar_constrains_and_bad_grammar_is_an_error(engine):
    prompt = engine.prompt_tokens(MESSAGES)
    g = engine.generate(prompt, SamplingParams(max_tokens=12, temperature=0.0), grammar='root ::= ("yes" | "no") " ok"')
    assert g.text in ("yes ok", "no ok")
    with pytest.raises(RuntimeFailure) as ei:
        engine.generate(prompt, SamplingParams(max_tokens=4), grammar="root ::= (unclosed")
    assert "grammar does not parse" in ei.value.message
    # the engine is still usable after the refused grammar
    assert engine.generate(prompt, SamplingParams(max_tokens=3, temperature=0.0)).completion_tokens >= 1


def test_adapter_lifetime(tiny_model, tiny_lora, tmp_path):
    e = LlamaCppEngine(tiny_model.path, EngineOptions(n_ctx=64))
    try:
        e.set_adapters([(tiny_lora.path, 1.0), (tiny_lora.path, 0.5)])  # same file twice: scales add
        assert e.active_adapters == [(tiny_lora.path.resolve(), 1.5)]
        with pytest.raises(RuntimeFailure):
            e.unload_adapter(tiny_lora.path)  # still in use
        e.set_adapters([])
        e.unload_adapter(tiny_lora.path)
        assert e.loaded_adapters == []
        # a misfit never reaches llama.cpp, and the active set stays as it was
        e.set_adapters([(tiny_lora.path, 1.0)])
        bad = write_lora(tmp_path / "bad.gguf", tiny_model, extra_tensor="blk.5.attn_q.weight")
        with pytest.raises(AbiError):
            e.set_adapters([(bad.path, 1.0)])
        assert e.active_adapters == [(tiny_lora.path.resolve(), 1.0)]
    finally:
        e.close()  # takes the adapter out of the context and frees it before the model
    with pytest.raises(RuntimeFailure):
        _ = e.n_ctx


def test_model_file_checks(tmp_path, tiny_model, tiny_lora):
    with pytest.raises(InvalidPackageError, match="LoRA adapter, not a model"):
        LlamaCppEngine(tiny_lora.path)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_model.path.read_bytes()[:-64])
    with pytest.raises(InvalidPackageError, match="truncated"):
        LlamaCppEngine(cut)


def test_device_planning():
    assert plan_device("cpu", None, supports_gpu=True).n_gpu_layers == 0
    assert plan_device("auto", None, supports_gpu=False).device == "cpu"
    assert plan_device("auto", None, supports_gpu=True).n_gpu_layers == -1
    assert plan_device("gpu", 10, supports_gpu=True).n_gpu_layers == 10
    with pytest.raises(RuntimeFailure, match="no GPU offload"):
        plan_device("gpu", None, supports_gpu=False)
    with pytest.raises(UsageError):
        plan_device("cpu", 4, supports_gpu=True)
    with pytest.raises(UsageError):
        plan_device("tpu", None, supports_gpu=True)
