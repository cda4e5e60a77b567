"""Chat templates and real tokenizers from llama-cpp-python's sdist (fetched with pip, cached).

Tiny models here carry a REAL vocabulary (every ``tokenizer.*`` key of a
``ggml-vocab-*.gguf``) and a REAL chat template, so the prompt llama.cpp sees
is exactly what a full-size model of that family would see.
"""

from __future__ import annotations

import pytest

from llmos_cli.errors import RuntimeFailure
from llmos_cli.runtime.chat import render_chat
from llmos_cli.runtime.engine import EngineOptions, LlamaCppEngine, SamplingParams
from tests.helpers.fixtures_models import write_real_vocab_model

pytest_plugins = ["tests.helpers.fixtures_models"]  # its fixtures: tiny_model, tiny_lora, tiny_lora2, llama_sdist, real_vocab_model

CONVO = [{"role": "system", "content": "SYSTEXT"}, {"role": "user", "content": "Hi there USERTEXT"}]


@pytest.mark.slow
def test_every_shipped_template_renders_or_fails_cleanly(llama_sdist):
    names = llama_sdist.templates()
    assert len(names) >= 50
    rendered = 0
    for name in names:
        try:
            out = render_chat(llama_sdist.template(name).read_text(), CONVO, bos_token="<s>", eos_token="</s>")
        except RuntimeFailure:
            continue  # a clean llmos error (e.g. a template that needs tool definitions)
        assert "USERTEXT" in out.text, name
        rendered += 1
    assert rendered >= len(names) - 3


def test_template_without_system_role_gets_it_folded(llama_sdist):
    out = render_chat(llama_sdist.template("google-gemma-2-2b-it").read_text(), CONVO, bos_token="<bos>")
    assert out.folded_system
    assert "SYSTEXT" in out.text and "USERTEXT" in out.text
    assert out.text.index("SYSTEXT") < out.text.index("USERTEXT")


def test_fallback_without_template():
    out = render_chat(None, CONVO)
    assert out.used_fallback and out.text == "SYSTEXT\n\nHi there USERTEXT\n"


def test_broken_template_is_a_runtime_failure():
    with pytest.raises(RuntimeFailure, match="does not compile"):
        render_chat("{% for m in messages %}", CONVO)
    with pytest.raises(RuntimeFailure, match="refused"):
        render_chat("{{ raise_exception('no way') }}", [{"role": "user", "content": "x"}])


def test_qwen2_vocab_with_qwen25_template(real_vocab_model):
    assert real_vocab_model.hp.n_vocab > 150_000
    assert real_vocab_model.path.stat().st_size < 12_000_000
    with LlamaCppEngine(real_vocab_model.path, EngineOptions(n_ctx=256)) as e:
        assert e.n_vocab == real_vocab_model.hp.n_vocab
        text = e.apply_chat_template(CONVO)
        assert text.startswith("<|im_start|>system\nSYSTEXT<|im_end|>\n<|im_start|>user\n")
        assert text.endswith("<|im_start|>assistant\n")
        toks = e.prompt_tokens(CONVO)
        tokens = real_vocab_model.tokenizer["tokenizer.ggml.tokens"]
        im_start = tokens.index("<|im_start|>")
        assert toks.count(im_start) == 3  # the special token is parsed as one token
        assert e.detokenize(e.tokenize("Hello, wörld!", add_bos=False, special=False)) == "Hello, wörld!"
        g = e.generate(toks, SamplingParams(max_tokens=8, temperature=0.0))
        assert g.completion_tokens >= 1


def test_llama3_template_bos_is_not_doubled(llama_sdist, tmp_path):
    m = write_real_vocab_model(tmp_path / "l3.gguf", llama_sdist, "llama-bpe", "meta-llama-Llama-3.1-8B-Instruct")
    with LlamaCppEngine(m.path, EngineOptions(n_ctx=256)) as e:
        text = e.apply_chat_template(CONVO)
        assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")
        toks = e.prompt_tokens(CONVO)
        bos = m.tokenizer["tokenizer.ggml.tokens"].index("<|begin_of_text|>")
        assert toks[0] == bos and toks.count(bos) == 1


def test_spm_vocab_model_runs(llama_sdist, tmp_path):
    m = write_real_vocab_model(tmp_path / "spm.gguf", llama_sdist, "llama-spm", "mistralai-Mistral-Nemo-Instruct-2407")
    with LlamaCppEngine(m.path, EngineOptions(n_ctx=256)) as e:
        toks = e.prompt_tokens([{"role": "user", "content": "Hello"}])
        assert toks[0] == e.bos_id and toks.count(e.bos_id) == 1
        assert e.generate(toks, SamplingParams(max_tokens=4, temperature=0.0)).completion_tokens >= 1
