"""Verified, resumable HTTP downloads into the shared download cache.

``download_to_cache`` is what the HTTP source uses for archives:

* the file streams into ``$LLMOS_HOME/cache/<sha16>-<name>.incomplete`` (unique
  per content; the cache's lock file keeps two processes from writing it at once);
* a partial left by an earlier, killed or failed run is resumed with an HTTP
  ``Range`` request (a server that ignores ``Range`` restarts it from zero);
* the sha256 is computed while streaming, so a finished download is verified
  against the index's size and sha256 without a second pass, before anything
  is unpacked; a mismatch deletes the partial and raises ``IntegrityError``;
* a server that declares or sends more bytes than the index says is refused
  as soon as it does (TUF's endless-data attack);
* connect/read timeouts (``LLMOS_HTTP_TIMEOUT`` seconds, default 30) and
  bounded retries with exponential backoff (``LLMOS_HTTP_RETRIES``, default 3;
  the count restarts whenever an attempt made progress).

The standard library's ``urllib`` is enough for GET + Range over HTTP(S) and
keeps the dependency list short (docs/security.md says why).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from llmos_cli.errors import IntegrityError, NetworkError, NotFoundError, from_os_error
from llmos_cli.progress import NullReporter, Reporter, Task
from llmos_cli.registry.sources import verify_file

if TYPE_CHECKING:
    from llmos_cli.registry.index import IndexEntry
    from llmos_cli.registry.sources import Source

CHUNK = 1 << 20
INCOMPLETE = ".incomplete"
#: one lock for the cache folder: two processes never write the same partial file
LOCK_NAME = ".lock"
#: largest index or signature file accepted (an endless-data guard for the small files)
MAX_INDEX_BYTES = 64 << 20
USER_AGENT = "llmos"


@dataclass(frozen=True)
class HttpSettings:
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5

    @classmethod
    def from_env(cls) -> HttpSettings:
        def num(name: str, default: float) -> float:
            try:
                return float(os.environ.get(name, "") or default)
            except ValueError:
                return default

        return cls(
            timeout=max(0.1, num("LLMOS_HTTP_TIMEOUT", 30.0)),
            retries=max(0, int(num("LLMOS_HTTP_RETRIES", 3))),
            backoff=max(0.0, num("LLMOS_HTTP_BACKOFF", 0.5)),
        )


class _Transient(Exception):
    """A failure worth retrying (timeout, reset connection, 5xx, short body)."""


def _sleep_backoff(settings: HttpSettings, attempt: int) -> None:
    time.sleep(min(settings.backoff * (2 ** (attempt - 1)), 10.0))


def _open(url: str, settings: HttpSettings, start: int = 0) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=settings.timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            exc.close()
            raise
        status = exc.code
        exc.close()
        if status == 404 or status == 410:
            raise NotFoundError(f"{url} is not on the server (HTTP {status})", "run `llmos update`; the registry may have changed") from None
        if status in (401, 403):
            raise NetworkError(f"the server refused {url} (HTTP {status})", "check the URL and the server's access rules") from None
        if status in (408, 425, 429) or status >= 500:
            raise _Transient(f"HTTP {status}") from None
        raise NetworkError(f"the server answered HTTP {status} for {url}") from None
    except urllib.error.URLError as exc:
        import ssl

        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise _Transient("timed out connecting") from None
        if isinstance(reason, ssl.SSLError):  # retrying cannot fix a certificate
            raise NetworkError(f"TLS failed for {url}: {reason}", "check the server's certificate and the system CA store") from None
        raise _Transient(str(reason)) from None
    except TimeoutError:
        raise _Transient("timed out waiting for the server") from None
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        raise _Transient(str(exc) or type(exc).__name__) from None


def _network_failure(url: str, attempts: int, reason: str, settings: HttpSettings, partial: bool) -> NetworkError:
    kept = "; the partial download is kept and resumes next time" if partial else ""
    return NetworkError(
        f"download of {url} failed after {attempts} attempt{'s' if attempts != 1 else ''}: {reason}",
        f"check the network or the server{kept} (timeout {settings.timeout:g}s: LLMOS_HTTP_TIMEOUT; retries: LLMOS_HTTP_RETRIES)",
    )


def fetch_bytes(
    url: str,
    *,
    missing_ok: bool = False,
    max_bytes: int = MAX_INDEX_BYTES,
    settings: HttpSettings | None = None,
    reporter: Reporter = NullReporter(),
) -> bytes | None:
    """GET a small file (an index or its signature) with timeouts and retries.

    ``None`` when the server has no such file and ``missing_ok``; otherwise
    ``NotFoundError``.  More than ``max_bytes`` is refused.
    """
    settings = settings or HttpSettings.from_env()
    attempt = 0
    while True:
        attempt += 1
        try:
            with _open(url, settings) as resp:
                declared = resp.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise NetworkError(f"{url} is larger than {max_bytes} bytes: refused", "this is no llmos index")
                data = resp.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise NetworkError(f"{url} sent more than {max_bytes} bytes: refused", "this is no llmos index")
                if declared is not None and declared.isdigit() and len(data) < int(declared):
                    raise _Transient(f"connection closed after {len(data)} of {declared} bytes")
                return data
        except NotFoundError:
            if missing_ok:
                return None
            raise
        except (_Transient, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            reason = str(exc) or "timed out"
            if attempt > settings.retries:
                raise _network_failure(url, attempt, reason, settings, partial=False) from None
            reporter.debug(f"{url}: {reason}; retrying")
            _sleep_backoff(settings, attempt)


# ---------------------------------------------------------------- cache


def cache_name(sha256: str, filename: str) -> str:
    """Name of an archive in the download cache: content-addressed, readable."""
    return f"{sha256[:16]}-{PurePosixPath(filename).name}"


def _hash_prefix(path: Path, limit: int) -> hashlib._Hash:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        left = limit
        while left > 0:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h


def download_to_cache(
    url: str,
    *,
    filename: str,
    size: int,
    sha256: str,
    cache_dir: Path,
    reporter: Reporter = NullReporter(),
    settings: HttpSettings | None = None,
) -> Path:
    """Return the cache path of a verified copy of ``url`` (downloading or resuming as needed)."""
    from filelock import FileLock

    settings = settings or HttpSettings.from_env()
    sha256 = sha256.lower()
    name = PurePosixPath(filename).name
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise from_os_error(exc, "creating the download cache") from exc
    final = cache_dir / cache_name(sha256, filename)
    part = final.with_name(final.name + INCOMPLETE)
    with FileLock(str(cache_dir / LOCK_NAME)):
        if final.exists():
            try:
                verify_file(final, size, sha256, name)
                reporter.debug(f"{name}: verified copy in the download cache")
                return final
            except IntegrityError as exc:
                reporter.warn(f"the cached copy of {name} is damaged ({exc.message}); downloading it again")
                final.unlink()
        try:
            _stream(url, part, name, size, sha256, settings, reporter)
            os.replace(part, final)
        except OSError as exc:
            raise from_os_error(exc, f"downloading {name}") from exc
    return final


class _Both:
    """A per-file byte task that also moves the overall one."""

    def __init__(self, task: Task, total: Task) -> None:
        self.task, self.total = task, total
        self.done: float = 0

    def advance(self, n: float = 1) -> None:
        self.task.advance(n)
        self.total.advance(n)
        self.done += n

    def update(self, *, total: float | None = None, description: str | None = None) -> None:
        self.task.update(total=total, description=description)


class _TotalReporter:
    """Forwards to ``inner``; byte tasks opened through it also advance ``total``."""

    def __init__(self, inner: Reporter, total: Task) -> None:
        self.inner, self.total, self.moved = inner, total, 0.0

    def info(self, message: str) -> None:
        self.inner.info(message)

    def warn(self, message: str) -> None:
        self.inner.warn(message)

    def debug(self, message: str) -> None:
        self.inner.debug(message)

    @contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[Task]:
        with self.inner.task(description, total=total, unit=unit) as t:
            if unit != "bytes":
                yield t
                return
            both = _Both(t, self.total)
            try:
                yield both
            finally:
                self.moved += both.done


def fetch_all(items: list[tuple[Source, IndexEntry]], dest_dir: Path, reporter: Reporter = NullReporter()) -> list[Path]:
    """``fetch_archive`` for each (source, entry), with one overall progress bar above the per-file ones."""
    paths = []
    size = sum(e.size for _s, e in items)
    with reporter.task(f"fetching {len(items)} archive(s)", total=size or None, unit="bytes") as total:
        for src, entry in items:
            rep = _TotalReporter(reporter, total)
            paths.append(src.fetch_archive(entry, dest_dir, rep))
            total.advance(entry.size - rep.moved)  # cached or local files move the total at once
    return paths


def _stream(url: str, part: Path, name: str, size: int, sha256: str, settings: HttpSettings, reporter: Reporter) -> None:
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    h = _hash_prefix(part, have) if have else hashlib.sha256()
    if have:
        reporter.info(f"resuming {name} at {have} of {size} bytes")
    attempt = 0
    with reporter.task(f"{name}", total=size, unit="bytes") as bar:
        bar.advance(have)
        while have < size:
            attempt += 1
            got = 0
            try:
                try:
                    resp = _open(url, settings, start=have)
                except urllib.error.HTTPError:  # 416: our partial does not fit the file any more
                    part.unlink(missing_ok=True)
                    bar.advance(-have)
                    have, h = 0, hashlib.sha256()
                    raise _Transient("the server refused to resume; starting over") from None
                with resp:
                    offset = _check_response(resp, url, name, size, have)
                    if offset == 0 and have:
                        reporter.debug(f"{url}: the server ignored the range request; starting over")
                        bar.advance(-have)
                        have, h = 0, hashlib.sha256()
                    with open(part, "r+b" if have else "wb") as fh:
                        fh.seek(have)
                        fh.truncate()
                        for chunk in _chunks(resp):
                            if have + len(chunk) > size:
                                raise _Oversize()
                            fh.write(chunk)
                            h.update(chunk)
                            have += len(chunk)
                            got += len(chunk)
                            bar.advance(len(chunk))
                if have < size:
                    raise _Transient(f"connection closed after {have} of {size} bytes")
            except IntegrityError:
                part.unlink(missing_ok=True)
                raise
            except _Oversize:
                part.unlink(missing_ok=True)
                raise IntegrityError(
                    f"the server sent more than the {size} bytes the index declares for {name}: download refused and deleted",
                    "the server or the connection is misbehaving or hostile; tell the registry's publisher",
                ) from None
            except (_Transient, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                reason = str(exc) or "timed out waiting for data"
                if got:
                    attempt = 0  # progress was made: the retry budget restarts
                if attempt > settings.retries:
                    raise _network_failure(url, attempt, reason, settings, partial=have > 0) from None
                reporter.debug(f"{name}: {reason}; retrying (attempt {attempt + 1})")
                _sleep_backoff(settings, max(attempt, 1))
    if h.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise IntegrityError(
            f"sha256 of {name} does not match the index (got {h.hexdigest()[:16]}…, expected {sha256[:16]}…): download deleted",
            "the archive on the server was changed or corrupted after indexing; tell the registry's publisher",
        )


class _Oversize(Exception):
    pass


def _check_response(resp: http.client.HTTPResponse, url: str, name: str, size: int, have: int) -> int:
    """Offset the body starts at; refuses a server that announces the wrong size."""
    status = resp.status
    length = resp.headers.get("Content-Length")
    if status == 206:
        crange = resp.headers.get("Content-Range", "")
        try:
            unit, _, rest = crange.partition(" ")
            span, _, total = rest.partition("/")
            start = int(span.split("-")[0])
        except ValueError:
            raise _Transient(f"unreadable Content-Range {crange!r}") from None
        if unit != "bytes" or start != have:
            raise _Transient(f"the server resumed at the wrong offset ({crange!r})")
        if total not in ("", "*") and total.isdigit() and int(total) != size:
            raise _size_mismatch(name, int(total), size)
        return start
    if status != 200:
        raise _Transient(f"unexpected HTTP {status}")
    if length is not None and length.isdigit() and int(length) != size:
        raise _size_mismatch(name, int(length), size)
    return 0


def _size_mismatch(name: str, declared: int, size: int) -> IntegrityError:
    more = "more" if declared > size else "fewer"
    return IntegrityError(
        f"the server declares {declared} bytes for {name}, {more} than the {size} bytes in the index: download refused",
        "the archive on the server differs from the signed index; run `llmos update`, or tell the publisher",
    )


def _chunks(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    """The body in chunks; bytes that arrived before a connection broke are still yielded (then kept)."""
    while True:
        try:
            chunk = resp.read(CHUNK)
        except http.client.IncompleteRead as exc:
            if exc.partial:
                yield exc.partial
            raise _Transient("the connection closed early") from None
        if not chunk:
            return
        yield chunk


# ---------------------------------------------------------------- llmos cache list|clean


@dataclass
class CacheEntry:
    file: str
    size: int
    complete: bool
    modified: str

    def to_json(self) -> dict:
        return {"file": self.file, "size": self.size, "complete": self.complete, "modified": self.modified}


@dataclass
class CacheReport:
    path: Path
    entries: list[CacheEntry]
    removed: bool = False
    simulate: bool = False

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "files": [e.to_json() for e in self.entries],
            "total_bytes": self.total_bytes,
            "removed": self.removed,
            "simulate": self.simulate,
        }


def list_cache(cache_dir: Path) -> CacheReport:
    """Archives (and partial downloads) in the download cache."""
    from datetime import datetime

    entries = []
    if cache_dir.is_dir():
        for p in sorted(cache_dir.iterdir()):
            if p.name.startswith(".") or not p.is_file():
                continue
            st = p.stat()
            entries.append(
                CacheEntry(
                    file=p.name,
                    size=st.st_size,
                    complete=not p.name.endswith(INCOMPLETE),
                    modified=datetime.fromtimestamp(st.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                )
            )
    return CacheReport(cache_dir, entries)


def clean_cache(cache_dir: Path, *, incomplete_only: bool = False, simulate: bool = False) -> CacheReport:
    """Delete cached archives (or only partial downloads); the caller holds the state lock."""
    report = list_cache(cache_dir)
    report.entries = [e for e in report.entries if not (incomplete_only and e.complete)]
    report.simulate = simulate
    if simulate:
        return report
    try:
        for e in report.entries:
            (cache_dir / e.file).unlink(missing_ok=True)
    except OSError as exc:
        raise from_os_error(exc, "cleaning the download cache") from exc
    report.removed = True
    return report
