"""``llmos export LIB[:SCALE][+LIB[:SCALE]...] --format peft [-o DIR]``: a library or a stack as a PEFT adapter.

Each part is an installed library, a ``.llmos`` archive or a library source
folder; a scale after ``:`` overrides the library's own (its attach scale,
else its manifest's ``adapter.scale``).  Several parts are one ``cat``-merged
adapter (``train/peft_export.py``): vLLM applies one LoRA per request, and a
``cat`` merge is exactly the stack.

The base model is the one the libraries declare (``--model`` to choose); every
adapter is checked against its GGUF first (``runtime/abi.py``), and a stack of
libraries built for different bases is refused (``AbiError``, exit 11).
``adapter_config.json`` names the base by ``--base-model``, else by the Hugging
Face id its GGUF records, else by a Hugging Face folder converted from the
GGUF once, under ``$LLMOS_HOME/exports/<model>/hf``.

Without ``-o`` the folder is ``$LLMOS_HOME/exports/<model>/<stack id>``, the
stack id being the OpenAI ``model`` name ``llmos serve`` gives the same stack
(``demo-chat+med-lib:0.5+law-lib``); ``llmos serve --engine vllm`` serves every
export found there.  An export whose sources are unchanged is reused.
"""

from __future__ import annotations

import difflib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.errors import AbiError, NotFoundError, UsageError
from llmos_cli.fileio import sha256_file, write_atomic
from llmos_cli.gguf_info import read_header
from llmos_cli.paths import Paths, get_paths
from llmos_cli.pkg.meta import RelationError, Req
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.runtime.abi import check_adapter
from llmos_cli.runtime.models import ModelInfo, package_file, resolve_model
from llmos_cli.runtime.stack import base_matches, parse_lib_spec
from llmos_cli.state import transaction as tx
from llmos_cli.train.merge import open_source
from llmos_cli.train.peft_export import PROVENANCE, hf_repo_of, hparams_of, read_stack, write_hf_base, write_peft_dir

FORMATS = ("peft",)
SCHEMA = 1


@dataclass
class ExportLib:
    """One part of an export: a library's adapter at a scale."""

    name: str
    version: str
    base: str | None
    adapter: Path | None
    scale: float
    origin: str  # installed | archive | folder
    sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "scale": self.scale, "origin": self.origin, "adapter_sha256": self.sha256}


@dataclass
class ExportResult:
    out: Path
    format: str
    stack: str  # the OpenAI model name of this stack (model+lib:scale+...)
    model: str
    model_version: str | None
    base_model: str
    base_source: str  # option | gguf | converted
    libraries: list[ExportLib]
    rank: int
    target_modules: list[str]
    reused: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "format": self.format,
            "stack": self.stack,
            "model": self.model,
            "model_version": self.model_version,
            "base_model": self.base_model,
            "base_source": self.base_source,
            "libraries": [lib.to_json() for lib in self.libraries],
            "rank": self.rank,
            "target_modules": self.target_modules,
            "reused": self.reused,
            "warnings": self.warnings,
        }


def exports_dir(paths: Paths) -> Path:
    return paths.home / "exports"


def stack_id(model: str, libs: list[ExportLib]) -> str:
    """``model+lib+lib2:0.5``: the name ``llmos serve`` lists for the same stack."""
    return "+".join([model] + [lib.name if lib.scale == 1.0 else f"{lib.name}:{lib.scale:g}" for lib in libs])


def split_stack(spec: str) -> list[tuple[str, float | None]]:
    """``A:0.5+B`` -> ``[("A", 0.5), ("B", None)]``."""
    parts = [p.strip() for p in spec.split("+")]
    if not spec.strip() or any(not p for p in parts):
        raise UsageError(f"{spec!r}: an empty library name in the stack", "e.g. llmos export med-lib:0.5+law-lib --format peft")
    out = [parse_lib_spec(p) for p in parts]
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"{', '.join(dup)} is named twice in the stack", "name each library once (NAME:SCALE sets its scale)")
    return out


def _is_path(spec: str) -> bool:
    return "/" in spec or spec.endswith(".llmos") or Path(spec).expanduser().exists()


def _base_name(base: str | None) -> str | None:
    if not base:
        return None
    try:
        return Req.parse(base).name
    except RelationError:
        return base


def resolve_lib(db: Any, paths: Paths, name: str, scale: float | None, tmp: Path) -> ExportLib:
    """An installed library, or a ``.llmos`` archive / source folder."""
    if _is_path(name):
        src = open_source(name, tmp, paths)
        table = src.manifest.adapter
        default = float(table.scale) if table is not None else 1.0
        lib = ExportLib(
            src.name,
            src.version,
            str(src.manifest.meta.base) if src.manifest.meta.base else None,
            src.adapter,
            default if scale is None else scale,
            "folder" if Path(name).expanduser().is_dir() else "archive",
        )
        if lib.adapter is not None:
            lib.sha256 = sha256_file(lib.adapter)[0]
    else:
        pkg = db.get(name, with_files=True)
        if pkg is None or pkg.kind != "library":
            libraries = sorted(n for n, p in db.installed().items() if p.kind == "library")
            close = difflib.get_close_matches(name, libraries, n=3, cutoff=0.6)
            what = f"{name} is a {pkg.kind}, not a library" if pkg is not None else f"library {name!r} is not installed"
            raise NotFoundError(
                what, f"did you mean {', '.join(close)}?" if close else "pass an installed library, a .llmos archive or a library source folder"
            )
        table = pkg.typed_manifest.adapter
        adapter = package_file(paths, pkg, table.file) if table is not None and table.file else None
        lib = ExportLib(
            pkg.name, pkg.version, str(pkg.meta.base) if pkg.meta.base else None, adapter, pkg.effective_scale() if scale is None else scale, "installed"
        )
        lib.sha256 = adapter.name if adapter is not None else ""  # store blobs are named by their sha256
    if lib.adapter is None:
        raise NotFoundError(
            f"library {lib.name} has no adapter to export (it carries documents, a glossary or tools only)",
            "only libraries with an [adapter] become PEFT adapters; llmos serve runs the others' knowledge stages",
        )
    return lib


def choose_model(db: Any, paths: Paths, libs: list[ExportLib], model: str | None, reporter: Reporter) -> ModelInfo:
    """The base the stack is exported for; refuses a stack built for different bases."""
    bases = {_base_name(lib.base) for lib in libs if lib.base}
    if model is None and len(bases) > 1:
        desc = ", ".join(f"{lib.name} (base {_base_name(lib.base)})" for lib in libs if lib.base)
        raise AbiError(f"the stack mixes libraries built for different base models: {desc}", "vLLM serves one base; export each base's libraries separately")
    minfo = resolve_model(db, paths, model or (bases.pop() if bases else None), reporter)
    head = read_header(minfo.path, with_vocab=False)
    for lib in libs:
        if base_matches(lib.base, minfo) is False:
            raise AbiError(
                f"library {lib.name} is built for base {lib.base}, not for model {minfo.name} {minfo.version}",
                f"export it with --model {_base_name(lib.base)}, or leave it out of the stack",
            )
        assert lib.adapter is not None
        problems = check_adapter(read_header(lib.adapter, with_vocab=False), head)
        if problems:
            raise AbiError(
                f"library {lib.name} {lib.version}: its adapter does not fit model {minfo.name}: {problems[0].message}",
                "install a version built for this model, or leave it out of the stack",
                details={"library": lib.name, "problems": [p.message for p in problems]},
            )
    return minfo


def _model_sha(minfo: ModelInfo) -> str:
    return minfo.path.name if minfo.origin == "installed" else sha256_file(minfo.path)[0]


def hf_base(minfo: ModelInfo, paths: Paths, base_model: str | None, reporter: Reporter) -> tuple[str, str, list[str]]:
    """(base model for adapter_config and vLLM, where it came from, warnings)."""
    if base_model:
        return base_model, "option", []
    repo = hf_repo_of(minfo.path)
    if repo:
        return repo, "gguf", []
    folder = exports_dir(paths) / minfo.name / "hf"
    stamp = folder / "llmos-base.json"
    sha = _model_sha(minfo)
    try:
        if json.loads(stamp.read_text()).get("gguf_sha256") == sha:
            return str(folder), "converted", []
    except (OSError, ValueError, AttributeError):
        pass
    reporter.info(f"converting {minfo.name} to a Hugging Face folder for vLLM and peft: {folder}")
    res = write_hf_base(minfo.path, folder)
    write_atomic(stamp, (json.dumps({"gguf_sha256": sha, "model": minfo.name, "version": minfo.version, "tokenizer": res.tokenizer}) + "\n").encode())
    return str(folder), "converted", res.warnings


def _provenance(minfo: ModelInfo, libs: list[ExportLib], stack: str, base: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "stack": stack,
        "model": {"name": minfo.name, "version": minfo.version, "gguf_sha256": _model_sha(minfo)},
        "libraries": [lib.to_json() for lib in libs],
        "base_model": base,
    }


def _same(prov_file: Path, want: dict[str, Any]) -> bool:
    try:
        have = json.loads(prov_file.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(have, dict) and all(have.get(k) == want[k] for k in ("schema", "stack", "model", "libraries", "base_model"))


def export_libs(
    libs: list[ExportLib],
    minfo: ModelInfo,
    *,
    out: str | Path | None = None,
    base_model: str | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
    paths: Paths | None = None,
) -> ExportResult:
    """Write resolved, checked libraries as one PEFT folder (reused when its sources are unchanged)."""
    rep = reporter or NullReporter()
    paths = paths or get_paths()
    sid = stack_id(minfo.name, libs)
    default_out = out is None
    target = exports_dir(paths) / minfo.name / sid if out is None else Path(out).expanduser()
    if not default_out and target.exists() and not force and (not target.is_dir() or any(target.iterdir())) and not (target / PROVENANCE).is_file():
        raise UsageError(f"{target} exists and is not an llmos export", "choose another -o DIR, or replace it with --force")
    base, base_source, warnings = hf_base(minfo, paths, base_model, rep)
    for w in warnings:
        rep.warn(w)
    prov = _provenance(minfo, libs, sid, base)
    cfg_file = target / "adapter_config.json"
    if (target / PROVENANCE).is_file() and cfg_file.is_file() and _same(target / PROVENANCE, prov) and not force:
        cfg = json.loads(cfg_file.read_text())
        return ExportResult(target, "peft", sid, minfo.name, minfo.version, base, base_source, libs, int(cfg["r"]), list(cfg["target_modules"]), True, warnings)
    hp = hparams_of(minfo.path)
    rep.info(f"exporting {sid} as a PEFT adapter")
    pairs = read_stack([(lib.adapter, lib.scale) for lib in libs if lib.adapter is not None], hp)
    if not pairs:
        raise UsageError(f"{sid}: every library is at scale 0; nothing to export")
    folder = write_peft_dir(pairs, hp, target, base_model=base, provenance=prov)
    return ExportResult(target, "peft", sid, minfo.name, minfo.version, base, base_source, libs, folder.rank, folder.target_modules, False, warnings)


def export_peft(
    spec: str,
    *,
    out: str | Path | None = None,
    fmt: str = "peft",
    model: str | None = None,
    base_model: str | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
    paths: Paths | None = None,
) -> ExportResult:
    """``llmos export SPEC --format peft``: resolve, check, then write (see the module docstring)."""
    rep = reporter or NullReporter()
    paths = paths or get_paths()
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}", f"choose one of {', '.join(FORMATS)}")
    parts = split_stack(spec)
    with tempfile.TemporaryDirectory(prefix="llmos-export-") as tmp, tx.open_state(paths, "export", write=False, reporter=rep) as db:
        libs = [resolve_lib(db, paths, name, scale, Path(tmp)) for name, scale in parts]
        minfo = choose_model(db, paths, libs, model, rep)
        return export_libs(libs, minfo, out=out, base_model=base_model, force=force, reporter=rep, paths=paths)
