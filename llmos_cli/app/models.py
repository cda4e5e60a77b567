"""``llmos import-model``: a local GGUF becomes an installed model package.

``import_model(file, name, version)`` hashes the GGUF once and writes a model
package whose manifest declares the GGUF by hash (``[[payload]]``, origin
``file:///path/to/the.gguf``) instead of carrying it: the archive in the local
registry ``$LLMOS_HOME/local-registry`` holds only the manifest.  It re-indexes
that registry, adds it as source ``local`` (trusted, unsigned) if missing,
refreshes it and installs the package with ``app.install.install``, which puts
the GGUF into the store: copied once while hashed, or with ``link=True``
(``--link``) hard-linked or reflinked after hashing, no copy at all.  The
model is never copied more than once.  The first model imported becomes the
default.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos_cli.app import install as ops
from llmos_cli.app.build import _ThreadedHash, build_package
from llmos_cli.errors import InvalidPackageError, NotFoundError, UsageError, from_os_error
from llmos_cli.fileio import sha256_file
from llmos_cli.gguf_info import read_header
from llmos_cli.paths import Paths, get_paths
from llmos_cli.pkg.archive import archive_filename
from llmos_cli.pkg.meta import RelationError, check_name, parse_version
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.registry import lists, origins
from llmos_cli.registry.download import cache_name
from llmos_cli.registry.index import write_index
from llmos_cli.runtime.models import DEFAULT_MODEL_KEY, LOCAL_SOURCE, LOCAL_SOURCE_PRIORITY, installed_models, local_registry
from llmos_cli.state import transaction as tx
from llmos_cli.state.db import state_lock
from llmos_cli.train.convert import convert_hf_to_gguf

# ---------------------------------------------------------------- import-model

CHUNK = 4 << 20

_NAME_CLEAN = re.compile(r"[^a-z0-9.+-]+")


def suggest_name(path: Path) -> str:
    stem = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.stem
    name = _NAME_CLEAN.sub("-", stem.lower()).strip("-.+")
    return name or "model"


@dataclass
class ImportResult:
    name: str
    version: str
    file: Path
    architecture: str | None
    context_length: int | None
    has_chat_template: bool
    fingerprint: str
    registry: Path
    archive: Path | None = None
    archive_sha256: str | None = None
    sha256: str | None = None
    size: int | None = None
    #: how the GGUF entered the store: copy | hardlink | reflink | present
    stored: str | None = None
    source_added: bool = False
    default_set: bool = False
    simulated: bool = False
    install: Any = None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "file": str(self.file),
            "architecture": self.architecture,
            "context_length": self.context_length,
            "chat_template": self.has_chat_template,
            "fingerprint": self.fingerprint,
            "registry": str(self.registry),
            "archive": str(self.archive) if self.archive else None,
            "archive_sha256": self.archive_sha256,
            "sha256": self.sha256,
            "size": self.size,
            "stored": self.stored,
            "source_added": self.source_added,
            "default_model": self.default_set,
            "simulated": self.simulated,
            "install": self.install.to_json() if self.install is not None and hasattr(self.install, "to_json") else None,
        }


def _manifest_text(name: str, version: str, gguf_name: str, hdr: Any, summary: str | None, license_: str, maintainer: str, payload: dict[str, Any]) -> str:
    import tomli_w

    desc = f"{hdr.architecture} model imported from {gguf_name}"
    data: dict[str, Any] = {
        "schema": 1,
        "package": {
            "name": name,
            "version": version,
            "kind": "model",
            "summary": summary or (f"{hdr.name} ({hdr.architecture})" if hdr.name else desc),
            "description": desc,
            "license": license_,
            "maintainer": maintainer,
        },
        "model": {"file": gguf_name},
        "payload": [payload],
    }
    return tomli_w.dumps(data)


def _hash(path: Path, reporter: Reporter, copy_to: Path | None = None) -> tuple[str, int]:
    """sha256 and size of ``path`` in one read; with ``copy_to``, the bytes are written there too (fsynced)."""
    size = path.stat().st_size
    h = _ThreadedHash()
    label = f"copying {path.name}" if copy_to else f"hashing {path.name}"
    with reporter.task(label, total=size, unit="bytes") as task, open(path, "rb") as fh, ExitStack() as stack:
        out = stack.enter_context(open(copy_to, "xb")) if copy_to else None
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            if out is not None:
                out.write(chunk)
            task.advance(len(chunk))
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
    return h.hexdigest(), size


def _hash_into_cache(src: Path, cache: Path, gguf_name: str, reporter: Reporter) -> tuple[str, int]:
    """One pass over ``src``: hashed and copied into the download cache as ``<sha16>-<name>``, from
    where the install hard-links it into the store (the cache keeps it, like a download)."""
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".import-{os.getpid()}-{gguf_name}.incomplete"
    try:
        sha, size = _hash(src, reporter, copy_to=tmp)
        os.chmod(tmp, 0o444)
        os.replace(tmp, cache / cache_name(sha, gguf_name))
    finally:
        tmp.unlink(missing_ok=True)
    return sha, size


def import_model(
    file: str | Path,
    *,
    name: str | None = None,
    version: str = "1.0.0",
    summary: str | None = None,
    license: str = "unknown",
    maintainer: str = "local import",
    simulate: bool = False,
    reporter: Reporter | None = None,
    confirm: Callable[[Any], None] | None = None,
    paths: Paths | None = None,
    link: bool = False,
    adopt: bool = False,
) -> ImportResult:
    """Turn a local GGUF into a model package in the local registry and install it.

    ``link``: hard-link (or reflink) the GGUF into the store after hashing it, when it
    is on the store's file system (otherwise it is copied); the file must then not be
    edited in place (``llmos verify`` would report it).  ``adopt``: ``file`` is a
    temporary file llmos wrote (``--from-hf``): it is moved into the local registry's
    blob folder (``blobs/sha256/<sha>``) and linked into the store from there.
    """
    rep = reporter or NullReporter()
    paths = paths or get_paths()
    src = Path(file).expanduser()
    if not src.exists():
        raise NotFoundError(f"no such file: {file}")
    if src.is_dir():
        raise UsageError(f"{file} is a folder", "name the .gguf file itself")
    hdr = read_header(src)  # InvalidPackageError on junk or truncated files
    if hdr.is_adapter:
        raise InvalidPackageError(f"{src.name} is a LoRA adapter, not a model", "package it as a library's [adapter] instead")
    if not hdr.architecture:
        raise InvalidPackageError(f"{src.name}: the GGUF has no general.architecture")
    if not hdr.tensors:
        raise InvalidPackageError(f"{src.name}: the GGUF holds no tensors (a vocabulary-only file?)")
    name = name or suggest_name(src)
    try:
        check_name(name)
        parse_version(version)
    except RelationError as exc:
        raise UsageError(str(exc)) from None
    if not license.strip() or not maintainer.strip():
        raise UsageError("--license and --maintainer must not be empty")

    registry = local_registry(paths)
    result = ImportResult(
        name=name,
        version=version,
        file=src.resolve(),
        architecture=hdr.architecture,
        context_length=hdr.context_length,
        has_chat_template=bool(hdr.chat_template),
        fingerprint=hdr.fingerprint(),
        registry=registry,
        simulated=simulate,
    )
    if simulate:
        return result

    with state_lock(paths, "import-model"):
        try:
            registry.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, f"creating {registry}") from exc
        target = registry / archive_filename(name, version)
        gguf_name = src.name if src.name.lower().endswith(".gguf") else f"{src.name}.gguf"
        try:  # the one full read: hashed (--link), or hashed while copied into the download cache
            sha, size = _hash(src, rep) if link or adopt else _hash_into_cache(src, paths.cache, gguf_name, rep)
        except OSError as exc:
            raise from_os_error(exc, f"reading {src}") from exc
        result.sha256, result.size = sha, size
        if adopt:  # keep the written GGUF where the local source serves blobs: reinstalls need it
            kept = registry / origins.BLOB_DIR / sha
            try:
                kept.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, kept)
            except OSError as exc:
                raise from_os_error(exc, f"keeping {src.name} in {registry}") from exc
            src, link = kept, True
        payload = {"path": gguf_name, "sha256": sha, "size": size, "origins": [src.resolve().as_uri()]}
        with tempfile.TemporaryDirectory(prefix=".import-", dir=registry) as td:
            folder = Path(td) / f"{name}-{version}"
            folder.mkdir()
            try:
                (folder / "llmos.toml").write_text(_manifest_text(name, version, gguf_name, hdr, summary, license, maintainer, payload))
            except OSError as exc:
                raise from_os_error(exc, f"preparing the package of {src.name}") from exc
            staged = Path(td) / archive_filename(name, version)
            built = build_package(folder, staged, rep, payload_files={gguf_name: src}, hashed=True)
            if target.exists():
                old_sha, _ = sha256_file(target)
                if old_sha != built.sha256:
                    raise UsageError(
                        f"{name} {version} is already in the local registry with different content",
                        "import it under another --version (or --name)",
                    )
            else:
                os.replace(staged, target)
        result.archive = target
        result.archive_sha256 = built.sha256
        write_index(registry, reporter=rep)
        with tx.open_state(paths, "import-model", write=True, reporter=rep) as db:
            if not any(r.name == LOCAL_SOURCE for r in db.sources()):
                lists.add_source(paths, db, LOCAL_SOURCE, str(registry), allow_unsigned=True, priority=LOCAL_SOURCE_PRIORITY)
                result.source_added = True
            lists.update(paths, db, rep, names=[LOCAL_SOURCE])
        # link_local: the bytes were hashed a moment ago; the install links them (from the cache, or the file itself) as they are
        result.install = ops.install([f"{name}=={version}"], reporter=rep, confirm=confirm, paths=paths, link_local=True)
        fetched = [f for f in result.install.payloads if f.payload.sha256 == sha]
        result.stored = fetched[0].how if fetched else "present"
        with tx.open_state(paths, "import-model", write=True, reporter=rep) as db:
            current = db.get_setting(DEFAULT_MODEL_KEY)
            if not current or current not in installed_models(db):
                with db.transaction():
                    db.set_setting(DEFAULT_MODEL_KEY, name)
                result.default_set = True
    return result


def import_hf_model(folder: str | Path, *, name: str | None = None, reporter: Reporter | None = None, **options: Any) -> ImportResult:
    """``import-model --from-hf``: write a Hugging Face Llama checkpoint's GGUF (needs the train extra), then :func:`import_model` it."""
    rep = reporter or NullReporter()
    registry = local_registry(options.get("paths") or get_paths())
    try:
        registry.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise from_os_error(exc, f"creating {registry}") from exc
    with tempfile.TemporaryDirectory(prefix=".from-hf-", dir=registry) as tmp:  # same file system: adopting it moves no bytes
        stem = name or Path(folder).expanduser().resolve().name
        gguf = convert_hf_to_gguf(Path(folder).expanduser(), Path(tmp) / f"{stem}.gguf", name=stem, reporter=rep)
        return import_model(str(gguf), name=name, reporter=rep, adopt=not options.get("simulate"), **options)
