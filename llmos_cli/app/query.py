"""``llmos query``: search the installed libraries' documents without running a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmos_cli.errors import UsageError
from llmos_cli.knowledge.libraries import installed_libraries
from llmos_cli.knowledge.retrieve import search

#: ``--limit`` bounds
MIN_LIMIT, MAX_LIMIT = 1, 100


@dataclass
class QueryResult:
    query: str
    libraries: list[str]
    results: list[Any] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "libraries": self.libraries, "results": [h.to_json() for h in self.results]}


def run_query(text: str, libs: list[str] | None, limit: int) -> QueryResult:
    """BM25 search over the indexes of ``libs`` (default: the attached libraries), best ``limit`` chunks."""
    if not text.strip():
        raise UsageError("empty query", 'give the words to search for, e.g. llmos query "heart attack symptoms"')
    if not MIN_LIMIT <= limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be between {MIN_LIMIT} and {MAX_LIMIT}, not {limit}")
    views = installed_libraries(names=libs or None)
    try:
        indexes = [ix for ix in (v.index() for v in views) if ix is not None]
        names = [ix.library for ix in indexes]
        return QueryResult(text, names, search(indexes, text, limit))
    finally:
        for v in views:
            v.close()
