"""Source kinds: which ``Source`` class reads a registry of each kind.

``dir`` (a folder or ``file://``), ``http`` (``http(s)://``) and ``hf``
(``hf://owner/repo``, through huggingface_hub, imported only when used).
"""

from __future__ import annotations

from llmos_cli.errors import UsageError
from llmos_cli.registry.http import HttpSource
from llmos_cli.registry.hub import HubSource
from llmos_cli.registry.sources import DirectorySource, Source
from llmos_cli.state.db import SourceRow

SOURCE_KINDS: dict[str, type[Source]] = {"dir": DirectorySource, "http": HttpSource, "hf": HubSource}


def make_source(row: SourceRow) -> Source:
    cls = SOURCE_KINDS.get(row.kind)
    if cls is None:
        raise UsageError(
            f"source {row.name}: kind {row.kind!r} is not supported by this llmos",
            f"remove it with `llmos source remove {row.name}`",
        )
    return cls(row)
