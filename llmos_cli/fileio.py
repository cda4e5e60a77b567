"""File helpers shared by every layer: atomic writes and file hashing.

Nothing here knows about packages.  Write a temp file in the destination's
folder, fsync it, then ``os.replace`` it into place, so an interrupted write
never leaves a half file where the final one lives.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from llmos_cli.errors import from_os_error

CHUNK = 1 << 20


def sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (best effort where unsupported)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` atomically: temp file in the same folder, fsync, ``os.replace``.

    On any exception the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise from_os_error(exc, f"writing {path}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise from_os_error(exc, f"writing {path}") from exc
        raise
    fsync_dir(path.parent)  # make the rename itself durable


def write_atomic(path: Path, data: bytes) -> None:
    with atomic_output(path) as fh:
        fh.write(data)


@contextmanager
def atomic_path(path: Path, suffix: str = ".incomplete") -> Iterator[Path]:
    """For writers that want a file *name* (GGUF writers, SQLite): yield a temp path beside
    ``path``; when the block ends without error the file is fsynced and renamed onto ``path``.

    On any exception the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise from_os_error(exc, f"writing {path}") from exc
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise from_os_error(exc, f"writing {path}") from exc
        raise


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Build a folder atomically: yield a temp folder beside ``path``, rename it into place.

    An existing ``path`` is replaced only once the new folder is complete; on any
    exception the temp folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise from_os_error(exc, f"writing {path}") from exc
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise from_os_error(exc, f"writing {path}") from exc
        raise
