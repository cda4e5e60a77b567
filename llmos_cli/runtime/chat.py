"""Render a model's own chat template (``tokenizer.chat_template`` in its GGUF).

Templates are Hugging Face-style Jinja: they see ``messages`` (a list of
``{"role", "content"}`` dicts, plus ``tool_calls``/``name`` where a tool loop
adds them), ``add_generation_prompt``, ``bos_token``, ``eos_token``, ``tools``
and the helpers ``raise_exception(msg)`` and ``strftime_now(fmt)``.  They run in
jinja2's immutable sandbox with ``trim_blocks``/``lstrip_blocks``, as
transformers does, so the same template renders the same prompt here.

A template that refuses a system turn (Gemma's "System role not supported")
gets the system text folded into the first user turn instead.  A model
without a template gets a plain fallback (system text, a blank line,
then the user text), and ``render_chat`` says so through ``used_fallback``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from llmos_cli.errors import RuntimeFailure


class _TemplateRaised(Exception):
    pass


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _GenerationTag(jinja2.ext.Extension):
        """transformers' ``{% generation %}...{% endgeneration %}`` marks: render the body."""

        tags = {"generation"}  # noqa: RUF012  (jinja2's Extension declares it so)

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body, lineno=lineno)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols, _GenerationTag],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)


@dataclass
class ChatPrompt:
    text: str
    used_fallback: bool
    folded_system: bool = False  # the template refused a system turn; it was put into the first user turn


def _fold_system(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """System text moved into the first user turn (for templates without a system role)."""
    system = [m for m in messages if m.get("role") == "system"]
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    if not system or not rest or rest[0].get("role") != "user":
        return None
    text = "\n\n".join(str(m.get("content") or "") for m in system)
    rest[0]["content"] = f"{text}\n\n{rest[0].get('content') or ''}"
    return rest


def fallback_prompt(messages: Sequence[dict[str, Any]]) -> str:
    parts = [str(m.get("content") or "") for m in messages if m.get("content")]
    return "\n\n".join(parts) + "\n"


def render_chat(
    template: str | None,
    messages: Sequence[dict[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> ChatPrompt:
    """The prompt text for ``messages`` under ``template`` (``RuntimeFailure`` if it fails)."""
    if not template:
        return ChatPrompt(fallback_prompt(messages), True)
    try:
        compiled = _compile(template)
    except Exception as exc:  # jinja2.TemplateSyntaxError and friends
        raise RuntimeFailure(f"the model's chat template does not compile: {exc}", "the GGUF's tokenizer.chat_template is broken") from None
    ctx: dict[str, Any] = {
        "messages": [dict(m) for m in messages],
        "add_generation_prompt": add_generation_prompt,
        "bos_token": bos_token,
        "eos_token": eos_token,
    }
    if tools:
        ctx["tools"] = tools
    if extra:
        ctx.update(extra)
    try:
        return ChatPrompt(compiled.render(**ctx), False)
    except _TemplateRaised as exc:
        merged = _fold_system(messages)
        if merged is not None:  # e.g. Gemma: "System role not supported"
            try:
                ctx["messages"] = merged
                return ChatPrompt(compiled.render(**ctx), False, folded_system=True)
            except Exception:
                pass
        raise RuntimeFailure(f"the model's chat template refused the conversation: {exc}") from None
    except Exception as exc:
        raise RuntimeFailure(f"the model's chat template failed: {type(exc).__name__}: {exc}") from None
