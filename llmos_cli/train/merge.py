"""The integrator: ``llmos merge LIB... -o DIR --method cat|linear|ties|dare_ties``.

Several libraries built on the same base become one library source folder:

* the adapters are combined with peft's ``add_weighted_adapter``:
  - ``cat`` stacks the LoRA factors (rank = sum of ranks): exactly the same
    weights as attaching every adapter together, but one adapter at decode time;
  - ``linear`` averages A and B factor-wise (same rank; approximate, cheap);
  - ``ties`` / ``dare_ties`` work on the full weight deltas (peft's
    ``ties_svd`` / ``dare_ties_svd``: trim or randomly drop, elect signs,
    merge) and re-factor them by SVD, by default at the summed rank so the
    only loss is the merge rule itself;
* documents, glossaries, tools, MCP servers and system-prompt fragments are
  united (documents under ``knowledge/<library>/``);
* the manifest's ``[merged_from]`` records the method, weights and each
  source's name, version and adapter hash, and ``provides`` keeps every
  source's name and virtual names, so packages that depend on them are
  satisfied by the merged library.

The base model is needed only for its shapes (peft needs the module tree); it
is built without allocating weights, so merging adapters of a large base is
cheap.  Each source may be a library source folder, a ``.llmos`` archive or
the name of an installed library.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.errors import InvalidPackageError, NotFoundError, UsageError
from llmos_cli.knowledge.glossary import parse_glossary
from llmos_cli.paths import get_paths
from llmos_cli.pkg.archive import PackageArchive
from llmos_cli.pkg.manifest import Manifest, load_manifest
from llmos_cli.pkg.meta import check_name
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.state.db import StateDB
from llmos_cli.state.store import Store
from llmos_cli.train._deps import require_train_extra
from llmos_cli.train.convert import hparams_from_gguf
from llmos_cli.train.export import LoraPair, peft_model_pairs, read_lora_gguf, write_lora_gguf
from llmos_cli.train.lora import resolve_base

METHODS = {"cat": "cat", "linear": "linear", "ties": "ties_svd", "dare_ties": "dare_ties_svd"}


@dataclass
class SourceLib:
    """One library to merge: its typed manifest and its payload files."""

    manifest: Manifest
    files: dict[str, Path]  # package path -> file on disk

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def adapter(self) -> Path | None:
        rel = self.manifest.adapter.file if self.manifest.adapter else None
        return self.files.get(rel) if rel else None


@dataclass
class MergeResult:
    out: Path
    name: str
    version: str
    method: str
    sources: list[dict[str, str]]
    rank: int | None
    adapter: Path | None
    documents: int
    glossary_terms: int
    tools: int
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "name": self.name,
            "version": self.version,
            "method": self.method,
            "sources": self.sources,
            "rank": self.rank,
            "adapter": str(self.adapter) if self.adapter else None,
            "documents": self.documents,
            "glossary_terms": self.glossary_terms,
            "tools": self.tools,
            "warnings": self.warnings,
        }


# ---------------------------------------------------------------- sources


def open_source(spec: str, tmp: Path, paths: Any = None) -> SourceLib:
    """A library from a source folder, a ``.llmos`` archive or an installed package name."""
    p = Path(spec).expanduser()
    if p.is_dir():
        mf = p / "llmos.toml"
        if not mf.is_file():
            raise NotFoundError(f"{p} has no llmos.toml", "pass a library source folder, a .llmos archive or an installed library name")

        m = load_manifest(p)
        files = {q.relative_to(p).as_posix(): q for q in sorted(p.rglob("*")) if q.is_file() and q.name != "llmos.toml"}
        files = {k: v for k, v in files.items() if not k.startswith((".git/", ".llmos/")) and "__pycache__" not in k}
        return SourceLib(m, files)
    if p.is_file():
        arc = PackageArchive.open(p)
        arc.verify()
        dest = tmp / f"{arc.manifest.name}-{arc.manifest.version}"
        extracted: dict[str, Path] = {}
        for rel, stream, _rec in arc.iter_payload():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as fh:
                shutil.copyfileobj(stream, fh)
            extracted[rel] = target
        return SourceLib(arc.manifest, extracted)

    paths = paths or get_paths()
    pkg = None
    if paths.db.exists():
        db = StateDB.open(paths)
        try:
            pkg = db.get(spec, with_files=True)
        finally:
            db.close()
    if pkg is None or pkg.kind != "library":
        raise NotFoundError(
            f"no library {spec!r}: not a folder, not an archive, not installed", "pass a library source folder, a .llmos archive or an installed library name"
        )
    store = Store(paths)
    return SourceLib(pkg.typed_manifest, {f.path: store.path_for(f.sha256) for f in pkg.files})


# ---------------------------------------------------------------- adapters


def _skeleton(hp: Any) -> Any:
    """A LlamaForCausalLM whose parameters hold no memory (zero-stride CPU tensors)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{k: v for k, v in hp.to_hf().items() if k not in ("architectures", "model_type")})
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    for module in model.modules():
        for pname, param in list(module._parameters.items()):
            if param is not None:
                module._parameters[pname] = torch.nn.Parameter(torch.zeros((), dtype=torch.float32).expand(param.shape), requires_grad=False)
    return model


def merge_adapters(
    adapters: list[tuple[str, Path]],
    hp: Any,
    out_path: Path,
    *,
    method: str,
    weights: list[float],
    density: float = 0.5,
    rank: int | None = None,
    seed: int = 0,
    name: str | None = None,
) -> tuple[Path, int]:
    """Combine LoRA GGUFs with peft's ``add_weighted_adapter``; write the result as GGUF."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model  # noqa: F401

    if method not in METHODS:
        raise UsageError(f"unknown merge method {method!r}", f"choose one of {', '.join(METHODS)}")
    loaded = [(lib, read_lora_gguf(path, hp)[0]) for lib, path in adapters]
    modules = sorted({k for _, pairs in loaded for k in pairs})
    short = sorted({k.split(".")[-2] for k in modules})
    max_rank = max(p.rank for _, pairs in loaded for p in pairs.values())
    # every source as one peft adapter of rank max_rank with scaling 1: fold
    # each module's scaling into B, pad smaller ranks and missing modules with zeros
    model = _skeleton(hp)
    pm = None
    names: list[str] = []
    for i, (lib, pairs) in enumerate(loaded):
        aname = f"src{i}"
        cfg = LoraConfig(r=max_rank, lora_alpha=max_rank, target_modules=short, lora_dropout=0.0, bias="none", init_lora_weights=False)
        if pm is None:
            pm = get_peft_model(model, cfg, adapter_name=aname)
        else:
            pm.add_adapter(aname, cfg)
        names.append(aname)
        for mod_name, module in pm.named_modules():
            if not hasattr(module, "lora_A") or aname not in module.lora_A:
                continue
            key = mod_name.split("base_model.model.", 1)[-1] + ".weight"
            a_w = module.lora_A[aname].weight
            b_w = module.lora_B[aname].weight
            with torch.no_grad():
                a_w.zero_()
                b_w.zero_()
                p = pairs.get(key)
                if p is not None:
                    a_w[: p.rank, :] = torch.from_numpy(p.a)
                    b_w[:, : p.rank] = torch.from_numpy(p.b * p.scaling)
    assert pm is not None
    torch.manual_seed(seed)
    kind = METHODS[method]
    kw: dict[str, Any] = {}
    if kind.endswith("_svd"):
        kw["svd_rank"] = rank or max_rank * len(loaded)
        kw["density"] = density
    pm.base_model.add_weighted_adapter(names, list(weights), "merged", combination_type=kind, **kw)  # type: ignore[operator]  # peft types base_model loosely
    pairs = peft_model_pairs(pm, "merged")
    # drop all-zero modules (a module no source adapted)
    pairs = {k: v for k, v in pairs.items() if k in {m for _, ps in loaded for m in ps}}
    if kind == "cat":  # the padding rows/columns are zero: drop them
        pairs = {k: _drop_zero_rank(v, max_rank, [ps.get(k) for _, ps in loaded]) for k, v in pairs.items()}
        pairs = {k: v for k, v in pairs.items() if v is not None}
    res = write_lora_gguf(pairs, hp, out_path, name=name)
    return res.path, max(res.ranks)


def _drop_zero_rank(pair: Any, max_rank: int, sources: list[Any]) -> Any:
    import numpy as np

    keep: list[int] = []
    for i, src in enumerate(sources):
        if src is None:
            continue
        keep.extend(range(i * max_rank, i * max_rank + src.rank))
    if not keep:
        return None
    idx = np.array(keep)
    return LoraPair(pair.a[idx, :], pair.b[:, idx], pair.scaling)


# ---------------------------------------------------------------- the merged package


def _base_gguf(base: str | None, sources: list[SourceLib], paths: Any) -> Path:
    if base:
        p = Path(base).expanduser()
        if p.is_file():
            return p

        return resolve_base(base, Path(tempfile.gettempdir()), paths).gguf

    names = {s.manifest.meta.base.name for s in sources if s.adapter and s.manifest.meta.base}
    if len(names) != 1:
        raise UsageError("cannot tell which base model to merge on", "pass --base MODEL (an installed model name or a .gguf file)")

    return resolve_base(names.pop(), Path(tempfile.gettempdir()), paths).gguf


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class UnsatisfiableBase(InvalidPackageError):
    """The libraries to merge were built on different base models."""


def _combined_base(sources: list[SourceLib]) -> str | None:
    reqs = [s.manifest.meta.base for s in sources if s.manifest.meta.base]
    if not reqs:
        return None
    names = {r.name for r in reqs}
    if len(names) != 1:
        raise UnsatisfiableBase(f"the libraries are built on different base models ({', '.join(sorted(names))})")
    specs = sorted({str(sp) for r in reqs for sp in r.spec})
    return reqs[0].name + (",".join(specs) if specs else "")


def merge_libraries(
    libs: list[str],
    out_dir: str | Path,
    *,
    method: str = "cat",
    name: str | None = None,
    version: str = "1.0.0",
    weights: list[float] | None = None,
    density: float = 0.5,
    rank: int | None = None,
    base: str | None = None,
    seed: int = 0,
    force: bool = False,
    simulate: bool = False,
    reporter: Reporter | None = None,
    paths: Any = None,
) -> MergeResult:
    """Merge library sources into one library source folder ``out_dir``.

    Phases: check the arguments, open and check the sources, weigh them, then
    (unless ``simulate``) write in a staging folder the ``[package]`` table
    (``_package_table``), the adapter (``_merge_adapter``), ``[merged_from]``,
    the documents, glossary, prompt, tools and eval data (``_payload_tables``),
    check the result is a valid library and move it to ``out_dir``.
    """
    import tomli_w

    rep = reporter or NullReporter()
    _check_arguments(libs, method, weights, density)
    out = Path(out_dir)
    name = check_name(name or out.name)
    if out.exists() and any(out.iterdir()) and not force and not simulate:
        raise UsageError(f"{out} exists and is not empty", "choose another -o folder or pass --force")
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="llmos-merge-") as tmpd:
        tmp = Path(tmpd)
        sources = [open_source(s, tmp, paths) for s in libs]
        _check_sources(sources)
        base_req = _combined_base(sources)
        scales = [s.manifest.adapter.scale if s.manifest.adapter else 1.0 for s in sources]
        w = [float(x) * sc for x, sc in zip(weights or [1.0] * len(sources), scales)]
        src_info = [{"name": s.name, "version": s.version, **({"adapter_sha256": _sha256(s.adapter)} if s.adapter else {})} for s in sources]
        for s in sources:
            if s.manifest.adapter and s.adapter is None:
                raise NotFoundError(f"{s.name}: its adapter file {s.manifest.adapter.file!r} is missing")
        with_adapter = [(s, wt) for s, wt in zip(sources, w) if s.adapter is not None]
        if simulate:
            return MergeResult(out, name, version, method, src_info, None, None, 0, 0, 0, ["simulated: nothing written"])

        stage = tmp / "out"
        stage.mkdir()
        manifest: dict[str, Any] = {"schema": 1, "package": _package_table(sources, name, version, method, base_req)}
        adapter_table, adapter_out, merged_rank = _merge_adapter(
            with_adapter, stage, base=base, sources=sources, method=method, density=density, rank=rank, seed=seed, name=name, rep=rep, paths=paths
        )
        if adapter_table is not None:
            manifest["adapter"] = adapter_table
        manifest["merged_from"] = {
            "method": method,
            "weights": w,
            **({"density": density} if method in ("ties", "dare_ties") else {}),
            "sources": src_info,
        }
        tables, n_docs, n_terms, n_tools = _payload_tables(sources, stage, warnings)
        manifest.update(tables)
        _copy_other_files(sources, stage)
        (stage / "llmos.toml").write_text(tomli_w.dumps(manifest), encoding="utf-8")

        load_manifest(stage)  # the result must be a valid library
        if out.exists() and force:
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(stage, out, dirs_exist_ok=True)
    rep.info(f"wrote {out} ({name} {version}); build it with: llmos build {out}")
    for wmsg in warnings:
        rep.warn(wmsg)
    return MergeResult(
        out,
        name,
        version,
        method,
        src_info,
        merged_rank,
        out / "adapter.gguf" if adapter_out else None,
        n_docs,
        n_terms,
        n_tools,
        warnings,
    )


def _check_arguments(libs: list[str], method: str, weights: list[float] | None, density: float) -> None:
    if len(libs) < 2:
        raise UsageError("merge needs at least two libraries")
    if method not in METHODS:
        raise UsageError(f"unknown merge method {method!r}", f"choose one of {', '.join(METHODS)}")
    if weights is not None and len(weights) != len(libs):
        raise UsageError(f"{len(weights)} weights for {len(libs)} libraries", "give one --weight per library, in order")
    if not 0 < density <= 1:
        raise UsageError(f"density must be in (0, 1], not {density}")


def _check_sources(sources: list[SourceLib]) -> None:
    seen: set[str] = set()
    for s in sources:
        if s.name in seen:
            raise UsageError(f"{s.name} is given twice")
        seen.add(s.name)
        if s.manifest.kind != "library":
            raise InvalidPackageError(f"{s.name} is not a library")


def _package_table(sources: list[SourceLib], name: str, version: str, method: str, base_req: str | None) -> dict[str, Any]:
    """``[package]`` of the merged library.

    Relations between the sources are dropped; the others are united (as
    ``PackageMeta`` writes them), and ``provides`` keeps every source's name.
    """
    names_in = {s.name for s in sources}
    depends: list[str] = []
    provides: list[str] = []
    conflicts: list[str] = []
    licenses: list[str] = []
    for s in sources:
        meta = s.manifest.meta
        texts = meta.relations_json()
        for dep, text in zip(meta.depends, texts["depends"]):
            if any(alt.name in names_in for alt in dep.alternatives):
                continue
            if text not in depends:
                depends.append(text)
        for p in [s.name, *texts["provides"]]:
            if p not in provides and p != name:
                provides.append(p)
        for c, text in zip(meta.conflicts, texts["conflicts"]):
            if c.name not in names_in and text not in conflicts:
                conflicts.append(text)
        lic = s.manifest.license
        if lic and lic not in licenses:
            licenses.append(lic)
    pkg: dict[str, Any] = {
        "name": name,
        "version": version,
        "kind": "library",
        "summary": f"{', '.join(s.name for s in sources)} merged ({method})",
        "license": " AND ".join(licenses) or "NOASSERTION",
        "maintainer": sources[0].manifest.maintainer or "unknown",
        "description": "Merged by `llmos merge` from: " + "; ".join(f"{s.name} {s.version}" for s in sources),
    }
    if base_req:
        pkg["base"] = base_req
    if depends:
        pkg["depends"] = depends
    if conflicts:
        pkg["conflicts"] = conflicts
    if provides:
        pkg["provides"] = provides
    return pkg


def _merge_adapter(
    with_adapter: list[tuple[SourceLib, float]],
    stage: Path,
    *,
    base: str | None,
    sources: list[SourceLib],
    method: str,
    density: float,
    rank: int | None,
    seed: int,
    name: str,
    rep: Reporter,
    paths: Any,
) -> tuple[dict[str, Any] | None, Path | None, int | None]:
    """The merged adapter in ``stage``: ``([adapter] table, its path, its rank)``.

    One adapter is copied with its weight as scale; several are combined by ``merge_adapters``.
    """
    if len(with_adapter) == 1:
        s, wt = with_adapter[0]
        assert s.adapter is not None
        shutil.copyfile(s.adapter, stage / "adapter.gguf")
        return {"file": "adapter.gguf", "scale": wt}, stage / "adapter.gguf", None
    if not with_adapter:
        return None, None, None
    require_train_extra("llmos merge")
    from gguf import GGUFReader

    base_path = _base_gguf(base, sources, paths)
    hp = hparams_from_gguf(GGUFReader(str(base_path), "r"))
    rep.info(f"merging {len(with_adapter)} adapters ({method})")
    adapter_out, merged_rank = merge_adapters(
        [(s.name, s.adapter) for s, _ in with_adapter if s.adapter is not None],
        hp,
        stage / "adapter.gguf",
        method=method,
        weights=[wt for _, wt in with_adapter],
        density=density,
        rank=rank,
        seed=seed,
        name=name,
    )
    return {"file": "adapter.gguf"}, adapter_out, merged_rank


def _payload_tables(sources: list[SourceLib], stage: Path, warnings: list[str]) -> tuple[dict[str, Any], int, int, int]:
    """Documents, glossary, prompt fragments, tools and eval data, united in ``stage``.

    Returns the manifest tables (in the order they are written), and the number of
    documents, glossary terms and tools.
    """
    tables: dict[str, Any] = {}
    n_docs, doc_globs, chunk_sizes = _merge_documents(sources, stage)
    if doc_globs:
        kn: dict[str, Any] = {"documents": doc_globs}
        if chunk_sizes:
            size, overlap = chunk_sizes[0]
            if len(set(chunk_sizes)) > 1:
                warnings.append(f"the libraries chunk their documents differently; using chunk_size={size}")
            if size is not None:
                kn["chunk_size"] = size
            if overlap is not None:
                kn["chunk_overlap"] = overlap
        tables["knowledge"] = kn
    n_terms = _merge_glossaries(sources, stage, warnings)
    if n_terms:
        tables["glossary"] = {"file": "glossary.toml"}
    prompt = _merge_prompts(sources, stage)
    if prompt:
        tables["prompt"] = {"system": prompt}
    tools, mcp = _merge_tools(sources, warnings)
    if tools:
        tables["tools"] = tools
    if mcp:
        tables["mcp"] = mcp
    evals = _merge_eval(sources, stage)
    if evals:
        tables["train"] = {"eval": evals}
    return tables, n_docs, n_terms, len(tools)


_OWN = {"llmos.toml"}


def _special_files(s: SourceLib) -> set[str]:
    """Payload paths the merge handles itself (adapter, documents, glossary, prompt, eval data)."""
    import fnmatch

    m = s.manifest
    out = set(_OWN)
    out.update(m.declared_files())
    globs = m.knowledge.documents
    out.update(m.train.data + m.train.eval + m.train.replay)
    for rel in s.files:
        if any(fnmatch.fnmatch(rel, g) or Path(rel).match(g) for g in globs):
            out.add(rel)
        if rel.startswith(".llmos/"):
            out.add(rel)
    return out


def _doc_files(s: SourceLib) -> list[str]:
    import fnmatch

    globs = s.manifest.knowledge.documents
    return sorted(rel for rel in s.files if any(fnmatch.fnmatch(rel, g) or Path(rel).match(g) for g in globs) and not rel.startswith(".llmos/"))


def _merge_documents(sources: list[SourceLib], stage: Path) -> tuple[int, list[str], list[tuple[Any, Any]]]:
    n = 0
    globs: list[str] = []
    sizes: list[tuple[Any, Any]] = []
    for s in sources:
        docs = _doc_files(s)
        if not docs:
            continue
        for rel in docs:
            target = stage / "knowledge" / s.name / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s.files[rel], target)
            n += 1
        globs.append(f"knowledge/{s.name}/**/*")
        kn = s.manifest.knowledge
        sizes.append((kn.chunk_size, kn.chunk_overlap))
    return n, globs, sizes


def _merge_glossaries(sources: list[SourceLib], stage: Path, warnings: list[str]) -> int:
    import tomli_w

    terms: dict[str, dict[str, Any]] = {}
    for s in sources:
        rel = s.manifest.glossary.file if s.manifest.glossary else None
        if not rel or rel not in s.files:
            continue
        g = parse_glossary(s.files[rel].read_bytes(), s.name, rel)
        for e in g.to_json()["terms"]:
            term = e["term"]
            if term in terms:
                if terms[term]["definition"] != e["definition"]:
                    warnings.append(f"glossary term {term!r} is defined by several libraries; kept the first ({terms[term]['_from']})")
                continue
            entry: dict[str, Any] = {"definition": e["definition"], "_from": s.name}
            if e.get("aliases"):
                entry["aliases"] = list(e["aliases"])
            if e.get("case_sensitive") is not None:
                entry["case_sensitive"] = e["case_sensitive"]
            terms[term] = entry
    if not terms:
        return 0
    out = {"terms": {t: {k: v for k, v in e.items() if k != "_from"} for t, e in sorted(terms.items())}}
    (stage / "glossary.toml").write_text(tomli_w.dumps(out), encoding="utf-8")
    return len(terms)


def _merge_prompts(sources: list[SourceLib], stage: Path) -> str | None:
    parts = []
    for s in sources:
        rel = s.manifest.prompt.system if s.manifest.prompt else None
        if rel and rel in s.files:
            text = s.files[rel].read_text(encoding="utf-8").strip()
            if text:
                parts.append(text)
    if not parts:
        return None
    (stage / "prompt.md").write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return "prompt.md"


def _merge_tools(sources: list[SourceLib], warnings: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    tools: list[dict[str, Any]] = []
    mcp: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for s in sources:
        for t in s.manifest.tools:
            if t.name in names:
                raise InvalidPackageError(f"tool {t.name!r} is declared by both {names[t.name]} and {s.name}", "rename one before merging")
            names[t.name] = s.name
            tools.append(dict(t.table))
        for m in s.manifest.mcp:
            mcp.append(dict(m.table))
    return tools, mcp


def _merge_eval(sources: list[SourceLib], stage: Path) -> list[str]:
    out = []
    for s in sources:
        for rel in s.manifest.train.eval:
            if rel in s.files:
                target = stage / "train" / s.name / Path(rel).name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(s.files[rel], target)
                out.append(target.relative_to(stage).as_posix())
    return out


def _copy_other_files(sources: list[SourceLib], stage: Path) -> None:
    """Tool scripts and other payload files keep their paths (tools run them by path)."""
    for s in sources:
        special = _special_files(s)
        for rel, path in s.files.items():
            if rel in special:
                continue
            target = stage / rel
            if target.exists():
                if target.read_bytes() != path.read_bytes():
                    raise InvalidPackageError(f"{rel} exists with different content in several libraries", "rename the file in one of them before merging")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
