"""Human output: the small set of rendering helpers every command uses.

- :func:`line` -- one line of data on stdout (no markup, no highlighting);
- :func:`note` -- one line of message on stderr;
- :func:`warn` -- ``warning: ...`` on stderr; :func:`finding` -- a check finding (error/warning);
- :func:`table` -- a table of data on stdout;
- :func:`kv` -- a ``Key: value`` block on stdout;
- :func:`simulated` -- the closing "Simulation only" note.

``--json`` output never goes through here (see ``_common.execute``).
NO_COLOR is honoured by rich.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

from llmos_cli.cli._common import _consoles, err, out
from llmos_cli.cli._common import warn as warn

SIMULATED = "Simulation only: nothing was changed."


def _plain(text: str, wraps: bool) -> bool:
    """True when rich would print ``text`` exactly as it is, so it can be written without loading rich.

    Printable ASCII with no ``:`` (rich's emoji codes) and no trailing blanks, and, on a console
    that folds long lines, shorter than both 80 (rich's width off a terminal) and the terminal.
    """
    if not (text.isascii() and text.isprintable()) or ":" in text or text != text.rstrip():
        return False
    if wraps:
        return len(text) < min(80, shutil.get_terminal_size((80, 24)).columns)
    return True


def _write(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def line(text: str, *, soft_wrap: bool | None = None) -> None:
    """One line of data on stdout (``soft_wrap``: never fold it at the terminal width)."""
    if "out" not in _consoles and _plain(text, wraps=soft_wrap is False):
        _write(sys.stdout, text)  # start-up: a plain line needs no rich
        return
    out().print(text, markup=False, highlight=False, soft_wrap=soft_wrap)


def note(text: str, *, soft_wrap: bool | None = None) -> None:
    """One line of message on stderr (``soft_wrap``: never fold it at the terminal width)."""
    if "err" not in _consoles and _plain(text, wraps=soft_wrap is not True):
        _write(sys.stderr, text)  # start-up: a plain line needs no rich
        return
    err().print(text, markup=False, highlight=False, soft_wrap=soft_wrap)


def simulated() -> None:
    note(SIMULATED)


def finding(severity: str, text: str) -> None:
    """``error ...`` (red) or ``warning ...`` (yellow) on stderr, as ``llmos check`` lists its findings."""
    from rich.markup import escape

    colour = "red" if severity == "error" else "yellow"
    err().print(f"[{colour}]{severity}[/] {escape(text)}", highlight=False)


def _rich_width() -> int:
    """The width rich gives a console that is not a terminal."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 80


def _plain_table(columns: Sequence[str], rows: list[Sequence[str]], heads: bool) -> str | None:
    """The table exactly as rich draws it, when that is simple to know: stdout is not a terminal (no
    bold heads), every cell is printable ASCII without rich markup or emoji codes, and the table fits
    the width (nothing to fold or cut).  None otherwise."""
    if "out" in _consoles or sys.stdout.isatty() or "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ:
        return None
    cells = [list(columns), *(list(r) for r in rows)]
    if any(len(r) != len(columns) for r in cells):
        return None
    for r in cells:
        for c in r:
            if not isinstance(c, str) or not (c.isascii() and c.isprintable()) or "[" in c or ":" in c:
                return None
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    sep = "   " if heads else "  "  # padding (0, 1) around a one-space rule (SIMPLE_HEAD) or none (no box)
    total = sum(widths) + len(sep) * (len(widths) - 1)
    if total > _rich_width():
        return None
    lines = [sep.join(c.ljust(widths[i]) for i, c in enumerate(r)) for r in cells]
    if heads:
        lines.insert(1, "\u2500" * total)
    return "\n".join(lines) + "\n"


def table(columns: Sequence[str], rows: Iterable[Sequence[str]], *, heads: bool = False, fold: bool = False) -> None:
    """A table on stdout.  ``heads``: a rule under the column heads; ``fold``: fold long cells instead of cutting them.

    In a pipe or a file a simple table is written directly, byte for byte as rich would draw it
    (``tests/test_cli_app.py`` compares the two), so that ``llmos list`` need not load rich.
    """
    rows = list(rows)
    text = _plain_table(columns, rows, heads)
    if text is not None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from rich import box
    from rich.table import Table

    if heads:
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    else:
        t = Table(box=None, pad_edge=False, show_edge=False)
    for c in columns:
        if fold:
            t.add_column(c, overflow="fold")
        else:
            t.add_column(c)
    for r in rows:
        t.add_row(*r)
    out().print(t)


def kv(pairs: Iterable[tuple[str, object]], *, indent: str = "") -> None:
    """A ``Key: value`` block on stdout."""
    for key, value in pairs:
        line(f"{indent}{key}: {value}")


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def short(text: str, width: int = 300) -> str:
    """``text`` on one line, cut to ``width`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
