"""Per-run options of instruction processing (``llmos run`` flags)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmos_cli.errors import UsageError
from llmos_cli.prompt.assemble import parse_knowledge_option
from llmos_cli.tools.loop import DEFAULT_CHAIN_LIMIT

#: what ``--long`` accepts (``app.longinput``)
LONG_MODES = ("index", "map-reduce", "refuse")


@dataclass
class PromptOptions:
    #: --knowledge off|auto|N: retrieved document chunks (off: none; glossary definitions stay)
    knowledge: str | int = "auto"
    #: --no-refine: no glossary definitions of the terms in the prompt (retrieval stays)
    refine: bool = True
    #: --grounded: answer only from retrieved chunks or glossary entries, cite them, else abstain
    grounded: bool = False
    #: --long index|map-reduce|refuse: what to do with piped input (or --file) that does not fit the context
    long: str = "index"
    #: how citations name the piped input (``[stdin#12]``; the file's name for --file)
    input_label: str = "stdin"
    #: --explain: assemble, report, do not generate
    explain: bool = False
    #: --tool-choice auto|none|NAME; None: auto when a library declares tools or a tool is allowed, else none
    tool_choice: str | None = None
    #: --allow-tool NAME (repeatable) and --allow-tools
    allow_tool: list[str] = field(default_factory=list)
    allow_tools: bool = False
    #: False with --no-builtin-tools: the built-in calculator and lookup are not offered
    builtin_tools: bool = True
    #: --chain-limit N
    chain_limit: int = DEFAULT_CHAIN_LIMIT
    #: --tools-debug: calls and results on stderr (through on_event)
    tools_debug: bool = False
    on_event: Callable[[str, dict[str, Any]], None] | None = None
    #: asks "allow tool X?" on a terminal; None when stdin is not a terminal
    ask: Callable[[Any], bool] | None = None


def prompt_options(
    *,
    knowledge: str,
    explain: bool = False,
    allow_tool: list[str] | None = None,
    allow_tools: bool = False,
    tool_choice: str | None = None,
    chain_limit: int = DEFAULT_CHAIN_LIMIT,
    tools_debug: bool = False,
    no_builtin_tools: bool = False,
    no_refine: bool = False,
    grounded: bool = False,
    long: str | None = None,
    input_label: str = "stdin",
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ask: Callable[[Any], bool] | None = None,
) -> PromptOptions:
    """``PromptOptions`` from the flags of ``llmos run``, checked (a bad value is a ``UsageError``)."""
    if chain_limit < 0:
        raise UsageError(f"--chain-limit must be 0 or more, not {chain_limit}")
    long_mode = (long or "index").strip().lower()
    if long_mode not in LONG_MODES:
        raise UsageError(f"--long takes index, map-reduce or refuse, not {long!r}", "e.g. --long map-reduce")
    return PromptOptions(
        knowledge=parse_knowledge_option(knowledge),
        refine=not no_refine,
        grounded=grounded,
        long=long_mode,
        input_label=input_label,
        explain=explain,
        tool_choice=tool_choice,
        allow_tool=list(allow_tool or []),
        allow_tools=allow_tools,
        builtin_tools=not no_builtin_tools,
        chain_limit=chain_limit,
        tools_debug=tools_debug,
        on_event=on_event if tools_debug else None,
        ask=ask,
    )
