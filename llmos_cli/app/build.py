"""``llmos build``: turn a package source folder into a deterministic archive.

The archive format and its safe reader live in ``llmos_cli.pkg.archive``;
this module collects the payload (``.llmosignore``, junk filtering), adds the
knowledge indexer's generated artifacts, checks the folder as ``llmos check``
does, hashes every file and writes ``<name>_<version>.llmos``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from llmos_cli.app.check import check_source_files
from llmos_cli.errors import InvalidPackageError, NotFoundError, from_os_error
from llmos_cli.fileio import atomic_output
from llmos_cli.gguf_info import read_header
from llmos_cli.knowledge import indexer
from llmos_cli.pkg.archive import (
    ARCHIVE_SUFFIX,
    GENERATED_DIR,
    GZIP_LEVEL,
    archive_filename,
)
from llmos_cli.pkg.external import ExternalPayload
from llmos_cli.pkg.manifest import MANIFEST_NAME, FileRecord, Finding, Manifest, load_manifest, raise_for, safe_relpath
from llmos_cli.pkg.payload import SourceFile, collect_payload
from llmos_cli.progress import NullReporter, Reporter

#: ``[archive] compression``: ``auto`` (default) stores incompressible payloads (GGUF weights...) uncompressed
COMPRESSIONS = ("auto", "gzip", "none")
#: a sample that gzip shrinks by less than this is "incompressible"
_INCOMPRESSIBLE = 0.9
_SAMPLE = 256 << 10
#: tar's copy buffer (the default 16 KiB makes a multi-gigabyte member crawl)
COPY_BUFSIZE = 4 << 20


def _looks_incompressible(f: SourceFile) -> bool:
    """GGUF files, and files whose first 256 KiB gzip shrinks by less than 10%."""
    if f.path is None:
        return False
    try:
        with open(f.path, "rb") as fh:
            sample = fh.read(_SAMPLE)
    except OSError:
        return False
    if sample[:4] == b"GGUF":
        return True
    return len(sample) >= 4096 and len(zlib.compress(sample, 1)) > _INCOMPRESSIBLE * len(sample)


def choose_compression(manifest: Manifest, payload: list[SourceFile], sizes: dict[str, int]) -> str:
    """``gzip`` or ``none`` for the whole archive (``[archive] compression``; ``auto`` decides by content).

    ``auto``: ``none`` when incompressible files (GGUF, already-compressed data) make up
    more than half of the payload's bytes -- gzip would spend minutes on a few percent.
    """
    asked = manifest.archive.compression
    if asked not in COMPRESSIONS:
        raise InvalidPackageError(f"archive.compression must be one of {', '.join(COMPRESSIONS)}, not {asked!r}")
    if asked != "auto":
        return str(asked)
    total = sum(sizes.values())
    big = sum(sizes[f.rel] for f in payload if sizes[f.rel] >= (1 << 20) and _looks_incompressible(f))
    return "none" if total and big * 2 > total else "gzip"


def _source_date_epoch() -> int:
    try:
        return max(0, int(os.environ.get("SOURCE_DATE_EPOCH", "0")))
    except ValueError:
        return 0


def _generated_artifacts(manifest: Manifest, src: Path) -> dict[str, bytes]:
    """The knowledge indexer's build artifacts (search index...)."""
    out = indexer.build_artifacts(manifest, src) or {}
    for rel, data in out.items():
        if safe_relpath(rel) != rel or not rel.startswith(GENERATED_DIR + "/"):
            raise InvalidPackageError(f"build artifact {rel!r} must be a relative path under {GENERATED_DIR}/")
        if not isinstance(data, (bytes, bytearray)):
            raise InvalidPackageError(f"build artifact {rel!r} is not bytes")
    return dict(out)


# ---------------------------------------------------------------- building


@dataclass
class BuildResult:
    path: Path
    name: str
    version: str
    kind: str
    sha256: str
    size: int
    files: int
    warnings: list[str] = field(default_factory=list)
    #: ``gzip`` or ``none`` (a plain tar: the payload is mostly incompressible)
    compression: str = "gzip"
    #: [[payload]] paths declared by hash and left out of the archive
    external: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "sha256": self.sha256,
            "size": self.size,
            "files": self.files,
            "compression": self.compression,
            "external": self.external,
        }


class _ThreadedHash:
    """sha256 in a worker thread: ``hashlib`` releases the GIL, so hashing overlaps the caller's reads and writes."""

    DEPTH = 8

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="llmos-hash")
        self._pending: deque[Future[None]] = deque()

    def update(self, data: bytes) -> None:
        self._pending.append(self._pool.submit(self.h.update, data))
        if len(self._pending) > self.DEPTH:
            self._pending.popleft().result()

    def hexdigest(self) -> str:
        while self._pending:
            self._pending.popleft().result()
        self._pool.shutdown()
        return self.h.hexdigest()


def _sha256_file(path: Path, progress: Any = None) -> tuple[str, int]:
    """sha256 and size of ``path``, reading in 4 MiB chunks while the previous ones are hashed."""
    th = _ThreadedHash()
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(COPY_BUFSIZE):
            th.update(chunk)
            n += len(chunk)
            if progress is not None:
                progress(len(chunk))
    return th.hexdigest(), n


class _HashingWriter(io.RawIOBase):
    """Writes to ``fh`` and hashes what it wrote (in a worker thread: ``_ThreadedHash``)."""

    def __init__(self, fh: BinaryIO):
        self.fh = fh
        self.h = _ThreadedHash()
        self.n = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.n

    def write(self, b: Any) -> int:  # type: ignore[override]
        data = b if isinstance(b, bytes) else bytes(b)  # the worker must see bytes nobody reuses
        self.h.update(data)
        self.fh.write(data)
        self.n += len(data)
        return len(data)


def _model_fields(manifest: Manifest, src: Path, elsewhere: dict[str, Path] | None = None) -> dict[str, Any]:

    rel = (manifest.model.file if manifest.model else None) or ""
    hdr = read_header((elsewhere or {}).get(rel) or src / rel)
    if hdr.is_adapter:
        raise InvalidPackageError(f"model.file {rel}: is a LoRA adapter, not a base model")
    if not hdr.architecture:
        raise InvalidPackageError(f"model.file {rel}: GGUF has no general.architecture")
    out: dict[str, Any] = {"architecture": hdr.architecture, "fingerprint": hdr.fingerprint()}
    if hdr.context_length:
        out["context_length"] = int(hdr.context_length)
    return out


def render_manifest(manifest: Manifest, files: dict[str, FileRecord], model_fields: dict[str, Any] | None = None, compression: str | None = None) -> bytes:
    """The archive's ``llmos.toml``: the source manifest plus ``[files]`` (and model header fields).

    ``compression`` (``gzip`` | ``none``) is recorded as ``[archive] compression``.
    """
    import tomli_w

    data = {k: v for k, v in manifest.raw.items() if k != "files"}
    if model_fields:
        data["model"] = {**data.get("model", {}), **model_fields}
    if compression is not None:
        data["archive"] = {**data.get("archive", {}), "compression": compression}
    data["files"] = {p: {"sha256": r.sha256, "size": r.size} for p, r in sorted(files.items())}
    return tomli_w.dumps(data).encode("utf-8")


def _tarinfo(name: str, size: int, executable: bool, mtime: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = mtime
    ti.mode = 0o755 if executable else 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti


def plan_build(src: Path, reporter: Reporter = NullReporter()) -> tuple[Manifest, list[SourceFile], list[Finding]]:
    """Load and check the source folder; return manifest, payload list and warnings.

    Raises ``InvalidPackageError`` on any error finding (the same checks as
    ``llmos check`` on a folder, minus the base-architecture lookup).
    """
    src = Path(src)
    if not src.is_dir():
        raise NotFoundError(f"{src}: no such folder", "llmos build takes a package source folder holding llmos.toml")
    manifest = load_manifest(src)
    payload = collect_payload(src, reporter)
    findings = check_source_files(manifest, src, {f.rel for f in payload}, find_base=False)
    raise_for(findings, str(src))
    return manifest, payload, [f for f in findings if f.severity != "error"]


def simulate_build(src: Path, reporter: Reporter = NullReporter()) -> dict[str, Any]:
    """``llmos build --simulate``: what would be built (warnings go to ``reporter``), nothing written."""
    manifest, payload, notes = plan_build(src, reporter)
    for f in notes:
        reporter.warn(str(f))
    return {
        "simulated": True,
        "name": manifest.name,
        "version": manifest.version,
        "kind": manifest.kind,
        "filename": archive_filename(manifest.name, manifest.version),
        "files": [f.rel for f in payload],
    }


def _split_external(
    manifest: Manifest, payload: list[SourceFile], elsewhere: dict[str, Path] | None = None
) -> tuple[list[SourceFile], list[tuple[SourceFile, ExternalPayload]]]:
    """Leave ``[[payload]]`` files (declared by hash) out of the archive; local copies are checked against their hash.

    ``elsewhere``: local copies outside the folder (``import-model``), by payload path.
    """
    external = {p.path: p for p in manifest.payloads}
    if not external:
        return payload, []
    local = [(f, external[f.rel]) for f in payload if f.rel in external]
    have = {f.rel for f, _x in local}
    local += [(SourceFile(rel, Path(p)), external[rel]) for rel, p in sorted((elsewhere or {}).items()) if rel in external and rel not in have]
    model_rel = manifest.model.file if manifest.model else None
    if manifest.kind == "model" and model_rel in external and model_rel not in {f.rel for f, _ in local}:
        raise InvalidPackageError(
            f"model.file {model_rel} is declared by hash ([[payload]]) but is not in the folder",
            "put the file there: build reads its GGUF header (the file is still left out of the archive)",
        )
    return [f for f in payload if f.rel not in external], local


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def _hash_all(payload: list[SourceFile], task: Any, stamps: dict[str, tuple[int, int, int]]) -> None:
    """Hash every file once; ``stamps`` keeps (size, mtime, inode) so pass 2 can tell a file changed without hashing it again."""
    for f in payload:
        if f.data is not None:
            f.record = FileRecord(hashlib.sha256(f.data).hexdigest(), len(f.data))
            task.advance(f.record.size)
            continue
        assert f.path is not None
        try:
            before = _stamp(f.path)
            digest, size = _sha256_file(f.path, task.advance)
            stamps[f.rel] = _stamp(f.path)
        except OSError as exc:
            raise from_os_error(exc, f"reading {f.path}") from exc
        if stamps[f.rel] != before:
            raise InvalidPackageError(f"{f.rel} changed while it was being hashed", "build again")
        f.record = FileRecord(digest, size)


def build_package(
    src: Path,
    out: Path | None = None,
    reporter: Reporter = NullReporter(),
    *,
    payload_files: dict[str, Path] | None = None,
    hashed: bool = False,
) -> BuildResult:
    """Build ``src`` into ``out``; deterministic.

    ``out`` is a folder (default: the current one; created if missing) that
    receives ``<name>_<version>.llmos``, or a file path ending in ``.llmos``.
    The archive is a gzip-compressed tar, or a plain tar when its payload is
    mostly incompressible (``choose_compression``); files declared by hash in
    ``[[payload]]`` are left out (``llmos install`` fetches them from their origins);
    a local copy, in the folder or in ``payload_files`` (payload path -> file), is
    checked against the declared hash (unless ``hashed``: the caller just hashed it)
    and a model's GGUF header is read from it.
    """
    src = Path(src).resolve()
    manifest, payload, notes = plan_build(src, reporter)
    for note in notes:
        reporter.warn(str(note))
    payload, external = _split_external(manifest, payload, payload_files)
    for rel, data in sorted(_generated_artifacts(manifest, src).items()):
        payload.append(SourceFile(rel, None, data=bytes(data)))
    payload.sort(key=lambda f: f.rel)
    rels = [f.rel for f in payload]
    if len(set(rels)) != len(rels):
        raise InvalidPackageError("duplicate payload paths in the build (a generated artifact shadows a source file)")

    # pass 1: hash every payload file (the manifest goes first in the archive)
    stamps: dict[str, tuple[int, int, int]] = {}
    sizes = {f.rel: (f.path.stat().st_size if f.path else len(f.data or b"")) for f in payload}
    total = sum(sizes.values())
    with reporter.task(f"hashing {manifest.name}", total=total + sum(x.size for _f, x in external), unit="bytes") as task:
        _hash_all(payload, task, stamps)
        if hashed:  # the caller has just hashed them (import-model): trust the declared records
            for f, x in external:
                f.record = FileRecord(x.sha256, x.size)
        else:
            _hash_all([f for f, _x in external], task, {})
    for f, x in external:
        assert f.record is not None
        if (f.record.sha256, f.record.size) != (x.sha256, x.size):
            raise InvalidPackageError(
                f"{f.rel}: the file in the folder is not the one [[payload]] declares (sha256 {f.record.sha256[:12]}…, {f.record.size} bytes)",
                f"fix payload.sha256/size (sha256 {f.record.sha256}, size {f.record.size}), or replace the file",
            )
    files = {f.rel: f.record for f in payload if f.record is not None}
    model_fields = _model_fields(manifest, src, {f.rel: f.path for f, _x in external if f.path is not None}) if manifest.kind == "model" else None
    compression = choose_compression(manifest, payload, sizes)
    manifest_bytes = render_manifest(manifest, files, model_fields, compression)

    if out is None:
        out = Path.cwd()
    out = Path(out)
    # a folder (existing, or any path not ending in .llmos) gets <name>_<version>.llmos
    is_file = out.name.endswith(ARCHIVE_SUFFIX) and not out.is_dir()
    target = out if is_file else out / archive_filename(manifest.name, manifest.version)
    mtime = _source_date_epoch()

    # pass 2: write the archive; a file must not change under us (size, mtime and inode as in pass 1)
    with atomic_output(target) as raw, reporter.task(f"packing {target.name}", total=total, unit="bytes") as task:
        hw = _HashingWriter(raw)
        if compression == "gzip":
            with gzip.GzipFile(filename="", mode="wb", fileobj=hw, compresslevel=GZIP_LEVEL, mtime=0) as gz:
                _write_tar(gz, manifest_bytes, payload, mtime, task, stamps)
        else:
            _write_tar(hw, manifest_bytes, payload, mtime, task, stamps)  # member data moves in COPY_BUFSIZE chunks
        size, digest = hw.n, hw.h.hexdigest()
    return BuildResult(
        path=target,
        name=manifest.name,
        version=manifest.version,
        kind=manifest.kind,
        sha256=digest,
        size=size,
        files=len(payload),
        warnings=[str(f) for f in notes],
        compression=compression,
        external=[x.path for _f, x in external],
    )


def _write_tar(fileobj: Any, manifest_bytes: bytes, payload: list[SourceFile], mtime: int, task: Any, stamps: dict[str, tuple[int, int, int]]) -> None:
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.copybufsize = COPY_BUFSIZE  # type: ignore[attr-defined]  # exists since Python 3.8, missing from typeshed
        tar.addfile(_tarinfo(MANIFEST_NAME, len(manifest_bytes), False, mtime), io.BytesIO(manifest_bytes))
        for f in payload:
            rec = f.record
            assert rec is not None
            ti = _tarinfo(f.rel, rec.size, f.executable, mtime)
            if f.data is not None:
                tar.addfile(ti, io.BytesIO(f.data))
            else:
                assert f.path is not None
                with open(f.path, "rb") as fh:
                    try:
                        tar.addfile(ti, fh)
                    except OSError as exc:
                        if "unexpected end of data" in str(exc):
                            raise InvalidPackageError(f"{f.rel} changed while it was being packed") from None
                        raise
                    st = os.fstat(fh.fileno())
                    if (st.st_size, st.st_mtime_ns, st.st_ino) != stamps.get(f.rel) or fh.read(1):
                        raise InvalidPackageError(f"{f.rel} changed while it was being packed", "build again")
            task.advance(rec.size)
