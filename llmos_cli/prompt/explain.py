"""Text of ``llmos run --explain``: every part of the assembled prompt with its token count."""

from __future__ import annotations

import json
from typing import Any

from llmos_cli.prompt.assemble import AssembledPrompt


def _rule(title: str) -> str:
    return f"--- {title} " + "-" * max(3, 60 - len(title))


def explain_text(ap: AssembledPrompt, *, show_prompt: bool = False) -> str:
    """Human-readable breakdown (plain text; the CLI prints it on stdout)."""
    tok = {p.name: p.tokens for p in ap.parts}
    out: list[str] = []
    out.append(_rule(f"system ({tok['system']} tokens)"))
    out.append(ap.system_base or "(none)")
    n_ref = len(ap.refinements)
    short = sum(r.shortened for r in ap.refinements)
    extra = f", {short} shortened" if short else ""
    out.append(_rule(f"refinements: {n_ref} term{'s' if n_ref != 1 else ''}{extra} ({tok['refinements']} tokens)"))
    out.append("\n".join(f"{r.line()}   [{r.library}; matched {r.matched!r}]" for r in ap.refinements) or "(none)")
    out.append(_rule(f"knowledge: {len(ap.knowledge)} chunk{'s' if len(ap.knowledge) != 1 else ''} ({tok['knowledge']} tokens)"))
    if ap.knowledge:
        for h in ap.knowledge:
            out.append(f"{h.rank}. {h.citation} score {h.score:.3f}" + (f"  ({h.section})" if h.section else ""))
            out.append("   " + h.text.replace("\n", "\n   "))
    else:
        out.append("(none)")
    out.append(_rule(f"tools: {len(ap.tools)} ({tok['tools']} tokens)"))
    if ap.tools:
        for t in ap.tools:
            fn = t["function"]
            out.append(f"- {fn['name']}: {fn.get('description', '')}")
            out.append(f"  parameters: {json.dumps(fn.get('parameters', {}), ensure_ascii=False)}")
    else:
        out.append("(none)")
    out.append(_rule(f"user ({tok['user']} tokens)"))
    out.append(ap.user)
    b = ap.budget
    out.append(_rule("budget"))
    out.append(
        f"context {b.context} = prompt {b.prompt_tokens} (chat template {tok['template']}) "
        f"+ answer reserve {b.reserve} + free {b.free}"
    )
    dropped = []
    if b.knowledge_dropped:
        dropped.append(f"{b.knowledge_dropped} of {b.knowledge_candidates} knowledge chunks left out")
    if b.refinements_shortened:
        dropped.append(f"{b.refinements_shortened} definitions shortened")
    if b.refinements_dropped:
        dropped.append(f"{b.refinements_dropped} definitions left out")
    if dropped:
        out.append("to fit: " + "; ".join(dropped))
    if show_prompt:
        out.append(_rule("rendered prompt"))
        out.append(ap.prompt)
    return "\n".join(out) + "\n"


def explain_json(ap: AssembledPrompt) -> dict[str, Any]:
    d = ap.to_json()
    d["system"] = ap.system_base
    d["user"] = ap.user
    d["prompt"] = ap.prompt
    return d
