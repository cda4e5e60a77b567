"""Greedy question answering through llama.cpp, as ``llmos run`` does it (demo checks and bench).

``Answerer`` loads a base GGUF once with the runtime's ``LlamaCppEngine`` and
answers chat messages under any adapter set (switching adapters without a
reload).  ``with_knowledge`` dresses a question with retrieved chunks and
glossary definitions through the runtime's own ``prompt.assemble``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def normalize(text: str) -> str:
    from llmos_cli.train.lora import normalize_answer

    return normalize_answer(text)


def exact(pred: str, gold: str) -> bool:
    return normalize(pred) == normalize(gold)


class Answerer:
    def __init__(self, base_gguf: str | Path, *, threads: int | None = None, n_ctx: int = 2048):
        from llmos_cli.runtime.engine import EngineOptions, LlamaCppEngine

        self.engine = LlamaCppEngine(base_gguf, EngineOptions(n_ctx=n_ctx, n_threads=threads))
        self._adapters: list[tuple[str, float]] = []

    def set_adapters(self, adapters: Sequence[tuple[str | Path, float]]) -> None:
        key = [(str(p), float(s)) for p, s in adapters if s]
        if key != self._adapters:
            self.engine.set_adapters(key)
            self._adapters = key

    def answer(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None, max_tokens: int = 32) -> str:
        from llmos_cli.runtime.engine import SamplingParams

        tokens = self.engine.prompt_tokens(messages, tools=tools)
        gen = self.engine.generate(tokens, SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0))
        return gen.text.strip()

    def ask(self, question: str, *, system: str | None = None, max_tokens: int = 32) -> str:
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
        return self.answer(msgs, max_tokens=max_tokens)

    def with_knowledge(self, question: str, libraries: Sequence[Any], *, knowledge: str | int = "auto", max_tokens: int = 32) -> str:
        from llmos_cli.prompt.assemble import PromptRequest, assemble

        ap = assemble(PromptRequest(user=question, knowledge=knowledge, max_tokens=max_tokens), libraries, self.engine)
        return self.answer(ap.messages, max_tokens=max_tokens)

    def close(self) -> None:
        self.engine.close()
