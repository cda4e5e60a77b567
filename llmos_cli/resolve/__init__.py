"""apt-style dependency resolution for llmos (a pure library: no state DB, no CLI).

``resolve(universe, installed, request) -> Plan`` is the entry point; see
``solver.py`` for the encoding and ``docs/resolver.md`` for the semantics.
"""

from __future__ import annotations

from .graph import autoremovable, reverse_dependents
from .model import Action, Candidate, InstalledInfo, Op, Plan, Request
from .solver import resolve
from .universe import CandidateSource, ChainSource, MemorySource

__all__ = [
    "Action",
    "Candidate",
    "CandidateSource",
    "ChainSource",
    "InstalledInfo",
    "MemorySource",
    "Op",
    "Plan",
    "Request",
    "autoremovable",
    "resolve",
    "reverse_dependents",
]
