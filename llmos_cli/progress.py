"""How core code reports progress and notices without printing.

Core functions take a ``Reporter``.  The CLI passes a rich-backed one that
draws progress bars and messages on stderr; tests and library callers use
``NullReporter`` (or a ``RecordingReporter`` to assert on notices).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Task(Protocol):
    def advance(self, n: float = 1) -> None: ...

    def update(self, *, total: float | None = None, description: str | None = None) -> None: ...


class Reporter(Protocol):
    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def debug(self, message: str) -> None: ...

    @contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[Task]: ...


class _NullTask:
    def advance(self, n: float = 1) -> None:
        pass

    def update(self, *, total: float | None = None, description: str | None = None) -> None:
        pass


class NullReporter:
    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def debug(self, message: str) -> None:
        pass

    @contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[Task]:
        yield _NullTask()


class RecordingReporter(NullReporter):
    """Keeps every notice; handy in tests and for ``--json`` warnings."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.messages.append(("info", message))

    def warn(self, message: str) -> None:
        self.messages.append(("warning", message))

    def debug(self, message: str) -> None:
        self.messages.append(("debug", message))
