"""Tiny real models for the training tests (torch + transformers + peft + llama.cpp).

``make_base(dir)`` trains a SentencePiece tokenizer on a few sentences, makes a
random 2-layer Llama (grouped-query attention, weights scaled up so that
differences show in the logits), saves it as a Hugging Face checkpoint with the
demo's ChatML + tool-call template, and converts it to an f32 GGUF.  Seconds.

``write_library(dir, ...)`` writes a small library source folder with Q&A,
held-out questions, documents and a glossary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FACTS = [
    ("Zorblax", "Kelvane fever"),
    ("Mirodine", "Plath cough"),
    ("Trevasol", "Ost rash"),
    ("Quenidril", "Varn ache"),
    ("Belomast", "Drin fever"),
]


def require_train_extra() -> None:
    for mod in ("torch", "transformers", "peft", "sentencepiece", "safetensors", "llama_cpp"):
        pytest.importorskip(mod)


@dataclass
class TinyBase:
    hf_dir: Path
    gguf: Path
    model: Any  # transformers LlamaForCausalLM (f32, eval mode)
    config: Any


def make_base(root: Path, *, n_kv: int = 2, weight_scale: float = 3.0, seed: int = 1) -> TinyBase:
    import torch

    from llmos_cli.train import convert, scratch

    torch.set_num_threads(1)
    root.mkdir(parents=True, exist_ok=True)
    texts = [f"{d} treats {c}." for d, c in FACTS] * 5 + [f"What does {d} treat?" for d, _ in FACTS] * 5
    texts += ["the quick brown fox jumps over the lazy dog %d" % i for i in range(40)]
    scratch.train_tokenizer(
        texts,
        root / "tok.model",
        vocab_size=360,
        control_symbols=scratch.CHAT_CONTROL_TOKENS,
        user_symbols=scratch.CHAT_USER_TOKENS,
    )
    n_vocab = len(convert.read_spm_pieces(root / "tok.model"))
    cfg = scratch.llama_config(
        vocab_size=n_vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=n_kv,
        max_position_embeddings=256,
    )
    model = scratch.new_llama(cfg, seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(weight_scale)
    hf = scratch.save_hf_checkpoint(model, root / "hf", tokenizer_model=root / "tok.model", chat_template=scratch.CHATML_TOOLS_TEMPLATE, eos_token="<|im_end|>")
    gguf = convert.convert_hf_to_gguf(hf, root / "base.gguf", dtype="f32", name="tiny")
    return TinyBase(hf, gguf, model, cfg)


def write_library(
    root: Path,
    name: str = "tiny-lib",
    *,
    facts: list[tuple[str, str]] = FACTS,
    train: dict[str, Any] | None = None,
    depends: list[str] | None = None,
    provides: list[str] | None = None,
    adapter: bool = True,
) -> Path:
    import tomli_w

    d = root / name
    (d / "train").mkdir(parents=True, exist_ok=True)
    (d / "docs").mkdir(exist_ok=True)
    pkg: dict[str, Any] = {
        "name": name,
        "version": "1.0.0",
        "kind": "library",
        "summary": f"{name} for tests",
        "license": "MIT",
        "maintainer": "Test <t@example.org>",
        "base": "tiny>=1.0",
    }
    if depends:
        pkg["depends"] = depends
    if provides:
        pkg["provides"] = provides
    manifest: dict[str, Any] = {
        "schema": 1,
        "package": pkg,
        "knowledge": {"documents": ["docs/*.md"], "chunk_size": 30, "chunk_overlap": 0},
        "glossary": {"file": "glossary.toml"},
        "train": {
            "rank": 4,
            "alpha": 8,
            "steps": 30,
            "lr": 0.01,
            "batch_size": 8,
            "seed": 0,
            "max_len": 256,
            # the tiny test tokenizer has no pieces for "I don't know." (bytes only), so abstention examples
            # (on by default, tested in tests/test_grounding.py) would dominate these short runs' loss
            "abstain_fraction": 0.0,
            "data": ["train/qa.jsonl"],
            "eval": ["train/heldout.jsonl"],
            **(train or {}),
        },
    }
    if adapter:
        manifest["adapter"] = {"file": "adapter.gguf"}
    (d / "llmos.toml").write_text(tomli_w.dumps(manifest))
    doc = "# Drugs\n\n" + "".join(f"## {e}\n\n{e} treats {c}.\n\n" for e, c in facts)
    (d / "docs" / "drugs.md").write_text(doc)
    (d / "glossary.toml").write_text(tomli_w.dumps({"terms": {e: {"definition": f"A drug that treats {c}."} for e, c in facts}}))
    with open(d / "train" / "qa.jsonl", "w") as fh:
        for e, c in facts:
            fh.write(json.dumps({"questions": [f"What does {e} treat?", f"{e} treats which condition?"], "answer": c}) + "\n")
    with open(d / "train" / "heldout.jsonl", "w") as fh:
        for e, c in facts:
            fh.write(json.dumps({"questions": [f"Which illness is {e} for?"], "answer": c}) + "\n")
    return d


def random_adapter(base: TinyBase, out: Path, *, rank: int, targets: list[str], seed: int, alpha: float | None = None) -> Path:
    """A LoRA with random (non-zero) A and B, exported to GGUF."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from llmos_cli.train.convert import LlamaHParams
    from llmos_cli.train.export import peft_model_pairs, write_lora_gguf

    torch.manual_seed(seed)
    pm = get_peft_model(
        copy.deepcopy(base.model),
        LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, target_modules=targets, init_lora_weights=False),
    )
    hp = LlamaHParams.from_hf(base.config.to_dict())
    write_lora_gguf(peft_model_pairs(pm), hp, out)
    return out


def llama_logits(gguf: Path, tokens: list[int], adapters: list[tuple[Path, float]] = ()) -> Any:  # type: ignore[assignment]
    """Logits of every position from the runtime's llama.cpp engine (f32 KV cache)."""
    import numpy as np

    from llmos_cli.runtime.engine import EngineOptions, LlamaCppEngine

    with LlamaCppEngine(gguf, EngineOptions(n_ctx=128, kv_type="f32", logits_all=True, n_threads=1)) as eng:
        eng.set_adapters(list(adapters))
        return np.asarray(eng.logits(tokens), dtype=np.float64)


def rel_err(a: Any, b: Any) -> float:
    import numpy as np

    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())
