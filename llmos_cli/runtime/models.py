"""Base models as packages: finding installed models, the default model, ``import-model``.

A ``model`` package carries one GGUF, named by ``manifest["model"]["file"]``;
``llmos build`` adds ``architecture``, ``context_length`` and ``fingerprint``
to that table.  Installed payloads live in the content-addressed store, so a
model's file on disk is ``Store(paths).path_for(<sha256 of that file>)``.

The default model is the ``default_model`` setting.  When it is unset (or
names a model no longer installed) and exactly one model is installed, that
one is the default; with several, a run needs ``--model`` or
``llmos default-model NAME``.  ``--model`` also accepts the path of a
``.gguf`` file, which runs it without installing it (handy for trying a file
before ``import-model``).

``import_model(file, name, version)`` writes a model package source (the
``llmos.toml`` plus the GGUF, hard-linked when possible) into a temporary
folder, builds it into the local registry ``$LLMOS_HOME/local-registry``,
re-indexes that registry, adds it as source ``local`` (trusted, unsigned) if
missing, refreshes it and installs the package with ``pkg.ops.install``.  The
first model imported becomes the default.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from llmos_cli.errors import (
    IntegrityError,
    InvalidPackageError,
    NotFoundError,
    UsageError,
    from_os_error,
)
from llmos_cli.paths import Paths, get_paths
from llmos_cli.progress import NullReporter, Reporter

DEFAULT_MODEL_KEY = "default_model"
LOCAL_SOURCE = "local"
LOCAL_SOURCE_PRIORITY = 10


def local_registry(paths: Paths) -> Path:
    return paths.home / "local-registry"


@dataclass
class ModelInfo:
    name: str
    version: str | None
    path: Path
    architecture: str | None = None
    context_length: int | None = None
    fingerprint: str | None = None
    origin: str = "installed"  # installed | file
    provides: tuple[str, ...] = ()
    #: the InstalledPackage (None for a model given as a file path)
    package: Any = field(default=None, repr=False)

    @property
    def parameters(self) -> dict[str, Any]:
        """The package's default sampling parameters (``[model.parameters]`` in its manifest)."""
        manifest = getattr(self.package, "manifest", None) or {}
        params = (manifest.get("model") or {}).get("parameters") or {}
        return params if isinstance(params, dict) else {}

    def ensure_fingerprint(self) -> str:
        if not self.fingerprint:
            from llmos_cli.gguf_info import read_header

            self.fingerprint = read_header(self.path).fingerprint()
        return self.fingerprint

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "architecture": self.architecture,
            "context_length": self.context_length,
            "origin": self.origin,
            "path": str(self.path),
        }


def package_file(paths: Paths, pkg: Any, rel: str) -> Path:
    """Where an installed package's payload file ``rel`` lives (its store blob)."""
    from llmos_cli.state.store import Store

    files = pkg.files or []
    for f in files:
        if f.path == rel:
            p = Store(paths).path_for(f.sha256)
            if not p.is_file():
                raise IntegrityError(
                    f"{pkg.name}: installed file {rel} is missing from the store",
                    f"run `llmos verify {pkg.name}`, then reinstall it",
                )
            return p
    raise IntegrityError(f"{pkg.name}: the package names {rel} but no such file is installed", f"reinstall {pkg.name}")


def model_from_package(paths: Paths, pkg: Any) -> ModelInfo:
    section = pkg.manifest.get("model") or {}
    rel = section.get("file")
    if not isinstance(rel, str):
        raise InvalidPackageError(f"model package {pkg.name} names no GGUF file ([model] file)")
    ctx = section.get("context_length")
    return ModelInfo(
        name=pkg.name,
        version=pkg.version,
        path=package_file(paths, pkg, rel),
        architecture=section.get("architecture"),
        context_length=int(ctx) if isinstance(ctx, int) else None,
        fingerprint=section.get("fingerprint"),
        origin="installed",
        provides=tuple(pkg.meta.provides),
        package=pkg,
    )


def model_from_file(path: Path) -> ModelInfo:
    from llmos_cli.gguf_info import read_header

    hdr = read_header(path, with_vocab=False)
    if hdr.is_adapter:
        raise InvalidPackageError(f"{path}: is a LoRA adapter, not a model")
    return ModelInfo(
        name=path.stem,
        version=None,
        path=path.resolve(),
        architecture=hdr.architecture,
        context_length=hdr.context_length,
        origin="file",
    )


def installed_models(db: Any) -> dict[str, Any]:
    return {n: p for n, p in db.installed().items() if p.kind == "model"}


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".gguf") or os.sep in spec or spec.startswith(".")


def default_model_name(db: Any) -> str | None:
    """The default model's name, or None when none can be chosen (see module docstring)."""
    models = installed_models(db)
    name = db.get_setting(DEFAULT_MODEL_KEY)
    if name and name in models:
        return name
    if len(models) == 1:
        return next(iter(models))
    return None


def resolve_model(db: Any, paths: Paths, spec: str | None, reporter: Reporter | None = None) -> ModelInfo:
    """The model a run uses: ``spec`` (a name or a .gguf path) or the default."""
    rep = reporter or NullReporter()
    if spec and _looks_like_path(spec):
        p = Path(spec).expanduser()
        if not p.is_file():
            raise NotFoundError(f"no such model file: {spec}")
        return model_from_file(p)
    installed = db.installed(with_files=False)
    models = {n: p for n, p in installed.items() if p.kind == "model"}
    if spec:
        pkg = models.get(spec)
        if pkg is None:
            # a virtual name (provides)
            providers = [p for p in models.values() if spec in p.meta.provides]
            if len(providers) == 1:
                pkg = providers[0]
        if pkg is None:
            if spec in installed:
                raise UsageError(f"{spec} is a {installed[spec].kind}, not a model", "use --lib for libraries; `llmos list --kind model` shows models")
            close = difflib.get_close_matches(spec, sorted(models), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else (
                f"installed models: {', '.join(sorted(models))}" if models else "import one: llmos import-model FILE.gguf --name NAME"
            )
            raise NotFoundError(f"model {spec!r} is not installed", hint)
    else:
        if not models:
            raise NotFoundError("no model is installed", "import a GGUF: llmos import-model FILE.gguf --name NAME --version 1.0")
        name = default_model_name(db)
        stale = db.get_setting(DEFAULT_MODEL_KEY)
        if stale and stale not in models:
            rep.warn(f"the default model {stale!r} is no longer installed")
        if name is None:
            raise UsageError(
                f"{len(models)} models are installed and none is the default ({', '.join(sorted(models))})",
                "pick one with --model NAME, or set it: llmos default-model NAME",
            )
        pkg = models[name]
    full = db.get(pkg.name, with_files=True)
    return model_from_package(paths, full)


# ---------------------------------------------------------------- default-model


@dataclass
class DefaultModelResult:
    name: str | None
    version: str | None
    changed: bool
    simulated: bool = False
    previous: str | None = None
    implicit: bool = False  # no setting: the only installed model

    def to_json(self) -> dict:
        return {
            "default_model": self.name,
            "version": self.version,
            "previous": self.previous,
            "changed": self.changed,
            "simulated": self.simulated,
            "implicit": self.implicit,
        }


def get_default_model(*, reporter: Reporter | None = None, paths: Paths | None = None) -> DefaultModelResult:
    from llmos_cli.state import transaction as tx

    paths = paths or get_paths()
    with tx.open_state(paths, "default-model", write=False, reporter=reporter) as db:
        name = default_model_name(db)
        setting = db.get_setting(DEFAULT_MODEL_KEY)
        models = installed_models(db)
        version = models[name].version if name else None
        return DefaultModelResult(name, version, False, implicit=bool(name) and setting != name)


def set_default_model(name: str, *, simulate: bool = False, reporter: Reporter | None = None, paths: Paths | None = None) -> DefaultModelResult:
    from llmos_cli.state import transaction as tx

    paths = paths or get_paths()
    with tx.open_state(paths, "default-model", write=True, reporter=reporter) as db:
        installed = db.installed()
        models = {n: p for n, p in installed.items() if p.kind == "model"}
        if name not in models:
            if name in installed:
                raise UsageError(f"{name} is a {installed[name].kind}, not a model", "`llmos list --kind model` shows the models")
            close = difflib.get_close_matches(name, sorted(models), n=3, cutoff=0.6)
            raise NotFoundError(
                f"model {name!r} is not installed",
                f"did you mean {', '.join(close)}?" if close else "`llmos list --kind model` shows the installed models",
            )
        previous = db.get_setting(DEFAULT_MODEL_KEY)
        result = DefaultModelResult(name, models[name].version, previous != name, simulate, previous)
        if simulate or previous == name:
            return result
        record = {"action": "default-model", "name": name, "old_version": None, "new_version": models[name].version, "previous": previous}
        tx.record_simple(db, "default-model", ["llmos", "default-model", name], [record], lambda: db.set_setting(DEFAULT_MODEL_KEY, name))
        return result


# ---------------------------------------------------------------- import-model

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
            "source_added": self.source_added,
            "default_model": self.default_set,
            "simulated": self.simulated,
            "install": self.install.to_json() if self.install is not None and hasattr(self.install, "to_json") else None,
        }


def _manifest_text(name: str, version: str, gguf_name: str, hdr: Any, summary: str | None, license_: str, maintainer: str) -> str:
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
    }
    return tomli_w.dumps(data)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


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
) -> ImportResult:
    """Turn a local GGUF into a model package in the local registry and install it."""
    from llmos_cli.gguf_info import read_header
    from llmos_cli.pkg.meta import RelationError, check_name, parse_version

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

    from llmos_cli.pkg import ops
    from llmos_cli.pkg.archive import archive_filename, build_package
    from llmos_cli.registry import lists
    from llmos_cli.registry.index import write_index
    from llmos_cli.state import transaction as tx
    from llmos_cli.state.db import state_lock

    with state_lock(paths, "import-model"):
        try:
            registry.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, f"creating {registry}") from exc
        target = registry / archive_filename(name, version)
        gguf_name = src.name if src.name.lower().endswith(".gguf") else f"{src.name}.gguf"
        with tempfile.TemporaryDirectory(prefix=".import-", dir=registry) as td:
            folder = Path(td) / f"{name}-{version}"
            folder.mkdir()
            try:
                (folder / "llmos.toml").write_text(_manifest_text(name, version, gguf_name, hdr, summary, license, maintainer))
                _link_or_copy(src, folder / gguf_name)
            except OSError as exc:
                raise from_os_error(exc, f"preparing the package of {src.name}") from exc
            staged = Path(td) / archive_filename(name, version)
            built = build_package(folder, staged, rep)
            if target.exists():
                from llmos_cli.pkg.archive import sha256_file

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
        result.install = ops.install([f"{name}=={version}"], reporter=rep, confirm=confirm, paths=paths)
        with tx.open_state(paths, "import-model", write=True, reporter=rep) as db:
            current = db.get_setting(DEFAULT_MODEL_KEY)
            if not current or current not in installed_models(db):
                with db.transaction():
                    db.set_setting(DEFAULT_MODEL_KEY, name)
                result.default_set = True
    return result
