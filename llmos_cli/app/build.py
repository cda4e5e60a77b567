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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from llmos_cli.app.check import check_source_files
from llmos_cli.errors import InvalidPackageError, NotFoundError, from_os_error
from llmos_cli.fileio import atomic_output, sha256_file
from llmos_cli.gguf_info import read_header
from llmos_cli.knowledge import indexer
from llmos_cli.pkg.archive import (
    ARCHIVE_SUFFIX,
    GENERATED_DIR,
    GZIP_LEVEL,
    _HashingReader,
    archive_filename,
)
from llmos_cli.pkg.manifest import MANIFEST_NAME, FileRecord, Finding, Manifest, load_manifest, raise_for, safe_relpath
from llmos_cli.pkg.payload import SourceFile, collect_payload
from llmos_cli.progress import NullReporter, Reporter


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

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "sha256": self.sha256,
            "size": self.size,
            "files": self.files,
        }


class _HashingWriter(io.RawIOBase):
    def __init__(self, fh: BinaryIO):
        self.fh = fh
        self.h = hashlib.sha256()
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:  # type: ignore[override]
        mv = memoryview(b)
        self.h.update(mv)
        self.fh.write(mv)
        self.n += len(mv)
        return len(mv)


def _model_fields(manifest: Manifest, src: Path) -> dict[str, Any]:

    rel = manifest.section("model").get("file")
    hdr = read_header(src / rel)
    if hdr.is_adapter:
        raise InvalidPackageError(f"model.file {rel}: is a LoRA adapter, not a base model")
    if not hdr.architecture:
        raise InvalidPackageError(f"model.file {rel}: GGUF has no general.architecture")
    out: dict[str, Any] = {"architecture": hdr.architecture, "fingerprint": hdr.fingerprint()}
    if hdr.context_length:
        out["context_length"] = int(hdr.context_length)
    return out


def render_manifest(manifest: Manifest, files: dict[str, FileRecord], model_fields: dict[str, Any] | None = None) -> bytes:
    """The archive's ``llmos.toml``: the source manifest plus ``[files]`` (and model header fields)."""
    import tomli_w

    data = {k: v for k, v in manifest.raw.items() if k != "files"}
    if model_fields:
        data["model"] = {**data.get("model", {}), **model_fields}
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


def build_package(src: Path, out: Path | None = None, reporter: Reporter = NullReporter()) -> BuildResult:
    """Build ``src`` into ``out``; deterministic.

    ``out`` is a folder (default: the current one; created if missing) that
    receives ``<name>_<version>.llmos``, or a file path ending in ``.llmos``.
    """
    src = Path(src).resolve()
    manifest, payload, notes = plan_build(src, reporter)
    for f in notes:
        reporter.warn(str(f))
    for rel, data in sorted(_generated_artifacts(manifest, src).items()):
        payload.append(SourceFile(rel, None, data=bytes(data)))
    payload.sort(key=lambda f: f.rel)
    rels = [f.rel for f in payload]
    if len(set(rels)) != len(rels):
        raise InvalidPackageError("duplicate payload paths in the build (a generated artifact shadows a source file)")

    # pass 1: hash every payload file (the manifest goes first in the archive)
    total = sum((f.path.stat().st_size if f.path else len(f.data or b"")) for f in payload)
    with reporter.task(f"hashing {manifest.name}", total=total, unit="bytes") as task:
        for f in payload:
            if f.data is not None:
                f.record = FileRecord(hashlib.sha256(f.data).hexdigest(), len(f.data))
            else:
                assert f.path is not None
                try:
                    digest, size = sha256_file(f.path)
                except OSError as exc:
                    raise from_os_error(exc, f"reading {f.path}") from exc
                f.record = FileRecord(digest, size)
            task.advance(f.record.size)
    files = {f.rel: f.record for f in payload if f.record is not None}
    model_fields = _model_fields(manifest, src) if manifest.kind == "model" else None
    manifest_bytes = render_manifest(manifest, files, model_fields)

    if out is None:
        out = Path.cwd()
    out = Path(out)
    # a folder (existing, or any path not ending in .llmos) gets <name>_<version>.llmos
    is_file = out.name.endswith(ARCHIVE_SUFFIX) and not out.is_dir()
    target = out if is_file else out / archive_filename(manifest.name, manifest.version)
    mtime = _source_date_epoch()

    # pass 2: write the archive (re-hashing each file: it must not change under us)
    with atomic_output(target) as raw, reporter.task(f"packing {target.name}", total=total, unit="bytes") as task:
        hw = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=hw, compresslevel=GZIP_LEVEL, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
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
                            hr = _HashingReader(fh, limit=rec.size)
                            try:
                                tar.addfile(ti, hr)  # type: ignore[arg-type]
                            except OSError as exc:
                                if "unexpected end of data" in str(exc):
                                    raise InvalidPackageError(f"{f.rel} changed while it was being packed") from None
                                raise
                            if hr.h.hexdigest() != rec.sha256 or fh.read(1):
                                raise InvalidPackageError(f"{f.rel} changed while it was being packed", "build again")
                    task.advance(rec.size)
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
    )
