"""Make small Llama base models from scratch: a SentencePiece tokenizer and a
transformers checkpoint folder that ``convert_hf_to_gguf`` turns into a GGUF.

Used by the demo builder (``demo/build_demo.py``) and by tests that need a
tiny model with a real tokenizer.  The tokenizer is SentencePiece BPE with byte
fallback (byte pieces ``<0x00>``..``<0xFF>``), identity normalisation and no
whitespace folding, so llama.cpp's "llama" (SPM) tokenizer reproduces it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def train_tokenizer(
    texts: Iterable[str],
    out_file: str | Path,
    *,
    vocab_size: int,
    control_symbols: list[str] = (),  # type: ignore[assignment]
    user_symbols: list[str] = (),  # type: ignore[assignment]
) -> Path:
    """Train a SentencePiece BPE model (byte fallback) on ``texts``; one sentence per line.

    Deterministic for the same texts (single thread, no sampling or shuffling).
    Newlines are never inside a piece: SentencePiece trains on lines.
    """
    import sentencepiece as spm

    lines: list[str] = []
    for t in texts:
        lines.extend(x for x in t.split("\n") if x.strip())
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=True,
        allow_whitespace_only_pieces=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        control_symbols=list(control_symbols),
        user_defined_symbols=list(user_symbols),
        hard_vocab_limit=False,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        minloglevel=2,
    )
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    return out


def llama_config(**kw: Any) -> Any:
    """A transformers LlamaConfig with small-model defaults."""
    from transformers import LlamaConfig

    defaults: dict[str, Any] = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        attention_bias=False,
        mlp_bias=False,
    )
    defaults.update(kw)
    return LlamaConfig(**defaults)


def new_llama(config: Any, seed: int = 0) -> Any:
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    return model


def save_hf_checkpoint(
    model: Any,
    out_dir: str | Path,
    *,
    tokenizer_model: str | Path,
    chat_template: str | None,
    eos_token: str = "</s>",
    bos_token: str = "<s>",
    add_bos_token: bool = False,
    added_tokens: dict[int, tuple[str, bool]] | None = None,
) -> Path:
    """Save ``model`` as a Hugging Face checkpoint folder with its SentencePiece tokenizer."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    (out / "tokenizer.model").write_bytes(Path(tokenizer_model).read_bytes())
    tcfg: dict[str, Any] = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": bos_token,
        "eos_token": eos_token,
        "unk_token": "<unk>",
        "add_bos_token": add_bos_token,
        "add_eos_token": False,
        "legacy": False,
        "model_max_length": int(model.config.max_position_embeddings),
    }
    if added_tokens:
        tcfg["added_tokens_decoder"] = {str(i): {"content": c, "special": s} for i, (c, s) in sorted(added_tokens.items())}
    if chat_template is not None:
        tcfg["chat_template"] = chat_template
        (out / "chat_template.jinja").write_text(chat_template)
    (out / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2, sort_keys=True) + "\n")
    return out


#: ChatML with Hermes-style tool calls: tools are listed in the system turn (name,
#: argument names, first sentence of the description); the model answers
#: ``<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>``; results come back as
#: ``<tool_response>...</tool_response>`` in a user turn.  Whitespace is explicit,
#: so ``trim_blocks``/``lstrip_blocks`` do not change the output.
CHATML_TOOLS_TEMPLATE = (
    "{%- set sys = messages[0].content if messages and messages[0].role == 'system' else '' -%}"
    "{%- if tools -%}"
    "{{- '<|im_start|>system\\n' -}}"
    "{%- if sys -%}{{- sys + '\\n\\n' -}}{%- endif -%}"
    "{{- 'Tools:\\n' -}}"
    "{%- for tool in tools -%}{%- set f = tool.function if tool.function is defined else tool -%}"
    "{%- set props = (f.parameters.properties if f.parameters is defined and f.parameters.properties is defined else {}) -%}"
    "{{- '- ' + f.name + '(' + (props | list | join(', ')) + '): ' + ((f.description or '').split('. ')[0] | trim) + '\\n' -}}"
    "{%- endfor -%}"
    '{{- \'Call a tool as <tool_call>{"name": NAME, "arguments": {...}}</tool_call><|im_end|>\\n\' -}}'
    "{%- elif sys -%}"
    "{{- '<|im_start|>system\\n' + sys + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'system' -%}"
    "{%- elif m.role == 'tool' -%}"
    "{{- '<|im_start|>user\\n<tool_response>' + (m.content | string) + '</tool_response><|im_end|>\\n' -}}"
    "{%- elif m.role == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' + (m.content or '') -}}"
    "{%- for tc in (m.tool_calls or []) -%}{%- set f = tc.function if tc.function is defined else tc -%}"
    "{{- '<tool_call>\\n{\"name\": \"' + f.name + '\", \"arguments\": ' + (f.arguments if f.arguments is string else (f.arguments | tojson)) + '}\\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + m.role + '\\n' + (m.content | string) + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
CHAT_CONTROL_TOKENS = ["<|im_start|>", "<|im_end|>"]
CHAT_USER_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
