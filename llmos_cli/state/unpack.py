"""Stage a package archive's payload into the store in ONE streaming pass.

``PackageArchive.open`` (llmos_cli.pkg.archive) reads a whole archive to
validate it before anything is unpacked; that is right for ``llmos check``
and for a local archive whose manifest is needed before resolving.  For an
archive the installer has already matched against its index (size and
sha256, by the source), reading it twice doubles the cost of every install.
So the installer streams it once, through ``pkg/tarstream.py`` (linear, with
limits on every declared size), and checks as it goes:

* the archive is opened once; its size must be the one the index (or the
  earlier ``open`` of a local archive) promised, and every raw byte read is
  hashed: at the end the sha256 must be the promised one too.  The bytes
  verified are the bytes unpacked, from one file descriptor, so a file
  swapped or rewritten after ``verify_file`` is refused (check-then-use);
* the first member must be ``llmos.toml``, a valid manifest with a ``[files]``
  table, naming the package and version the plan expects, whose files add
  up to no more than the archive can unpack to;
* every other member must be a regular file (directories are skipped) at a
  safe relative path, listed in ``[files]`` with the size its header
  declares (checked before its bytes are read), seen once;
* each member is copied into the store by ``Store.add_stream``, which hashes
  while copying and refuses bytes that differ from the ``[files]`` record;
* every file listed in ``[files]`` must have come.

A failure raises (InvalidPackageError / IntegrityError) mid-way; blobs staged
so far are unreferenced, and the transaction's rollback deletes them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmos_cli.errors import IntegrityError, InvalidPackageError, from_os_error
from llmos_cli.fileio import fsync_dir
from llmos_cli.pkg.archive import declared_total_check, parse_archive_manifest, read_manifest_member
from llmos_cli.pkg.manifest import MANIFEST_NAME, Manifest, raise_for
from llmos_cli.pkg.tarstream import LIMITS, EntryReader, TarStream
from llmos_cli.state.db import InstalledFile
from llmos_cli.state.store import Store

MAX_MANIFEST = LIMITS.max_manifest
_SWAPPED = "the archive changed after it was verified (or the index is stale); run `llmos update` and try again"


@dataclass
class Staged:
    manifest: Manifest
    files: list[InstalledFile]


def _bad(path: Path, message: str, hint: str | None = None) -> InvalidPackageError:
    return InvalidPackageError(f"{path.name}: {message}", hint or "the archive is damaged or was not made by `llmos build`")


def stage_archive(
    store: Store,
    path: Path,
    *,
    name: str,
    version: str,
    sha256: str | None = None,
    size: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_file: Callable[[], None] | None = None,
) -> Staged:
    """Stream ``path`` into ``store``; return its manifest and the installed-file records.

    ``sha256`` and ``size`` are what the archive was verified against (its
    index entry, or the earlier ``open`` of a local archive): the bytes
    staged must be those bytes (``IntegrityError`` otherwise, before the
    transaction commits).
    """
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise from_os_error(exc, f"opening {path}") from exc
    manifest: Manifest | None = None
    files: list[InstalledFile] = []
    seen: set[str] = set()
    with fh:
        try:
            actual_size = os.fstat(fh.fileno()).st_size
        except OSError as exc:
            raise from_os_error(exc, f"reading {path}") from exc
        if size is not None and actual_size != size:
            raise IntegrityError(f"{name} {version}: {path.name} is {actual_size} bytes, but it was verified at {size}", _SWAPPED)
        ts = TarStream(fh, path.name, archive_size=actual_size)
        for e in ts:
            if e.is_dir:
                continue
            member = e.name
            if manifest is None:
                manifest = _read_manifest(path, read_manifest_member(ts, e), name, version)
                declared_total_check(ts, manifest)
                continue
            if member == MANIFEST_NAME or member in seen:
                raise _bad(path, f"duplicate member {member!r}")
            rec = manifest.files.get(member)
            if rec is None:
                raise IntegrityError(f"{path.name}: member {member!r} is not listed in its manifest", "the archive was modified after it was built")
            if e.size != rec.size:
                raise IntegrityError(
                    f"{name} {version}: {member}: the archive declares {e.size} bytes but [files] says {rec.size}",
                    "the archive was modified after it was built",
                )
            try:
                store.add_stream(EntryReader(ts), rec, progress=progress, durable=False)  # type: ignore[arg-type]
            except IntegrityError as exc:
                raise IntegrityError(f"{name} {version}: {member}: {exc.message}", exc.hint) from exc
            seen.add(member)
            mode = 0o755 if e.mode & 0o111 else 0o644
            files.append(InstalledFile(member, rec.sha256, int(rec.size), mode))
            if on_file:
                on_file()
        digest, nbytes = ts.finish()
    if sha256 is not None and digest != sha256:
        raise IntegrityError(f"{name} {version}: {path.name}: sha256 {digest[:12]}… is not the verified {sha256[:12]}…", _SWAPPED)
    if size is not None and nbytes != size:
        raise IntegrityError(f"{name} {version}: {path.name}: read {nbytes} bytes, but it was verified at {size}", _SWAPPED)
    if manifest is None:
        raise _bad(path, f"no {MANIFEST_NAME} in the archive")
    missing = sorted(set(manifest.files) - seen)
    if missing:
        raise _bad(path, f"{missing[0]}: listed in the manifest but missing from the archive ({len(missing)} missing)")
    make_durable(store, files)
    for p in manifest.payloads:  # [[payload]]: fetched by hash before staging (registry/origins.py)
        if p.path in seen or not store.has(p.sha256) or store.path_for(p.sha256).stat().st_size != p.size:
            raise IntegrityError(
                f"{name} {version}: {p.path}: the payload declared by hash is not in the store", "install it again; its origins are fetched first"
            )
        files.append(InstalledFile(p.path, p.sha256, p.size, 0o644))
    return Staged(manifest, files)


def make_durable(store: Store, files: list[InstalledFile]) -> None:
    """Flush the staged blobs before anything refers to them: one ``syncfs`` where Linux has it.

    Blobs are staged without a fsync each (two fsyncs per file made an
    install of many small files take minutes on an ordinary disk); this
    flushes the store's file system once, or else fsyncs every blob and
    its folder.
    """
    if not files:
        return
    try:
        fd = os.open(store.root, os.O_RDONLY)
    except OSError as exc:
        raise from_os_error(exc, "flushing the store") from exc
    try:
        if _syncfs(fd):
            return
    finally:
        os.close(fd)
    folders = set()
    for f in files:
        blob = store.path_for(f.sha256)
        try:
            bfd = os.open(blob, os.O_RDONLY)
            try:
                os.fsync(bfd)
            finally:
                os.close(bfd)
        except OSError as exc:
            raise from_os_error(exc, "flushing the store") from exc
        folders.add(blob.parent)
    for d in folders:
        fsync_dir(d)


def _syncfs(fd: int) -> bool:
    """syncfs(2) on Linux (True when it flushed the file system without error)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.syncfs(fd)) == 0
    except (OSError, AttributeError):
        return False


def _read_manifest(path: Path, raw: bytes, name: str, version: str) -> Manifest:
    manifest, findings = parse_archive_manifest(raw, f"{path.name}!{MANIFEST_NAME}")
    raise_for(findings, f"{path.name}!{MANIFEST_NAME}")
    assert manifest is not None
    if not manifest.has_files_table:
        raise _bad(path, f"{MANIFEST_NAME} has no [files] table")
    if (manifest.name, manifest.version) != (name, version):
        raise IntegrityError(
            f"{path.name} holds {manifest.name} {manifest.version}, but the index promised {name} {version}",
            "the registry is inconsistent; run `llmos index` on it, then `llmos update`",
        )
    return manifest
