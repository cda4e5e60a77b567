"""Content-addressed store of installed payload files.

Every installed file lives once at ``$LLMOS_HOME/store/<sha[:2]>/<sha256>``,
read-only (0444), whatever package or version references it.  The ``files``
table of the state database says which package path maps to which blob; a
blob that no row references is garbage and ``gc`` deletes it.

Writes are atomic: a blob is streamed into a unique temp file under
``paths.staging`` while it is hashed, compared with the expected hash and
size, fsynced, and only then moved into place with ``os.replace``.  A blob
path therefore either does not exist or holds exactly the bytes its name
promises (unless someone edits it behind llmos' back, which ``verify_blob``
detects).  A temp file left by a killed process is removed by
``clean_staging`` during recovery.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from llmos_cli.errors import IntegrityError, from_os_error
from llmos_cli.fileio import fsync_dir, sha256_file
from llmos_cli.paths import Paths
from llmos_cli.pkg.meta import FileRecord

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


def _check_sha(sha: str) -> str:
    if not isinstance(sha, str) or not _SHA_RE.match(sha):
        raise IntegrityError(f"not a sha256 digest: {sha!r}")
    return sha


_FICLONE = 0x40049409  # linux/fs.h: clone a whole file (btrfs, XFS, bcachefs...)


def _link_into(src: Path, final: Path, staging: Path) -> str | None:
    """Reflink, else hard-link ``src`` to ``final`` (through a temp name in staging); None when neither works."""
    try:
        staging.mkdir(parents=True, exist_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise from_os_error(exc, "preparing the store") from exc
    tmp = staging / f"{final.name[:16]}.{os.getpid()}.{uuid.uuid4().hex[:8]}.link"
    how = None
    try:
        import fcntl

        with open(src, "rb") as s, open(tmp, "xb") as d:
            fcntl.ioctl(d.fileno(), _FICLONE, s.fileno())
        os.chmod(tmp, 0o444)
        how = "reflink"
    except (OSError, ImportError):
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)  # shares the inode: the mode is left as the owner set it
            how = "hardlink"
        except OSError:
            return None
    try:
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise from_os_error(exc, "writing into the store") from exc
    return how


class Store:
    """``Store(paths).path_for(sha)`` is where an installed file's bytes are."""

    def __init__(self, paths: Paths):
        self.paths = paths
        self.root = paths.store
        self.staging = paths.staging

    # ------------------------------------------------------------ lookup

    def path_for(self, sha: str) -> Path:
        sha = _check_sha(sha)
        return self.root / sha[:2] / sha

    def has(self, sha: str) -> bool:
        return self.path_for(sha).is_file()

    def iter_blobs(self) -> Iterator[str]:
        """Every blob digest present in the store (temp files and junk are skipped)."""
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for f in sorted(sub.iterdir()):
                if _SHA_RE.match(f.name) and f.name[:2] == sub.name:
                    yield f.name

    # ------------------------------------------------------------ writing

    def add_stream(
        self,
        fileobj: IO[bytes],
        expected,
        *,
        progress: Callable[[int], None] | None = None,
        durable: bool = True,
    ) -> str:
        """Copy ``fileobj`` into the store, verifying it against ``expected``.

        ``expected`` is a ``FileRecord`` (``sha256``, ``size``).  Raises
        ``IntegrityError`` (and leaves nothing behind) when the bytes differ,
        ``IOFailure`` on no space / no permission.  Returns the digest.
        ``durable=False`` leaves the fsyncs to the caller, who must make the
        blob durable before anything refers to it (``state/unpack.py`` does,
        once per archive).
        """
        sha = _check_sha(expected.sha256)
        size = int(expected.size)
        final = self.path_for(sha)
        try:
            if final.is_file() and final.stat().st_size == size:
                if progress:
                    progress(size)
                return sha  # already stored: same content is kept once
            self.staging.mkdir(parents=True, exist_ok=True)
            tmp = self.staging / f"{sha[:16]}.{os.getpid()}.{uuid.uuid4().hex[:8]}.incomplete"
        except OSError as exc:
            raise from_os_error(exc, "preparing the store") from exc
        h = hashlib.sha256()
        n = 0
        try:
            try:
                with open(tmp, "xb") as out:
                    while True:
                        chunk = fileobj.read(CHUNK)
                        if not chunk:
                            break
                        n += len(chunk)
                        if n > size:
                            raise IntegrityError(
                                f"file is larger than its recorded size {size} (expected sha256 {sha[:12]}...)",
                                "the package is corrupt or was tampered with",
                            )
                        h.update(chunk)
                        out.write(chunk)
                        if progress:
                            progress(len(chunk))
                    out.flush()
                    if durable:
                        os.fsync(out.fileno())
                got = h.hexdigest()
                if n != size or got != sha:
                    raise IntegrityError(
                        f"hash mismatch: expected sha256 {sha[:12]}... ({size} bytes), got {got[:12]}... ({n} bytes)",
                        "the package is corrupt or was tampered with",
                    )
                os.chmod(tmp, 0o444)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
                if durable:
                    fsync_dir(final.parent)
            except OSError as exc:
                raise from_os_error(exc, "writing into the store") from exc
        except BaseException:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        return sha

    def add_file(self, path: Path, expected, *, link: bool, verified: bool = False, progress: Callable[[int], None] | None = None) -> str:
        """Put a local file into the store without copying its bytes when ``link``.

        ``link``: a reflink (copy-on-write clone) or, failing that, a hard link when
        ``path`` is on the store's file system; otherwise (or when both fail) a
        hash-verified copy (``add_stream``).  A linked file is hashed first unless
        ``verified`` (the caller just hashed it while writing it).  Returns how the
        blob came: ``present``, ``reflink``, ``hardlink`` or ``copy``.
        """
        sha = _check_sha(expected.sha256)
        final = self.path_for(sha)
        if final.is_file() and final.stat().st_size == int(expected.size):
            return "present"
        if link:
            if not verified:
                try:
                    got, n = sha256_file(path)
                except OSError as exc:
                    raise from_os_error(exc, f"reading {path}") from exc
                if got != sha or n != int(expected.size):
                    raise IntegrityError(f"{path}: sha256/size differ from what was expected ({sha[:12]}..., {expected.size} bytes)")
            how = _link_into(Path(path), final, self.staging)
            if how:
                return how
        with open(path, "rb") as fh:
            self.add_stream(fh, expected, progress=progress)
        return "copy"

    def add_bytes(self, data: bytes) -> str:
        """Store ``data`` (its digest is computed); handy for tests and small files."""
        import io

        return self.add_stream(io.BytesIO(data), FileRecord(hashlib.sha256(data).hexdigest(), len(data)))

    # ------------------------------------------------------------ checking

    def hash_blob(self, sha: str) -> str | None:
        """The actual sha256 of the blob's bytes, or None when it is missing."""
        p = self.path_for(sha)
        h = hashlib.sha256()
        try:
            with open(p, "rb") as f:
                while True:
                    chunk = f.read(CHUNK)
                    if not chunk:
                        break
                    h.update(chunk)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise from_os_error(exc, f"reading {p}") from exc
        return h.hexdigest()

    def verify_blob(self, sha: str) -> bool:
        return self.hash_blob(sha) == sha

    # ------------------------------------------------------------ cleaning

    def gc(self, referenced: set[str], *, on_delete: Callable[[str], None] | None = None) -> int:
        """Delete every blob not in ``referenced``; return how many were deleted.

        Call it only while holding the state lock and after the database
        commit that dropped the references.
        """
        removed = 0
        touched: set[Path] = set()
        try:
            for sha in list(self.iter_blobs()):
                if sha in referenced:
                    continue
                p = self.path_for(sha)
                try:
                    p.unlink()
                except FileNotFoundError:
                    continue
                removed += 1
                touched.add(p.parent)
                if on_delete:
                    on_delete(sha)
            for d in touched:
                try:
                    d.rmdir()  # only succeeds when empty
                except OSError:
                    fsync_dir(d)
            if touched:
                fsync_dir(self.root)
        except OSError as exc:
            raise from_os_error(exc, "cleaning the store") from exc
        return removed

    def clean_staging(self) -> int:
        """Remove temp files left in staging (by a killed process); return the count."""
        if not self.staging.is_dir():
            return 0
        n = 0
        try:
            for p in self.staging.iterdir():
                if p.is_dir() and not p.is_symlink():
                    import shutil

                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                n += 1
        except OSError as exc:
            raise from_os_error(exc, "cleaning the staging folder") from exc
        return n
