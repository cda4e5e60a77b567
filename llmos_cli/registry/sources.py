"""Where packages come from: one small interface, one class per kind of source.

A ``Source`` wraps one row of the ``sources`` table and can do two things:
fetch the raw index (and its detached signature, if any) and fetch one
archive, verified against the index's size and sha256.  ``update``,
``install``, ``mirror`` and friends never care which kind they talk to.

``dir`` lives here, ``http`` and ``hf`` in their own modules;
``registry/kinds.py`` maps each kind to its class (``make_source``).
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from urllib.parse import unquote, urlparse

from llmos_cli.errors import IntegrityError, NotFoundError, UsageError, from_os_error
from llmos_cli.paths import embedded_registry
from llmos_cli.pkg.manifest import safe_relpath
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.registry.index import INDEX_NAME, SIG_SUFFIX, IndexEntry
from llmos_cli.state.db import SourceRow

EMBEDDED_NAME = "embedded"
EMBEDDED_URL = "embedded:"
CHUNK = 1 << 20


class Source(ABC):
    """One package source (a row of the ``sources`` table)."""

    kind: str = ""

    def __init__(self, row: SourceRow):
        self.row = row

    @property
    def name(self) -> str:
        return self.row.name

    @abstractmethod
    def fetch_index(self, reporter: Reporter = NullReporter()) -> tuple[bytes, bytes | None]:
        """The raw ``index.json`` and the raw signature (``None`` when unsigned)."""

    @abstractmethod
    def fetch_archive(self, entry: IndexEntry, dest_dir: Path, reporter: Reporter = NullReporter()) -> Path:
        """A local path to the archive of ``entry``, its size and sha256 checked (``IntegrityError``)."""

    def describe(self) -> str:
        return self.row.url


def verify_file(path: Path, size: int, sha256: str, what: str) -> None:
    """Stream-hash ``path`` and compare with the index (``IntegrityError`` on mismatch).

    Size and bytes come from one open descriptor.  This is the early check
    (nothing is parsed before it passes); staging hashes the bytes it unpacks
    again and compares them with the same sha256, so a file swapped after
    this check is refused too (``state/unpack.py``).
    """
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            actual_size = os.fstat(fh.fileno()).st_size
            if actual_size != size:
                raise IntegrityError(
                    f"{what}: size {actual_size} but the index says {size}",
                    "the archive or the index was tampered with or is stale; run `llmos update`",
                )
            n = 0
            while n <= size and (chunk := fh.read(CHUNK)):
                h.update(chunk)
                n += len(chunk)
    except FileNotFoundError:
        raise NotFoundError(f"{what}: {path} is missing", "the registry changed; run `llmos update`") from None
    except OSError as exc:
        raise from_os_error(exc, f"reading {path}") from exc
    if n != size or h.hexdigest() != sha256:
        raise IntegrityError(
            f"{what}: sha256 mismatch (index {sha256[:12]}…, file {h.hexdigest()[:12]}…)",
            "the archive or the index was tampered with or is stale; run `llmos update`",
        )


def dir_path_for_url(url: str) -> Path:
    """Folder of a ``dir`` source: a path, ``file://`` URL, or ``embedded:``."""
    if url == EMBEDDED_URL:
        return embedded_registry()
    if url.startswith("file://"):
        u = urlparse(url)
        if u.netloc not in ("", "localhost"):
            raise UsageError(f"file URL with a host is not supported: {url}")
        return Path(unquote(u.path))
    return Path(url).expanduser()


class DirectorySource(Source):
    """A registry folder on a local (or mounted) file system; archives are used in place."""

    @property
    def root(self) -> Path:
        return dir_path_for_url(self.row.url)

    def fetch_index(self, reporter: Reporter = NullReporter()) -> tuple[bytes, bytes | None]:
        root = self.root
        p = root / INDEX_NAME
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            hint = f"run `llmos index {root}` to create it" if root.is_dir() else "check the source's URL with `llmos source list`"
            raise NotFoundError(f"source {self.name}: no {INDEX_NAME} in {root}", hint) from None
        except OSError as exc:
            raise from_os_error(exc, f"reading {p}") from exc
        try:
            sig = (root / (INDEX_NAME + SIG_SUFFIX)).read_bytes()
        except FileNotFoundError:
            sig = None
        except OSError as exc:
            raise from_os_error(exc, f"reading {p}{SIG_SUFFIX}") from exc
        return raw, sig

    def fetch_archive(self, entry: IndexEntry, dest_dir: Path, reporter: Reporter = NullReporter()) -> Path:

        if safe_relpath(entry.filename) != entry.filename:
            raise IntegrityError(f"source {self.name}: unsafe filename {entry.filename!r} in the index")
        p = self.root / entry.filename
        verify_file(p, entry.size, entry.sha256, f"{entry.meta.id} from source {self.name}")
        return p


def kind_for_url(url: str) -> str:
    """``/path``, ``./path``, ``file://`` or ``embedded:`` -> dir; ``http(s)://`` -> http; ``hf://`` -> hf."""
    if not isinstance(url, str) or not url.strip():
        raise UsageError("empty source URL")
    low = url.lower()
    if low.startswith(("http://", "https://")):
        return "http"
    if low.startswith("hf://"):
        return "hf"
    if low.startswith("file://") or url == EMBEDDED_URL:
        return "dir"
    scheme = urlparse(url).scheme
    if scheme and len(scheme) > 1 and "://" in url:
        raise UsageError(f"unsupported source URL {url!r}", "use a folder path, file://, http(s):// or hf://owner/repo")
    return "dir"


def normalise_url(url: str, kind: str) -> str:
    """Store folder sources as absolute paths so they work from any directory."""
    if kind != "dir" or url == EMBEDDED_URL or url.startswith("file://"):
        return url.rstrip("/") if kind in ("http", "hf") else url
    return os.path.abspath(os.path.expanduser(url))
