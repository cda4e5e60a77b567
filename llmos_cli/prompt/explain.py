"""``llmos run --explain``: every part of the assembled prompt with its token count.

``explain_json(ap)`` is the data (it is what ``--json`` prints under
``extra.explain``); ``explain_text(data)`` renders it for people.
"""

from __future__ import annotations

import json
from typing import Any

from llmos_cli.prompt.assemble import AssembledPrompt


def explain_json(ap: AssembledPrompt) -> dict[str, Any]:
    d = ap.to_json()
    d["system"] = ap.system_base
    d["tools"] = ap.tools
    d["user"] = ap.user
    d["prompt"] = ap.prompt
    return d


def _rule(title: str) -> str:
    return f"--- {title} " + "-" * max(3, 60 - len(title))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def explain_text(data: dict[str, Any] | AssembledPrompt, *, show_prompt: bool = False) -> str:
    """Human-readable breakdown (plain text, printed on stdout)."""
    d = explain_json(data) if isinstance(data, AssembledPrompt) else data
    tok = {p["name"]: p["tokens"] for p in d["parts"]}
    out: list[str] = []
    out.append(_rule(f"system ({tok['system']} tokens)"))
    out.append(d["system"] or "(none)")
    refs = d["refinements"]
    short = sum(1 for r in refs if r.get("shortened"))
    extra = f", {short} shortened" if short else ""
    out.append(_rule(f"refinements: {_plural(len(refs), 'term')}{extra} ({tok['refinements']} tokens)"))
    out.append("\n".join(f"- {r['term']}: {r['definition']}   [{r['library']}; matched {r['matched']!r}]" for r in refs) or "(none)")
    hits = d["knowledge"]
    out.append(_rule(f"knowledge: {_plural(len(hits), 'chunk')} ({tok['knowledge']} tokens)"))
    for h in hits:
        out.append(f"{h['rank']}. {h['citation']} score {h['score']:.3f}" + (f"  ({h['section']})" if h["section"] else ""))
        out.append("   " + h["text"].replace("\n", "\n   "))
    if not hits:
        out.append("(none)")
    tools = d["tools"]
    out.append(_rule(f"tools: {len(tools)} ({tok['tools']} tokens)"))
    for t in tools:
        fn = t["function"]
        out.append(f"- {fn['name']}: {fn.get('description', '')}")
        out.append(f"  parameters: {json.dumps(fn.get('parameters', {}), ensure_ascii=False)}")
    if not tools:
        out.append("(none)")
    out.append(_rule(f"user ({tok['user']} tokens)"))
    out.append(d["user"])
    b = d["budget"]
    out.append(_rule("budget"))
    out.append(f"context {b['context']} = prompt {b['prompt_tokens']} (chat template {tok['template']}) + answer reserve {b['reserve']} + free {b['free']}")
    dropped = []
    if b["knowledge_dropped"]:
        dropped.append(f"{b['knowledge_dropped']} of {b['knowledge_candidates']} knowledge chunks left out")
    if b["refinements_shortened"]:
        dropped.append(f"{b['refinements_shortened']} definitions shortened")
    if b["refinements_dropped"]:
        dropped.append(f"{b['refinements_dropped']} definitions left out")
    if dropped:
        out.append("to fit: " + "; ".join(dropped))
    if show_prompt:
        out.append(_rule("rendered prompt"))
        out.append(d["prompt"])
    return "\n".join(out) + "\n"
