"""Per-run options of instruction processing (``llmos run`` flags)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmos_cli.tools.loop import DEFAULT_CHAIN_LIMIT


@dataclass
class PromptOptions:
    #: --knowledge off|auto|N
    knowledge: str | int = "auto"
    #: --no-refine: skip glossary refinements
    refine: bool = True
    #: --explain: assemble, report, do not generate
    explain: bool = False
    #: --tool-choice auto|none|NAME; None: auto when a library declares tools or a tool is allowed, else none
    tool_choice: str | None = None
    #: --allow-tool NAME (repeatable) and --allow-tools
    allow_tool: list[str] = field(default_factory=list)
    allow_tools: bool = False
    #: --chain-limit N
    chain_limit: int = DEFAULT_CHAIN_LIMIT
    #: --tools-debug: calls and results on stderr (through on_event)
    tools_debug: bool = False
    on_event: Callable[[str, dict[str, Any]], None] | None = None
    #: asks "allow tool X?" on a terminal; None when stdin is not a terminal
    ask: Callable[[Any], bool] | None = None
