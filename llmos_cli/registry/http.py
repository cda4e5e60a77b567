"""``http``: a static HTTP(S) registry, i.e. a registry folder served by any web server.

``https://host/path`` holds ``index.json``, ``index.json.sig`` (optional) and
the archives at the index's relative ``filename``s.  Archives go through the
verified, resumable download cache (``llmos_cli.registry.download``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from llmos_cli.errors import IntegrityError, NotFoundError, UsageError
from llmos_cli.pkg.manifest import safe_relpath
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.registry import download
from llmos_cli.registry.index import INDEX_NAME, SIG_SUFFIX, IndexEntry
from llmos_cli.registry.sources import Source


class HttpSource(Source):
    """A registry on a web server; the index and archives are fetched with timeouts and retries."""

    @property
    def base_url(self) -> str:
        url = self.row.url
        if not url.lower().startswith(("http://", "https://")):
            raise UsageError(f"source {self.name}: {url!r} is not an http(s) URL")
        return url.rstrip("/") + "/"

    def uri(self, filename: str) -> str:
        """The URL of a file of the registry (``filename`` relative, as in the index)."""

        if safe_relpath(filename) != filename:
            raise IntegrityError(f"source {self.name}: unsafe filename {filename!r} in the index")
        return self.base_url + quote(filename)

    def fetch_index(self, reporter: Reporter = NullReporter()) -> tuple[bytes, bytes | None]:
        settings = download.HttpSettings.from_env()
        url = self.uri(INDEX_NAME)
        try:
            raw = download.fetch_bytes(url, settings=settings, reporter=reporter)
        except NotFoundError:
            raise NotFoundError(
                f"source {self.name}: no {INDEX_NAME} at {url}",
                "check the URL with `llmos source list`; the served folder needs `llmos index DIR`",
            ) from None
        sig = download.fetch_bytes(self.uri(INDEX_NAME + SIG_SUFFIX), missing_ok=True, settings=settings, reporter=reporter)
        return raw or b"", sig

    def fetch_archive(self, entry: IndexEntry, dest_dir: Path, reporter: Reporter = NullReporter()) -> Path:
        """Download (or resume, or reuse) the archive into ``dest_dir``, the download cache; verified."""
        return download.download_to_cache(
            self.uri(entry.filename),
            filename=entry.filename,
            size=entry.size,
            sha256=entry.sha256,
            cache_dir=dest_dir,
            reporter=reporter,
        )
