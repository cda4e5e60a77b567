"""Prompt assembly: system text, glossary refinements, retrieved knowledge,
tools and the user's text, fitted into the model's context.

* ``assemble``  -- ``assemble(request, libraries, engine, tools) -> AssembledPrompt``;
  ``engine`` is the runtime's ``Engine`` (``llmos_cli.runtime.engine``)
* ``explain``   -- the human text of ``llmos run --explain``

The flow is described in docs/architecture.md ("How a prompt flows").
"""
