"""``llmos check``: validate a package source folder or archive, for CI jobs.

Every problem becomes a ``Finding`` (code, severity, message, field, path), so
one run reports all of them.  ``llmos build`` runs the same source checks
(``check_source_files``) and refuses on any error.

Checks: manifest schema and fields; files named by the manifest present;
document globs matching something (warning); archive members against
``[files]`` (extra, missing, size, sha256); a model's GGUF readable; a
library's adapter GGUF readable, ``general.type = adapter``, ``adapter.type =
lora``, complete ``lora_a``/``lora_b`` pairs, and the same architecture as its
base model (found via ``--base``, the installed packages, or the local copies
of the source indexes).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from llmos_cli.errors import ExitCode, InvalidPackageError, LlmosError, NotFoundError
from llmos_cli.gguf_info import read_header
from llmos_cli.paths import get_paths
from llmos_cli.pkg.archive import PackageArchive
from llmos_cli.pkg.manifest import MANIFEST_NAME, Finding, Manifest, load_manifest, parse_manifest_text, safe_relpath
from llmos_cli.pkg.meta import Req
from llmos_cli.pkg.payload import collect_payload
from llmos_cli.registry.index import Index
from llmos_cli.runtime.abi import type_problems
from llmos_cli.state.db import StateDB
from llmos_cli.train.lora import TrainOptions


@dataclass
class CheckReport:
    path: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def exit_code(self) -> int:
        return int(ExitCode.OK if self.ok else ExitCode.CHECK_FAILED)

    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity != "error"]

    def to_json(self) -> dict:
        return {"path": self.path, "ok": self.ok, "findings": [f.to_json() for f in self.findings]}


# ---------------------------------------------------------------- globs


@lru_cache(maxsize=256)
def _glob_re(pattern: str) -> re.Pattern[str]:
    """Path glob: ``*`` and ``?`` stay inside one folder, ``**`` crosses folders."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def glob_match(pattern: str, path: str) -> bool:
    return bool(_glob_re(pattern).match(path))


# ---------------------------------------------------------------- GGUF checks


def _gguf_findings(manifest: Manifest, locate, *, base_arch: BaseInfo | None, lookup_note: str | None) -> list[Finding]:
    """GGUF checks; ``locate(rel)`` returns a local path to payload file ``rel`` (or None)."""

    out: list[Finding] = []
    if manifest.kind == "model":
        rel = manifest.model.file if manifest.model else None
        p = locate(rel) if rel is not None else None
        if p is None:
            return out
        try:
            hdr = read_header(p, with_vocab=False)
        except InvalidPackageError as exc:
            out.append(Finding("invalid-gguf", "error", _strip(exc.message, p), field="model.file", path=rel))
            return out
        if hdr.is_adapter:
            out.append(Finding("gguf-type", "error", "this GGUF is a LoRA adapter, not a base model", field="model.file", path=rel))
        if not hdr.architecture:
            out.append(Finding("gguf-architecture", "error", "GGUF has no general.architecture", field="model.file", path=rel))
        declared = manifest.model.architecture if manifest.model else None
        if declared and hdr.architecture and declared != hdr.architecture:
            out.append(
                Finding(
                    "architecture-mismatch", "error", f"manifest says {declared!r} but the GGUF is {hdr.architecture!r}", field="model.architecture", path=rel
                )
            )
        return out

    rel = manifest.adapter.file if manifest.adapter else None
    if rel is None:
        return out
    p = locate(rel)
    if p is None:
        return out
    try:
        hdr = read_header(p, with_vocab=False)
    except InvalidPackageError as exc:
        out.append(Finding("invalid-gguf", "error", _strip(exc.message, p), field="adapter.file", path=rel))
        return out
    if hdr.general_type != "adapter":
        out.append(Finding("gguf-type", "error", f"general.type is {hdr.general_type!r}, expected 'adapter'", field="adapter.file", path=rel))
    if hdr.adapter_type != "lora":
        out.append(Finding("adapter-type", "error", f"adapter.type is {hdr.adapter_type!r}, expected 'lora'", field="adapter.file", path=rel))
    if not hdr.architecture:
        out.append(Finding("gguf-architecture", "error", "adapter GGUF has no general.architecture", field="adapter.file", path=rel))
    pairs: dict[str, set[str]] = {}
    for t in hdr.tensors:
        for suffix in (".lora_a", ".lora_b"):
            if t.endswith(suffix):
                pairs.setdefault(t[: -len(suffix)], set()).add(suffix)
    if hdr.general_type == "adapter" and not pairs:
        out.append(Finding("adapter-empty", "error", "adapter holds no .lora_a/.lora_b tensors", field="adapter.file", path=rel))
    for target, have in sorted(pairs.items()):
        if len(have) != 2:
            missing = ({".lora_a", ".lora_b"} - have).pop()
            out.append(Finding("adapter-pair", "error", f"{target}{missing} is missing (incomplete LoRA pair)", field="adapter.file", path=rel))
    for prob in type_problems(hdr):  # a type llama.cpp loads but cannot run (I32, F64...) would crash `llmos run`
        out.append(Finding("adapter-tensor-type", "error", prob.message, field="adapter.file", path=rel))
    if not hdr.architecture:
        return out
    if base_arch is None:
        out.append(
            Finding(
                "base-not-found",
                "warning",
                f"architecture not checked: base model {manifest.meta.base} not found{lookup_note or ''} (pass --base MODEL)",
                field="package.base",
            )
        )
        return out
    if base_arch.architecture != hdr.architecture:
        out.append(
            Finding(
                "architecture-mismatch",
                "error",
                f"adapter is for architecture {hdr.architecture!r} but base {base_arch.label} is {base_arch.architecture!r}",
                field="adapter.file",
                path=rel,
            )
        )
    elif base_arch.tensors:
        for target in sorted(pairs):
            if target not in base_arch.tensors:
                out.append(Finding("adapter-tensor", "error", f"adapts {target}, which base {base_arch.label} does not have", field="adapter.file", path=rel))
                break
    return out


def _strip(message: str, p: Path) -> str:
    prefix = f"{p}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


# ---------------------------------------------------------------- base lookup


@dataclass
class BaseInfo:
    label: str
    architecture: str
    name: str | None = None
    version: str | None = None
    tensors: set[str] = field(default_factory=set)


def base_from_path(path: Path) -> BaseInfo:
    """The base model given with ``--base``: an archive, a source folder or a .gguf file."""

    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"--base {path}: no such file or folder")
    if path.is_dir():
        m = load_manifest(path)
        if m.kind != "model":
            raise InvalidPackageError(f"--base {path}: {m.name} is a {m.kind}, not a model")
        hdr = read_header(path / ((m.model.file if m.model else None) or ""), with_vocab=False)
        return BaseInfo(f"{m.name} {m.version}", hdr.architecture or "", m.name, m.version, set(hdr.tensors))
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"GGUF":
        hdr = read_header(path, with_vocab=False)
        if hdr.is_adapter:
            raise InvalidPackageError(f"--base {path}: is a LoRA adapter, not a base model")
        return BaseInfo(path.name, hdr.architecture or "", None, None, set(hdr.tensors))

    arch = PackageArchive.open(path)
    m = arch.manifest
    if m.kind != "model":
        raise InvalidPackageError(f"--base {path}: {m.name} is a {m.kind}, not a model")
    if m.model is None or m.model.file is None:  # a valid model manifest always names it
        raise InvalidPackageError(f"--base {path}: {m.name} names no GGUF file ([model] file)")
    rel = m.model.file
    with tempfile.TemporaryDirectory(prefix="llmos-check-") as td:
        p = arch.extract_member(rel, Path(td) / "model.gguf")
        hdr = read_header(p, with_vocab=False)
    return BaseInfo(f"{m.name} {m.version}", hdr.architecture or "", m.name, m.version, set(hdr.tensors))


def lookup_base(base: Req, paths: Any = None) -> tuple[BaseInfo | None, str]:
    """Find the architecture of ``base`` among installed packages, then the local source lists."""

    paths = paths or get_paths()
    # installed packages
    if paths.db.exists():
        try:
            db = StateDB.open(paths, create=False)
            try:
                for pkg in db.installed().values():
                    if pkg.kind == "model" and (pkg.name == base.name or base.name in pkg.meta.provides) and base.matches(pkg.version):
                        model = pkg.typed_manifest.model
                        arch = model.architecture if model else None
                        if arch:
                            return BaseInfo(f"{pkg.name} {pkg.version} (installed)", arch, pkg.name, pkg.version), ""
            finally:
                db.close()
        except LlmosError:
            pass
    # local copies of the source indexes
    best: tuple[Any, BaseInfo] | None = None
    if paths.lists.is_dir():
        for lf in sorted(paths.lists.glob("*.json")):
            try:
                idx = Index.from_bytes(lf.read_bytes(), str(lf))
            except (LlmosError, OSError):
                continue
            for e in idx.entries:
                m = e.meta
                arch = e.extra.get("architecture")
                if m.kind == "model" and arch and (m.name == base.name or base.name in m.provides) and base.matches(m.version):
                    if best is None or m.parsed_version > best[0]:
                        best = (m.parsed_version, BaseInfo(f"{m.name} {m.version} (source {lf.stem})", arch, m.name, m.version))
    if best:
        return best[1], ""
    return None, " among installed packages or source indexes"


# ---------------------------------------------------------------- source folders


def check_source_files(
    manifest: Manifest,
    src: Path,
    payload: set[str],
    *,
    find_base: bool = True,
    base: BaseInfo | None = None,
    paths: Any = None,
) -> list[Finding]:
    """Checks of a source folder beyond the manifest schema (files, globs, GGUFs)."""
    out: list[Finding] = []
    out += _file_findings(manifest, payload)
    out += _train_findings(manifest)
    if manifest.has_files_table:
        out.append(Finding("source-files-table", "warning", "a source manifest's [files] is ignored; llmos build writes it", field="files"))
    if any(f.severity == "error" for f in out):
        return out

    def locate(rel: str) -> Path | None:
        return src / rel if rel in payload else None

    base_info, note = base, None
    if manifest.kind == "library" and manifest.adapter and base_info is None:
        if find_base and manifest.meta.base is not None:
            base_info, note = lookup_base(manifest.meta.base, paths)
        elif not find_base:
            return out + [f for f in _gguf_findings(manifest, locate, base_arch=None, lookup_note=None) if f.code != "base-not-found"]
    out += _gguf_findings(manifest, locate, base_arch=base_info, lookup_note=note)
    return out


def _train_findings(manifest: Manifest) -> list[Finding]:
    """``[train]`` only matters to whoever retrains the adapter: problems there are warnings."""
    table = manifest.train.options
    if not table:
        return []
    from dataclasses import fields

    known = {f.name for f in fields(TrainOptions)}
    out = [
        Finding("train-unknown-key", "warning", f"unknown [train] key {key!r}; llmos train ignores it", field=f"train.{key}")
        for key in table
        if key not in known
    ]
    try:
        TrainOptions.from_manifest(table)
    except LlmosError as exc:
        out.append(Finding("train-options", "warning", f"llmos train would refuse this table: {exc.message}", field="train"))
    return out


def _file_findings(manifest: Manifest, payload: set[str]) -> list[Finding]:
    out: list[Finding] = []
    payload = payload | {p.path for p in manifest.payloads}  # [[payload]]: fetched by hash, not carried
    for fieldname, rel in manifest.named_files():
        norm = safe_relpath(rel)
        if norm is not None and norm not in payload:
            out.append(Finding("missing-file", "error", f"names {rel!r}, which is not in the package", field=fieldname, path=rel))
    for i, g in enumerate(manifest.document_globs()):
        norm = safe_relpath(g)
        if norm is None:
            continue
        if not any(glob_match(norm, p) for p in payload):
            out.append(Finding("glob-empty", "warning", f"document glob {g!r} matches no file", field=f"knowledge.documents[{i}]"))
    return out


def _check_dir(path: Path, base: BaseInfo | None, paths: Any) -> tuple[list[Finding], Manifest | None]:

    mpath = path / MANIFEST_NAME
    if not mpath.is_file():
        return [Finding("missing-manifest", "error", f"no {MANIFEST_NAME} in {path}", path=MANIFEST_NAME)], None
    manifest, findings = parse_manifest_text(mpath.read_bytes(), MANIFEST_NAME)
    for f in findings:
        if f.path is None and f.field is not None:
            f.path = MANIFEST_NAME
    if manifest is None:
        return findings, None
    try:
        payload = {f.rel for f in collect_payload(path)}
    except InvalidPackageError as exc:
        return findings + [Finding("unsafe-file", "error", exc.message)], manifest
    return findings + check_source_files(manifest, path, payload, base=base, paths=paths), manifest


def _check_archive(path: Path, base: BaseInfo | None, paths: Any) -> tuple[list[Finding], Manifest | None]:

    try:
        arch, findings = PackageArchive.inspect(path)
    except InvalidPackageError as exc:
        return [Finding("invalid-archive", "error", exc.message, path=str(path))], None
    if arch is None:
        return findings, None
    findings += arch.findings()
    content_ok = not any(f.severity == "error" for f in findings)
    payload = set(arch.members())
    findings += _file_findings(arch.manifest, payload)
    if not content_ok or any(f.severity == "error" for f in findings):
        return findings, arch.manifest
    with tempfile.TemporaryDirectory(prefix="llmos-check-") as td:
        extracted: dict[str, Path] = {}

        def locate(rel: str) -> Path | None:
            if rel not in payload:
                return None
            if rel not in extracted:
                extracted[rel] = arch.extract_member(rel, Path(td) / f"m{len(extracted)}.gguf")
            return extracted[rel]

        note = None
        m = arch.manifest
        if m.kind == "library" and m.adapter and base is None and m.meta.base is not None:
            base, note = lookup_base(m.meta.base, paths)
        findings += _gguf_findings(m, locate, base_arch=base, lookup_note=note)
    return findings, m


def check_path(path: Path, base: Path | None = None, *, paths: Any = None) -> CheckReport:
    """Check a source folder or an archive; never raises for problems in the package itself."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path}: no such file or folder", "give a package source folder or a .llmos archive")
    base_info = base_from_path(base) if base is not None else None
    report = CheckReport(str(path))
    findings, manifest = (_check_dir if path.is_dir() else _check_archive)(path, base_info, paths)
    report.findings = findings
    if base_info is not None and manifest is not None:
        report.findings += _base_relation_findings(manifest, base_info)
    return report


def _base_relation_findings(m: Manifest, base: BaseInfo) -> list[Finding]:
    """Warn when --base is not the package the manifest names as its base."""
    if m.meta.base is None or base.name is None:
        return []
    req = m.meta.base
    if base.name != req.name:
        return [Finding("base-mismatch", "warning", f"--base is {base.name}, but the package's base is {req}", field="package.base")]
    if base.version and not req.matches(base.version):
        return [Finding("base-mismatch", "warning", f"--base is {base.name} {base.version}, outside {req}", field="package.base")]
    return []


def render_json(report: CheckReport) -> str:
    return json.dumps(report.to_json(), indent=2)
