"""Registry indexes (``index.json``, apt's ``Packages``) and ``llmos index DIR``.

A registry is a folder with package archives anywhere below it plus
``index.json``::

    {"schema": 1, "created": "2026-01-01T00:00:00Z", "version": 7, "expires": null,
     "packages": [{"name": ..., "version": ..., "kind": ..., "summary": ...,
                   "depends": [...], "conflicts": [...], "provides": [...], "base": ...,
                   "license": ..., "maintainer": ..., "description": ...,
                   "filename": "pool/x_1.0.llmos", "size": N, "sha256": "...",
                   "architecture": ..., "fingerprint": ..., "context_length": N}]}

``version`` counts up by one on every rewrite (rollback protection for
signed indexes); an optional detached signature sits in ``index.json.sig``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from llmos_cli.errors import InvalidPackageError, NotFoundError, UsageError
from llmos_cli.fileio import write_atomic
from llmos_cli.paths import get_paths
from llmos_cli.pkg.archive import ARCHIVE_SUFFIX, PackageArchive
from llmos_cli.pkg.manifest import safe_relpath
from llmos_cli.pkg.meta import MetaView, PackageMeta, RelationError
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.registry import signing

INDEX_NAME = "index.json"
SIG_SUFFIX = ".sig"
INDEX_SCHEMA = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# a plain relative path ("pool/g++_1.0.llmos"): segments of safe characters, none "." or "..";
# such a path is its own safe_relpath, so the (slower) pathlib check is skipped for it
_PLAIN_PATH = re.compile(r"^(?!\.\.?(?:/|$))[A-Za-z0-9._+-]+(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._+-]+)*$")
_META_KEYS = {"name", "version", "kind", "summary", "depends", "conflicts", "provides", "base", "breaks"}
_ENTRY_KEYS = {"filename", "size", "sha256"}


def utc_iso(dt: datetime | None = None) -> str:
    dt = dt or datetime.now(UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass
class IndexEntry(MetaView):
    meta: PackageMeta
    filename: str
    size: int
    sha256: str
    #: license, maintainer, description, and for models architecture, fingerprint, context_length
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {**self.meta.to_json(), **self.extra, "filename": self.filename, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_json(cls, d: Any, origin: str = "index") -> IndexEntry:
        if not isinstance(d, dict):
            raise InvalidPackageError(f"{origin}: package entry is not an object")
        try:
            meta = PackageMeta.from_json(d)
        except (RelationError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidPackageError(f"{origin}: bad package entry {d.get('name')!r}: {exc}") from None
        filename = d.get("filename")
        if not isinstance(filename, str) or (not _PLAIN_PATH.match(filename) and safe_relpath(filename) != filename):
            raise InvalidPackageError(f"{origin}: {meta.id}: unsafe or missing filename {filename!r}")
        size = d.get("size")
        sha = d.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidPackageError(f"{origin}: {meta.id}: bad size {size!r}")
        if not isinstance(sha, str) or not _HEX64.match(sha):
            raise InvalidPackageError(f"{origin}: {meta.id}: bad sha256 {sha!r}")
        extra = {k: v for k, v in d.items() if k not in _META_KEYS and k not in _ENTRY_KEYS}
        return cls(meta, filename, size, sha, extra)


@dataclass
class Index:
    schema: int
    created: str
    version: int
    expires: str | None
    entries: list[IndexEntry] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "schema": self.schema,
            "created": self.created,
            "version": self.version,
            "expires": self.expires,
            "packages": [e.to_json() for e in self.entries],
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")

    def is_expired(self, now: datetime | None = None) -> bool:
        if not self.expires:
            return False
        return parse_iso(self.expires) < (now or datetime.now(UTC))

    def find(self, name: str) -> list[IndexEntry]:
        return [e for e in self.entries if e.name == name]

    @classmethod
    def from_bytes(cls, raw: bytes, origin: str) -> Index:
        """Parse and validate; ``InvalidPackageError`` on junk, a newer schema or duplicates."""
        return cls.parse(raw, origin)[0]

    @classmethod
    def parse(cls, raw: bytes, origin: str) -> tuple[Index, list[dict]]:
        """``from_bytes``, plus each entry's record as the index holds it (for the list cache)."""
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidPackageError(f"{origin}: index is not valid JSON ({exc})", "the index is damaged; run `llmos index` on the registry") from None
        except RecursionError:  # a hostile index nesting thousands of arrays (issue 11)
            raise InvalidPackageError(f"{origin}: index nests JSON too deeply", "the index is damaged; run `llmos index` on the registry") from None
        if not isinstance(data, dict):
            raise InvalidPackageError(f"{origin}: index is not a JSON object")
        schema = data.get("schema")
        if not isinstance(schema, int) or isinstance(schema, bool):
            raise InvalidPackageError(f"{origin}: index has no schema number")
        if schema > INDEX_SCHEMA:
            raise InvalidPackageError(f"{origin}: index schema {schema} is newer than this llmos reads ({INDEX_SCHEMA})", "upgrade llmos")
        if schema < 1:
            raise InvalidPackageError(f"{origin}: bad index schema {schema}")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise InvalidPackageError(f"{origin}: index has no valid version counter")
        created = data.get("created")
        expires = data.get("expires")
        try:
            if not isinstance(created, str):
                raise ValueError("missing")
            parse_iso(created)
            if expires is not None:
                if not isinstance(expires, str):
                    raise ValueError("expires")
                parse_iso(expires)
        except ValueError:
            raise InvalidPackageError(f"{origin}: index has bad created/expires times") from None
        pkgs = data.get("packages")
        if not isinstance(pkgs, list):
            raise InvalidPackageError(f"{origin}: index has no packages list")
        entries = [IndexEntry.from_json(d, origin) for d in pkgs]
        seen: set[tuple[str, str]] = set()
        for e in entries:
            key = (e.name, str(e.meta.parsed_version))
            if key in seen:
                raise InvalidPackageError(f"{origin}: {e.meta.id} is listed twice")
            seen.add(key)
        return cls(schema, created, version, expires, entries), pkgs


def entry_from_archive(archive: Any, filename: str) -> IndexEntry:
    """Index entry for an opened ``PackageArchive``."""
    m = archive.manifest
    extra: dict[str, Any] = {"license": m.license, "maintainer": m.maintainer, "description": m.description}
    if m.homepage:
        extra["homepage"] = m.homepage
    if m.kind == "model" and m.model is not None:
        for k, v in (("architecture", m.model.architecture), ("fingerprint", m.model.fingerprint), ("context_length", m.model.context_length)):
            if v is not None:
                extra[k] = v
    if m.tags is not None:
        extra["tags"] = list(m.tags)
    payloads = m.payloads  # [[payload]] by hash: for show, install -s and mirror
    if payloads:
        extra["payloads"] = [p.to_json() for p in payloads]
    return IndexEntry(m.meta, filename, archive.size, archive.sha256, extra)


@dataclass
class IndexResult:
    path: Path
    version: int
    created: str
    expires: str | None
    packages: int
    signed: bool
    entries: list[IndexEntry] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "version": self.version,
            "created": self.created,
            "expires": self.expires,
            "packages": self.packages,
            "signed": self.signed,
            "entries": [{"name": e.name, "version": e.version, "filename": e.filename, "sha256": e.sha256} for e in self.entries],
        }


def find_archives(registry_dir: Path) -> list[Path]:

    out = []
    for p in sorted(registry_dir.rglob(f"*{ARCHIVE_SUFFIX}")):
        rel = p.relative_to(registry_dir)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue  # hidden folders (temp files of publish, ...) are not part of the registry
        out.append(p)
    return out


def previous_version(registry_dir: Path) -> int:
    p = registry_dir / INDEX_NAME
    try:
        data = json.loads(p.read_bytes())
        v = data.get("version", 0) if isinstance(data, dict) else 0
        return v if isinstance(v, int) and not isinstance(v, bool) else 0
    except (OSError, ValueError):
        return 0


def _resolve_key(sign_key: Path | str) -> Path:
    """``--sign KEY``: a key file, or a key name in LLMOS_HOME/keys."""
    return Path(signing.resolve_private_key(sign_key, get_paths().keys))


def build_index(registry_dir: Path, *, expires_days: int | None = None, reporter: Reporter = NullReporter(), now: datetime | None = None) -> Index:
    """Scan the registry's archives (each opened and verified) into a new Index (not written)."""

    registry_dir = Path(registry_dir)
    if not registry_dir.is_dir():
        raise NotFoundError(f"{registry_dir}: no such registry folder")
    archives = find_archives(registry_dir)
    by_key: dict[tuple[str, str], IndexEntry] = {}
    with reporter.task("indexing", total=len(archives)) as task:
        for p in archives:
            rel = p.relative_to(registry_dir).as_posix()
            arch = PackageArchive.open(p)
            arch.verify()
            e = entry_from_archive(arch, rel)
            key = (e.name, str(e.meta.parsed_version))
            if key in by_key:
                other = by_key[key]
                if other.sha256 != e.sha256:
                    raise InvalidPackageError(
                        f"{e.meta.id} is in the registry twice with different content: {other.filename} and {rel}",
                        "remove one of them",
                    )
                reporter.warn(f"{rel}: same archive as {other.filename}; listing it once")
            else:
                by_key[key] = e
            task.advance()
    entries = sorted(by_key.values(), key=lambda e: (e.name, e.meta.parsed_version))
    now = now or datetime.now(UTC)
    expires = utc_iso(now + timedelta(days=expires_days)) if expires_days is not None else None
    return Index(INDEX_SCHEMA, utc_iso(now), previous_version(registry_dir) + 1, expires, entries)


def write_index(
    registry_dir: Path,
    *,
    sign_key: Path | str | None = None,
    expires_days: int | None = None,
    reporter: Reporter = NullReporter(),
    simulate: bool = False,
) -> IndexResult:
    """(Re)write ``index.json`` (and ``index.json.sig`` when ``sign_key`` is given), atomically."""

    if expires_days is not None and expires_days <= 0:
        raise UsageError(f"--expires-days must be positive, not {expires_days}")
    registry_dir = Path(registry_dir)
    key_path = _resolve_key(sign_key) if sign_key is not None else None
    index = build_index(registry_dir, expires_days=expires_days, reporter=reporter)
    raw = index.to_bytes()
    target = registry_dir / INDEX_NAME
    sig_path = registry_dir / (INDEX_NAME + SIG_SUFFIX)
    if not simulate:
        sig = signing.sign_index(raw, key_path) if key_path is not None else None
        if sig is None:
            sig_path.unlink(missing_ok=True)  # a stale signature would not match the new index
        write_atomic(target, raw)
        if sig is not None:
            write_atomic(sig_path, sig)
    return IndexResult(target, index.version, index.created, index.expires, len(index.entries), key_path is not None, index.entries)
