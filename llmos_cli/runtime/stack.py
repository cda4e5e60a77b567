"""What a run uses: one model plus libraries at their scales; ``attach`` / ``detach``.

Installed libraries are attached by default (the ``attached`` column of the
state DB); ``detach`` keeps one installed but out of runs, ``attach [--scale]``
puts it back.  A library's scale is the ``scale`` column when set, else its
manifest's ``adapter.scale``, else 1.0.

``build_stack`` decides the libraries of one run:

* default: every attached library.  Libraries whose declared ``base`` does not
  name the chosen model (a library for another installed model) are left out
  with a note -- they belong to the other model's stack;
* ``libs=["name", "name:0.5"]`` (``--lib``): exactly those, in that order,
  each with an optional scale override; one built for another base is an
  ``AbiError``;
* ``no_libs=True``: none (the bare base model).

Every adapter is then checked against the model's GGUF header
(``abi.check_adapter``).  ``llmos stack`` reports the result; ``llmos run``
refuses (``AbiError``, exit 11) before llama.cpp ever sees a misfit.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.errors import AbiError, InvalidPackageError, NotFoundError, UsageError
from llmos_cli.gguf_info import read_header
from llmos_cli.paths import Paths, get_paths
from llmos_cli.pkg.meta import RelationError, Req
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.runtime.abi import adapter_problems, check_adapter
from llmos_cli.runtime.models import ModelInfo, package_file, resolve_model
from llmos_cli.state import transaction as tx


@dataclass
class StackLibrary:
    name: str
    version: str
    scale: float
    attached: bool
    adapter: Path | None  # the adapter GGUF in the store (None: a library without adapter)
    base: str | None  # the declared base constraint
    fits: bool | None = None  # None: no adapter, or not checked
    problems: list[str] = field(default_factory=list)
    #: why a library is left out of the run ("" when it is used)
    left_out_reason: str = ""
    #: the InstalledPackage (files loaded), for stages that need documents, glossary, tools
    package: Any = field(default=None, repr=False)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "scale": self.scale,
            "attached": self.attached,
            "adapter": self.adapter is not None,
            "base": self.base,
            "fits": self.fits,
            "problems": list(self.problems),
            "left_out_reason": self.left_out_reason,
        }


@dataclass
class Stack:
    model: ModelInfo
    libraries: list[StackLibrary]  # used by the run, in order
    left_out: list[StackLibrary] = field(default_factory=list)  # installed but detached or for another base
    notes: list[str] = field(default_factory=list)
    selection: str = "attached"  # attached | explicit | none
    #: the model's GGUF header (no vocabulary), when the ABI check read it
    model_header: Any = field(default=None, repr=False)

    @property
    def adapters(self) -> list[tuple[Path, float]]:
        return [(lib.adapter, lib.scale) for lib in self.libraries if lib.adapter is not None]

    @property
    def ok(self) -> bool:
        return all(lib.fits is not False for lib in self.libraries)

    def to_json(self) -> dict:
        return {
            "model": self.model.to_json(),
            "selection": self.selection,
            "libraries": [lib.to_json() for lib in self.libraries],
            "left_out": [lib.to_json() for lib in self.left_out],
            "notes": list(self.notes),
            "ok": self.ok,
        }


def parse_scale(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise UsageError(f"{what}: scale {text!r} is not a number", "e.g. --lib med-lib:0.5") from None
    if not math.isfinite(v):
        raise UsageError(f"{what}: scale must be a finite number, not {text!r}")
    return v


def parse_lib_spec(spec: str) -> tuple[str, float | None]:
    """``NAME`` or ``NAME:SCALE``."""
    spec = spec.strip()
    if not spec:
        raise UsageError("empty --lib value", "use --lib NAME or --lib NAME:SCALE")
    if ":" in spec:
        name, _, scale = spec.rpartition(":")
        return name.strip(), parse_scale(scale.strip(), f"--lib {spec}")
    return spec, None


def base_matches(base_text: str | None, model: ModelInfo) -> bool | None:
    """Whether a library's declared base names ``model`` (None: cannot tell)."""
    if not base_text:
        return None
    if model.origin != "installed":
        return None

    try:
        req = Req.parse(base_text)
    except RelationError:
        return False
    if req.name != model.name and req.name not in model.provides:
        return False
    return req.matches(model.version) if req.name == model.name and model.version else True


def _base_name(base_text: str | None) -> str:

    try:
        return Req.parse(base_text or "").name
    except RelationError:
        return str(base_text)


def _library(paths: Paths, pkg: Any, scale: float | None) -> StackLibrary:
    table = pkg.typed_manifest.adapter
    adapter = package_file(paths, pkg, table.file) if table is not None and table.file is not None else None
    return StackLibrary(
        name=pkg.name,
        version=pkg.version,
        scale=float(scale) if scale is not None else pkg.effective_scale(),
        attached=pkg.attached,
        adapter=adapter,
        base=str(pkg.meta.base) if pkg.meta.base else None,
        package=pkg,
    )


def check_library(lib: StackLibrary, model_header: Any, header_cache: dict[Path, Any] | None = None) -> None:
    """Fill ``fits``/``problems`` from the ABI check (no-op for libraries without adapter)."""

    if lib.adapter is None:
        return
    cache = header_cache if header_cache is not None else {}
    try:
        hdr = cache.get(lib.adapter) or read_header(lib.adapter, with_vocab=False)
        cache[lib.adapter] = hdr
    except InvalidPackageError as exc:
        lib.fits = False
        lib.problems = [exc.message]
        return
    problems = check_adapter(hdr, model_header)
    lib.fits = not problems
    lib.problems = [p.message for p in problems]


def build_stack(
    db: Any,
    paths: Paths,
    *,
    model: str | None = None,
    libs: list[str] | None = None,
    no_libs: bool = False,
    check_abi: bool = True,
    reporter: Reporter | None = None,
) -> Stack:
    rep = reporter or NullReporter()
    if libs and no_libs:
        raise UsageError("--lib and --no-libs contradict each other", "use one of them")
    minfo = resolve_model(db, paths, model, rep)
    installed = db.installed(with_files=False)
    stack = Stack(model=minfo, libraries=[])
    if no_libs:
        stack.selection = "none"
    elif libs:
        stack.selection = "explicit"
        seen: set[str] = set()
        for spec in libs:
            name, scale = parse_lib_spec(spec)
            if name in seen:
                raise UsageError(f"--lib {name} is given twice", "name each library once (NAME:SCALE sets its scale)")
            seen.add(name)
            pkg = installed.get(name)
            if pkg is None:
                libraries = sorted(n for n, p in installed.items() if p.kind == "library")
                close = difflib.get_close_matches(name, libraries, n=3, cutoff=0.6)
                raise NotFoundError(
                    f"library {name!r} is not installed",
                    f"did you mean {', '.join(close)}?" if close else "`llmos list --kind library` shows the installed libraries",
                )
            if pkg.kind != "library":
                raise UsageError(f"{name} is a {pkg.kind}, not a library", "use --model for models")
            lib = _library(paths, db.get(name, with_files=True), scale)
            if lib.adapter is not None and base_matches(lib.base, minfo) is False:
                raise AbiError(
                    f"library {name} is built for base {lib.base}, not for model {minfo.name} {minfo.version}",
                    f"run it with --model {_base_name(lib.base)}, or leave it out",
                )
            stack.libraries.append(lib)
    else:
        for name, pkg in installed.items():
            if pkg.kind != "library":
                continue
            lib = _library(paths, db.get(name, with_files=True), None)
            if not pkg.attached:
                lib.left_out_reason = "detached"
                stack.left_out.append(lib)
                continue
            if lib.adapter is not None and base_matches(lib.base, minfo) is False:
                lib.left_out_reason = f"its adapter is built for base {lib.base}, not {minfo.name}"
                stack.left_out.append(lib)
                stack.notes.append(f"{name} left out: built for base {lib.base}, not {minfo.name}")
                continue
            stack.libraries.append(lib)
    if check_abi and any(lib.adapter is not None for lib in stack.libraries + stack.left_out):
        stack.model_header = read_header(minfo.path, with_vocab=False)
        cache: dict[Path, Any] = {}
        for lib in stack.libraries + stack.left_out:
            check_library(lib, stack.model_header, cache)
    return stack


def require_fits(stack: Stack) -> None:
    """``AbiError`` naming the first library of the run whose adapter does not fit the model."""
    for lib in stack.libraries:
        if lib.fits is False:
            more = f" (and {len(lib.problems) - 1} more problems)" if len(lib.problems) > 1 else ""
            raise AbiError(
                f"library {lib.name} {lib.version}: its adapter does not fit model {stack.model.name}: {lib.problems[0]}{more}",
                f"leave it out with --no-libs or `llmos detach {lib.name}`, or install a version built for this model",
                details={"library": lib.name, "problems": lib.problems},
            )


def show_stack(
    *,
    model: str | None = None,
    libs: list[str] | None = None,
    no_libs: bool = False,
    reporter: Reporter | None = None,
    paths: Paths | None = None,
) -> Stack:
    """``llmos stack``: what a run with these options would use."""

    paths = paths or get_paths()
    with tx.open_state(paths, "stack", write=False, reporter=reporter) as db:
        stack = build_stack(db, paths, model=model, libs=libs, no_libs=no_libs, reporter=reporter)
        stack.model.ensure_fingerprint()
        return stack


# ---------------------------------------------------------------- attach / detach


@dataclass
class AttachResult:
    command: str
    changed: list[dict]
    unchanged: list[str]
    simulated: bool = False
    txid: int | None = None

    def to_json(self) -> dict:
        return {"command": self.command, "changed": self.changed, "unchanged": self.unchanged, "simulated": self.simulated, "txid": self.txid}


def _set_attached(
    command: str, names: list[str], attached: bool, scale: float | None, simulate: bool, reporter: Reporter | None, paths: Paths | None
) -> AttachResult:

    rep = reporter or NullReporter()
    paths = paths or get_paths()
    if not names:
        raise UsageError(f"nothing to {command}", "name at least one installed library")
    if scale is not None and not math.isfinite(scale):
        raise UsageError(f"--scale must be a finite number, not {scale}")
    with tx.open_state(paths, command, write=True, reporter=rep) as db:
        installed = db.installed()
        wanted: list[str] = []
        for n in names:
            pkg = installed.get(n)
            if pkg is None:
                libraries = sorted(k for k, p in installed.items() if p.kind == "library")
                close = difflib.get_close_matches(n, libraries, n=3, cutoff=0.6)
                raise NotFoundError(
                    f"library {n!r} is not installed",
                    f"did you mean {', '.join(close)}?" if close else "`llmos list --kind library` shows the installed libraries",
                )
            if pkg.kind != "library":
                raise UsageError(f"{n} is a {pkg.kind}, not a library", "only libraries are attached; pick models with --model or `llmos default-model`")
            if n not in wanted:
                wanted.append(n)
        changed: list[dict] = []
        unchanged: list[str] = []
        for n in wanted:
            pkg = installed[n]
            new_scale = scale if scale is not None else pkg.scale
            if pkg.attached == attached and (scale is None or pkg.scale == scale):
                unchanged.append(n)
                continue
            changed.append(
                {
                    "name": n,
                    "version": pkg.version,
                    "attached": attached,
                    "old_scale": pkg.effective_scale(),
                    "scale": float(new_scale) if new_scale is not None else pkg.effective_scale(),
                }
            )
        if attached:
            for c in changed:  # never put an adapter llama.cpp cannot load or run back into runs
                _refuse_unusable_adapter(paths, db.get(c["name"], with_files=True))
        result = AttachResult(command, changed, unchanged, simulate)
        if simulate or not changed:
            return result
        records = [{"action": command, "name": c["name"], "old_version": c["version"], "new_version": c["version"], "scale": c["scale"]} for c in changed]

        def apply() -> None:
            for c in changed:
                db.set_flag(c["name"], "attached", int(attached))
                if scale is not None:
                    db.set_flag(c["name"], "scale", float(scale))

        argv = ["llmos", command, *wanted] + (["--scale", str(scale)] if scale is not None else [])
        result.txid = tx.record_simple(db, command, argv, records, apply)
        return result


def _refuse_unusable_adapter(paths: Paths, pkg: Any) -> None:
    """``AbiError`` when a library's adapter is unreadable or not a usable LoRA (whatever the model)."""
    lib = _library(paths, pkg, None)
    if lib.adapter is None:
        return
    try:
        problems = [p.message for p in adapter_problems(read_header(lib.adapter, with_vocab=False))]
    except InvalidPackageError as exc:
        problems = [exc.message]
    if problems:
        raise AbiError(
            f"library {lib.name} {lib.version}: its adapter cannot be used: {problems[0]}",
            f"install a version with a valid adapter, or remove it with `llmos remove {lib.name}`",
            details={"library": lib.name, "problems": problems},
        )


def attach(
    names: list[str], *, scale: float | None = None, simulate: bool = False, reporter: Reporter | None = None, paths: Paths | None = None
) -> AttachResult:
    """Put libraries back into runs (optionally at a new scale)."""
    return _set_attached("attach", names, True, scale, simulate, reporter, paths)


def detach(names: list[str], *, simulate: bool = False, reporter: Reporter | None = None, paths: Paths | None = None) -> AttachResult:
    """Keep libraries installed but leave them out of runs."""
    return _set_attached("detach", names, False, None, simulate, reporter, paths)
