"""``llmos publish PKG... --to DIR|hf://owner/repo [--sign KEY]``.

Adds built archives to a registry under ``pool/`` and re-indexes it (the
version counter goes up by one), signing the new index when a key is given.

* Releases are immutable: a name and version already in the registry with
  other bytes is refused (bump the version); the same bytes again is a no-op.
* A registry whose index is signed stays signed: publishing to it without
  ``--sign`` is refused, because every client that pins its key would then
  refuse the new index.
* Folder: archives are copied atomically, then ``write_index`` rewrites the
  index, all under a lock file in the registry (``.llmos-publish.lock``).
* Hub: the current index is read, the new entries are merged into it, and the
  archives, ``index.json`` and ``index.json.sig`` go up in ONE commit on top
  of the commit that was read (``parent_commit``), so readers never see an
  index without its archives and two concurrent publishers cannot interleave.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from llmos_cli.errors import InvalidPackageError, TrustError, UsageError, from_os_error
from llmos_cli.fileio import atomic_output
from llmos_cli.pkg.archive import PackageArchive, archive_filename
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.registry import hub
from llmos_cli.registry.index import INDEX_NAME, INDEX_SCHEMA, SIG_SUFFIX, Index, IndexEntry, entry_from_archive, utc_iso, write_index
from llmos_cli.registry.signing import key_id_of_private, sign_index, signature_key_ids

POOL = "pool"
LOCK_NAME = ".llmos-publish.lock"


@dataclass
class Published:
    name: str
    version: str
    filename: str
    sha256: str
    size: int
    status: str  # "added" | "unchanged"

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "filename": self.filename,
            "sha256": self.sha256,
            "size": self.size,
            "status": self.status,
        }


@dataclass
class PublishResult:
    target: str
    packages: list[Published] = field(default_factory=list)
    index_version: int | None = None
    signed: bool = False
    simulate: bool = False
    commit: str | None = None

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "packages": [p.to_json() for p in self.packages],
            "index_version": self.index_version,
            "signed": self.signed,
            "simulate": self.simulate,
            "commit": self.commit,
        }


def _open_archives(paths: list[Path], reporter: Reporter) -> list[tuple[Path, Any, IndexEntry]]:
    """Open and verify each archive; (path, archive, entry with its pool filename)."""

    if not paths:
        raise UsageError("nothing to publish", "name at least one archive built by `llmos build`")
    out = []
    seen: dict[str, str] = {}
    with reporter.task("checking archives", total=len(paths)) as task:
        for p in paths:
            arch = PackageArchive.open(Path(p))
            arch.verify()
            m = arch.manifest
            filename = f"{POOL}/{archive_filename(m.name, m.version)}"
            if filename in seen and seen[filename] != arch.sha256:
                raise InvalidPackageError(f"{m.meta.id} is given twice with different content", "publish one of them")
            seen[filename] = arch.sha256
            out.append((Path(p), arch, entry_from_archive(arch, filename)))
            task.advance()
    return out


def copy_file(src: Path, dest: Path, reporter: Reporter) -> None:
    """Copy atomically (temp file, fsync, rename) with a byte progress bar."""

    with reporter.task(f"copying {dest.name}", total=Path(src).stat().st_size, unit="bytes") as task:
        with open(src, "rb") as fin, atomic_output(dest) as fout:
            while chunk := fin.read(1 << 20):
                fout.write(chunk)
                task.advance(len(chunk))


def _check_against(existing: list[IndexEntry], new: IndexEntry) -> str:
    """'added' or 'unchanged'; ``InvalidPackageError`` when the release exists with other bytes."""
    for e in existing:
        if e.name == new.name and e.meta.parsed_version == new.meta.parsed_version:
            if e.sha256 == new.sha256:
                return "unchanged"
            raise InvalidPackageError(
                f"{new.meta.id} is already published with different content ({e.filename}, sha256 {e.sha256[:12]}…)",
                "releases are immutable: bump the version in llmos.toml and build again",
            )
    return "added"


def _require_signing_kept(previous_sig: bytes | None, sign_key: Path | None, target: str, reporter: Reporter) -> None:

    if previous_sig is None:
        return
    old_ids = signature_key_ids(previous_sig)
    if sign_key is None:
        raise TrustError(
            f"the index of {target} is signed (key {', '.join(old_ids) or '?'}); publishing without --sign would drop the signature",
            "pass --sign KEY with the registry's key; clients that pin it would refuse an unsigned index",
        )
    new_id = key_id_of_private(sign_key)
    if old_ids and new_id not in old_ids:
        reporter.warn(
            f"{target} was signed by key {', '.join(old_ids)}, now by {new_id}: "
            "clients that pinned the old key will refuse the new index until they pin the new one"
        )


def publish(
    archives: list[Path],
    to: str,
    *,
    sign_key: Path | None = None,
    expires_days: int | None = None,
    simulate: bool = False,
    reporter: Reporter = NullReporter(),
) -> PublishResult:
    """Add ``archives`` to the registry ``to`` (a folder, or ``hf://owner/repo[@branch]``)."""
    if expires_days is not None and expires_days <= 0:
        raise UsageError(f"--expires-days must be positive, not {expires_days}")
    opened = _open_archives([Path(a) for a in archives], reporter)
    if to.lower().startswith("hf://"):
        return _publish_hub(opened, to, sign_key, expires_days, simulate, reporter)
    if "://" in to:
        raise UsageError(f"cannot publish to {to!r}", "publish to a folder (serve it over HTTP as it is) or to hf://owner/repo")
    return _publish_dir(opened, Path(to).expanduser(), sign_key, expires_days, simulate, reporter)


# ---------------------------------------------------------------- folder


def _publish_dir(
    opened: list[tuple[Path, Any, IndexEntry]],
    root: Path,
    sign_key: Path | None,
    expires_days: int | None,
    simulate: bool,
    reporter: Reporter,
) -> PublishResult:
    from filelock import FileLock

    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} is not a folder")
    result = PublishResult(str(root), simulate=simulate, signed=sign_key is not None)
    added: list[Path] = []
    try:
        if not simulate:
            root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(root / LOCK_NAME)) if not simulate else None
        if lock is not None:
            lock.acquire()
        try:
            index_file, sig_file = root / INDEX_NAME, root / (INDEX_NAME + SIG_SUFFIX)
            old = Index.from_bytes(index_file.read_bytes(), str(index_file)) if index_file.is_file() else None
            _require_signing_kept(sig_file.read_bytes() if sig_file.is_file() else None, sign_key, str(root), reporter)
            for src, _arch, entry in opened:
                status = _check_against(old.entries if old else [], entry)
                listed = [e for e in (old.entries if old else []) if e.sha256 == entry.sha256]
                if status == "unchanged" and not any((root / e.filename).is_file() for e in listed):
                    status = "added"  # indexed, but its file went missing: put it back
                dest = root / entry.filename
                if status == "added" and dest.exists():
                    raise InvalidPackageError(f"{dest} exists but is not indexed", f"run `llmos index {root}` first, or move it away")
                result.packages.append(Published(entry.name, entry.version, entry.filename, entry.sha256, entry.size, status))
                if status == "added" and not simulate:
                    copy_file(src, dest, reporter)
                    added.append(dest)
            if simulate:
                result.index_version = (old.version if old else 0) + 1
            else:
                result.index_version = write_index(root, sign_key=sign_key, expires_days=expires_days, reporter=reporter).version
        except BaseException:
            for p in added:  # the index was not rewritten: take the new archives out again
                p.unlink(missing_ok=True)
            raise
        finally:
            if lock is not None:
                lock.release()
    except OSError as exc:
        raise from_os_error(exc, f"publishing to {root}") from exc
    return result


# ---------------------------------------------------------------- Hugging Face Hub


def _publish_hub(
    opened: list[tuple[Path, Any, IndexEntry]],
    to: str,
    sign_key: Path | None,
    expires_days: int | None,
    simulate: bool,
    reporter: Reporter,
) -> PublishResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    loc = hub.HubLocation.parse(to)
    result = PublishResult(str(loc), simulate=simulate, signed=sign_key is not None)
    api = HfApi(endpoint=hub.endpoint())
    with hub.hub_errors(f"publishing to {loc}"):
        info = api.repo_info(loc.repo_id, repo_type=loc.repo_type, revision=loc.revision or "main")
        head = info.sha
        pinned = hub.HubLocation(loc.repo_id, loc.repo_type, head)
        old_raw_path = hub.hub_download(pinned, INDEX_NAME, reporter=reporter, missing_ok=True)
        old_sig_path = hub.hub_download(pinned, INDEX_NAME + SIG_SUFFIX, reporter=reporter, missing_ok=True)
    old = Index.from_bytes(old_raw_path.read_bytes(), f"{loc} {INDEX_NAME}") if old_raw_path else None
    _require_signing_kept(old_sig_path.read_bytes() if old_sig_path else None, sign_key, str(loc), reporter)
    entries = list(old.entries) if old else []
    ops: list[Any] = []
    for src, _arch, entry in opened:
        status = _check_against(entries, entry)
        result.packages.append(Published(entry.name, entry.version, entry.filename, entry.sha256, entry.size, status))
        if status == "added":
            entries.append(entry)
            ops.append(CommitOperationAdd(path_in_repo=entry.filename, path_or_fileobj=str(src)))
    now = datetime.now(UTC)
    index = Index(
        INDEX_SCHEMA,
        utc_iso(now),
        (old.version if old else 0) + 1,
        utc_iso(now + timedelta(days=expires_days)) if expires_days is not None else None,
        sorted(entries, key=lambda e: (e.name, e.meta.parsed_version)),
    )
    result.index_version = index.version
    if simulate:
        return result
    raw = index.to_bytes()
    ops.append(CommitOperationAdd(path_in_repo=INDEX_NAME, path_or_fileobj=raw))
    if sign_key is not None:
        ops.append(CommitOperationAdd(path_in_repo=INDEX_NAME + SIG_SUFFIX, path_or_fileobj=sign_index(raw, sign_key)))
    elif old_sig_path is not None:
        ops.append(CommitOperationDelete(path_in_repo=INDEX_NAME + SIG_SUFFIX))
    names = ", ".join(p.filename for p in result.packages if p.status == "added") or "no new archives"
    with hub.hub_errors(f"publishing to {loc}"):
        commit = api.create_commit(
            loc.repo_id,
            ops,
            commit_message=f"llmos publish: {names} (index version {index.version})",
            repo_type=loc.repo_type,
            revision=loc.revision or "main",
            parent_commit=head,
        )
    result.commit = commit.oid
    return result
