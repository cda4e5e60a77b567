"""Base models as packages: finding installed models, the default model, ``import-model``.

A ``model`` package carries one GGUF, named by ``[model] file`` (``Manifest.model.file``);
``llmos build`` adds ``architecture``, ``context_length`` and ``fingerprint``
to that table.  Installed payloads live in the content-addressed store, so a
model's file on disk is ``Store(paths).path_for(<sha256 of that file>)``.

The default model is the ``default_model`` setting.  When it is unset (or
names a model no longer installed) and exactly one model is installed, that
one is the default.  With several, the one model the user asked for by name
(the others were installed automatically, as dependencies of libraries) is the
default; otherwise a run needs ``--model`` or ``llmos default-model NAME``.  ``--model`` also accepts the path of a
``.gguf`` file, which runs it without installing it (handy for trying a file
before ``import-model``).

``import-model`` itself is a use case: ``llmos_cli.app.models``.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.errors import (
    IntegrityError,
    InvalidPackageError,
    NotFoundError,
    UsageError,
)
from llmos_cli.gguf_info import read_header
from llmos_cli.paths import Paths, get_paths
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.state import transaction as tx
from llmos_cli.state.store import Store

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
    #: the package's default system prompt ([prompt] system), used when the run gives none
    system_prompt: str | None = None

    @property
    def parameters(self) -> dict[str, Any]:
        """The package's default sampling parameters (``[model.parameters]`` in its manifest)."""
        model = self.package.typed_manifest.model if self.package is not None else None
        return model.parameters if model is not None else {}

    def ensure_fingerprint(self) -> str:
        if not self.fingerprint:
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
    model = pkg.typed_manifest.model
    rel = model.file if model is not None else None
    if model is None or rel is None:
        raise InvalidPackageError(f"model package {pkg.name} names no GGUF file ([model] file)")
    return ModelInfo(
        name=pkg.name,
        version=pkg.version,
        path=package_file(paths, pkg, rel),
        architecture=model.architecture,
        context_length=model.context_length,
        fingerprint=model.fingerprint,
        origin="installed",
        provides=tuple(pkg.meta.provides),
        package=pkg,
        system_prompt=_package_system_prompt(paths, pkg),
    )


def _package_system_prompt(paths: Paths, pkg: Any) -> str | None:
    prompt = pkg.typed_manifest.prompt
    rel = prompt.system if prompt is not None else None
    if not rel:
        return None
    try:
        return package_file(paths, pkg, rel).read_text(encoding="utf-8").strip() or None
    except UnicodeDecodeError:
        raise IntegrityError(f"{pkg.name}: system prompt {rel} is not UTF-8 text", f"run `llmos verify {pkg.name}`") from None


def model_from_file(path: Path) -> ModelInfo:

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
    manual = [n for n, p in models.items() if not p.auto]
    if len(manual) == 1:  # the others came in as dependencies (apt's auto mark)
        return manual[0]
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
            hint = (
                f"did you mean {', '.join(close)}?"
                if close
                else (f"installed models: {', '.join(sorted(models))}" if models else "import one: llmos import-model FILE.gguf --name NAME")
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

    paths = paths or get_paths()
    with tx.open_state(paths, "default-model", write=False, reporter=reporter) as db:
        name = default_model_name(db)
        setting = db.get_setting(DEFAULT_MODEL_KEY)
        models = installed_models(db)
        version = models[name].version if name else None
        return DefaultModelResult(name, version, False, implicit=bool(name) and setting != name)


def set_default_model(name: str, *, simulate: bool = False, reporter: Reporter | None = None, paths: Paths | None = None) -> DefaultModelResult:

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
