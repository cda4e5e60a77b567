"""The maths of stacked LoRA adapters, proven on tiny generated models with the real llama.cpp.

For a base model and adapters at scales s_i, llama.cpp's logits must equal

* the logits llama.cpp computes for a model whose weights were merged in
  numpy, ``W + sum_i s_i * (alpha_i / r_i) * B_i @ A_i``, and
* a float64 numpy forward pass over those merged GGUF tensors,

and taking the adapters off must give the base logits back bit for bit.
The KV cache is f32 here so the comparison is tight (default f16 adds ~1e-3).
"""

from __future__ import annotations

import numpy as np
import pytest

from llmos_cli.runtime.engine import EngineOptions, LlamaCppEngine, SamplingParams
from tests.helpers.fixtures_models import merged_weights, reference_logits, write_lora, write_weights

pytest_plugins = ["tests.helpers.fixtures_models"]  # its fixtures: tiny_model, tiny_lora, tiny_lora2, llama_sdist, real_vocab_model

OPTS = EngineOptions(n_ctx=128, kv_type="f32", logits_all=True)
TEXT = "hello world, the model answers the question"


@pytest.fixture(scope="module")
def engine(tiny_model):
    e = LlamaCppEngine(tiny_model.path, OPTS)
    yield e
    e.close()


@pytest.fixture(scope="module")
def tokens(engine):
    toks = engine.tokenize(TEXT)
    assert len(toks) > 8
    return toks


def _merged_logits(tmp_path, base, adapters, tokens):
    merged = write_weights(tmp_path / "merged.gguf", base, merged_weights(base, adapters))
    with LlamaCppEngine(merged.path, OPTS) as e:
        return e.logits(tokens), merged


def test_base_matches_numpy_reference(engine, tiny_model, tokens):
    got = engine.logits(tokens)
    ref = reference_logits(tiny_model.weights, tiny_model.hp, tokens)
    assert got.shape == ref.shape == (len(tokens), tiny_model.hp.n_vocab)
    np.testing.assert_allclose(got, ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("scale", [1.0, 0.35, -1.5])
def test_one_adapter_equals_merged_weights(tmp_path, engine, tiny_model, tiny_lora, tokens, scale):
    base = engine.logits(tokens)
    engine.set_adapters([(tiny_lora.path, scale)])
    try:
        got = engine.logits(tokens)
    finally:
        engine.set_adapters([])
    merged_logits, merged = _merged_logits(tmp_path, tiny_model, [(tiny_lora, scale)], tokens)
    ref = reference_logits(merged.weights, tiny_model.hp, tokens)
    # the adapter changes the output a lot, and exactly as the merged model does
    assert np.abs(got - base).max() > 0.5
    np.testing.assert_allclose(got, merged_logits, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(got, ref, atol=2e-4, rtol=1e-4)


def test_alpha_over_rank_is_applied(tmp_path, engine, tiny_model, tokens):
    """Same A, B with alpha=8, r=4 at scale 1 == alpha=4 at scale 2 (factor s*alpha/r)."""
    la = write_lora(tmp_path / "a8.gguf", tiny_model, alpha=8.0, seed=5)
    lb = write_lora(tmp_path / "a4.gguf", tiny_model, alpha=4.0, seed=5)
    engine.set_adapters([(la.path, 1.0)])
    ya = engine.logits(tokens)
    engine.set_adapters([(lb.path, 2.0)])
    yb = engine.logits(tokens)
    engine.set_adapters([])
    np.testing.assert_allclose(ya, yb, atol=1e-5, rtol=1e-5)


def test_two_adapters_add_up(tmp_path, engine, tiny_model, tiny_lora, tiny_lora2, tokens):
    engine.set_adapters([(tiny_lora.path, 0.7), (tiny_lora2.path, -1.3)])
    got = engine.logits(tokens)
    engine.set_adapters([])
    merged_logits, merged = _merged_logits(tmp_path, tiny_model, [(tiny_lora, 0.7), (tiny_lora2, -1.3)], tokens)
    np.testing.assert_allclose(got, merged_logits, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(got, reference_logits(merged.weights, tiny_model.hp, tokens), atol=2e-4, rtol=1e-4)
    # and differs from either adapter alone
    engine.set_adapters([(tiny_lora.path, 0.7)])
    only_a = engine.logits(tokens)
    engine.set_adapters([])
    assert np.abs(got - only_a).max() > 0.1


def test_detach_gives_base_logits_bit_identical(engine, tiny_lora, tiny_lora2, tokens):
    base = engine.logits(tokens)
    engine.set_adapters([(tiny_lora.path, 1.0), (tiny_lora2.path, 0.5)])
    assert not np.array_equal(engine.logits(tokens), base)
    engine.set_adapters([])
    assert np.array_equal(engine.logits(tokens), base)
    # scale 0 is the same as leaving the adapter out
    engine.set_adapters([(tiny_lora.path, 0.0)])
    assert engine.active_adapters == []
    assert np.array_equal(engine.logits(tokens), base)


def test_switching_sets_needs_no_reload_and_drops_the_stale_prefix(tiny_model, tiny_lora):
    """Generation after an adapter change equals a fresh engine's: the cached prefix is not reused."""
    params = SamplingParams(max_tokens=12, temperature=0.0)
    messages = [{"role": "user", "content": "hello world"}]
    with LlamaCppEngine(tiny_model.path, EngineOptions(n_ctx=128)) as e:
        llm_before = e.llm
        prompt = e.prompt_tokens(messages)
        base = e.generate(prompt, params)
        e.set_adapters([(tiny_lora.path, 1.0)])
        adapted = e.generate(prompt, params)
        e.set_adapters([])
        back = e.generate(prompt, params)
        assert e.llm is llm_before  # same model and context throughout
    with LlamaCppEngine(tiny_model.path, EngineOptions(n_ctx=128)) as fresh:
        fresh.set_adapters([(tiny_lora.path, 1.0)])
        expected = fresh.generate(prompt, params)
    assert adapted.tokens == expected.tokens
    assert adapted.tokens != base.tokens
    assert back.tokens == base.tokens
