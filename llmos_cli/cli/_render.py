"""Human output: the small set of rendering helpers every command uses.

- :func:`line` -- one line of data on stdout (no markup, no highlighting);
- :func:`note` -- one line of message on stderr;
- :func:`warn` -- ``warning: ...`` on stderr;
- :func:`table` -- a table of data on stdout;
- :func:`kv` -- a ``Key: value`` block on stdout;
- :func:`simulated` -- the closing "Simulation only" note.

``--json`` output never goes through here (see ``_common.execute``).
NO_COLOR is honoured by rich.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from llmos_cli.cli._common import err, out
from llmos_cli.cli._common import warn as warn

SIMULATED = "Simulation only: nothing was changed."


def line(text: str, *, soft_wrap: bool | None = None) -> None:
    """One line of data on stdout (``soft_wrap``: never fold it at the terminal width)."""
    out().print(text, markup=False, highlight=False, soft_wrap=soft_wrap)


def note(text: str, *, soft_wrap: bool | None = None) -> None:
    """One line of message on stderr (``soft_wrap``: never fold it at the terminal width)."""
    err().print(text, markup=False, highlight=False, soft_wrap=soft_wrap)


def simulated() -> None:
    note(SIMULATED)


def table(columns: Sequence[str], rows: Iterable[Sequence[str]], *, heads: bool = False, fold: bool = False) -> None:
    """A table on stdout.  ``heads``: a rule under the column heads; ``fold``: fold long cells instead of cutting them."""
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
