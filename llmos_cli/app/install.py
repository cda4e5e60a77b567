"""Package operations behind the CLI: install, remove, upgrade, hold, list, show, search, verify, history.

Each function returns a result object (``to_json()``) and raises LlmosError
subclasses; none prints.  Changing operations follow plan -> execute:

1. open the state under the lock (``transaction.open_state``), which first
   recovers from a killed transaction;
2. build the universe (every source's index, plus local archives named on
   the command line) and ask the resolver for a ``Plan``;
3. ``simulate=True`` stops here and returns the plan;
4. otherwise hand the ``Proposal`` to ``confirm`` (the CLI prints it and may
   ask the user) and run it with ``transaction.execute``.

A spec is ``NAME[CONSTRAINT]`` (``med-lib``, ``med-lib>=1.2``, ``med-lib (==1.0)``)
or the path of a ``.llmos`` archive.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.app.inventory import ListResult, list_installed  # noqa: F401  (re-exported: `llmos list` lives in app/inventory.py)
from llmos_cli.errors import (
    ExitCode,
    InvalidPackageError,
    NotFoundError,
    UsageError,
)
from llmos_cli.paths import Paths, get_paths
from llmos_cli.pkg.archive import PackageArchive
from llmos_cli.pkg.external import payloads_from_json
from llmos_cli.pkg.meta import PackageMeta, RelationError, Req
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.registry import lists, origins
from llmos_cli.registry.index import IndexEntry
from llmos_cli.registry.kinds import make_source
from llmos_cli.resolve import (
    Action,
    Candidate,
    CandidateSource,
    ChainSource,
    InstalledInfo,
    MemorySource,
    Op,
    Plan,
    Request,
    autoremovable,
    resolve,
    reverse_dependents,
)
from llmos_cli.runtime.abi import validate_staged
from llmos_cli.state import transaction as tx
from llmos_cli.state.db import InstalledPackage, SourceRow, StateDB
from llmos_cli.state.store import Store

ARCHIVE_SUFFIX = ".llmos"
#: priority of an archive named on the command line: beats any source
LOCAL_PRIORITY = 1_000_000
LOCAL_SOURCE = "local-archive"


# ---------------------------------------------------------------- origins of candidates


@dataclass(frozen=True, eq=False)
class IndexOrigin:
    """A candidate listed in a source's index."""

    entry: IndexEntry
    source: SourceRow

    @property
    def source_name(self) -> str:
        return self.source.name

    @property
    def sha256(self) -> str:
        return self.entry.sha256

    def fetch(self, paths: Paths, reporter: Reporter) -> Path:
        """The archive on disk, its size and sha256 checked against the index (by the source)."""

        return Path(make_source(self.source).fetch_archive(self.entry, paths.cache, reporter))

    def to_json(self) -> dict:
        e = self.entry
        return {"source": self.source.name, "filename": e.filename, "size": e.size, "sha256": e.sha256}


@dataclass(frozen=True, eq=False)
class LocalOrigin:
    """A ``.llmos`` archive named on the command line (already opened and verified)."""

    archive: PackageArchive

    @property
    def source_name(self) -> str:
        return LOCAL_SOURCE

    @property
    def sha256(self) -> str:
        return self.archive.sha256

    def fetch(self, paths: Paths, reporter: Reporter) -> Path:
        return Path(self.archive.path)

    def to_json(self) -> dict:
        a = self.archive
        return {"source": LOCAL_SOURCE, "filename": str(a.path), "size": a.size, "sha256": a.sha256}


# ---------------------------------------------------------------- results


def action_json(a: Any) -> dict:
    out = tx.action_record(a)
    out["op"] = out.pop("action")
    origin = getattr(a.candidate, "origin", None) if a.candidate is not None else None
    out["source"] = origin.source_name if origin is not None and hasattr(origin, "source_name") else None
    return out


@dataclass
class Proposal:
    """A plan about to run, with what the user asked for (for the confirmation rule)."""

    command: str
    plan: Plan
    requested: set[str]

    def extras(self) -> list[Any]:
        """Actions the user did not ask for: other packages, or a removal/downgrade nobody named as one."""

        def extra(a: Any) -> bool:
            if a.name not in self.requested:
                return True
            if a.op == "remove" and self.command != "remove":
                return True  # e.g. an upgrade that must remove a conflicting package
            return a.op == "downgrade" and self.command == "upgrade"

        return [a for a in self.plan.actions if extra(a)]

    @property
    def needs_confirmation(self) -> bool:
        """apt's rule: ask when the plan does more than exactly what was requested."""
        return bool(self.extras())

    def to_json(self) -> dict:
        return {"actions": [action_json(a) for a in self.plan.actions], "unneeded": list(self.plan.unneeded)}


@dataclass
class TxResult:
    command: str
    proposal: Proposal
    simulated: bool
    txid: int | None = None
    staged_files: int = 0
    staged_bytes: int = 0
    removed_blobs: int = 0
    #: [[payload]] files fetched by hash (``origins.Fetched``), and with -s what would be fetched
    payloads: list[Any] = field(default_factory=list)
    payload_plan: list[Any] = field(default_factory=list)

    @property
    def plan(self) -> Any:
        return self.proposal.plan

    @property
    def empty(self) -> bool:
        return not self.plan.actions

    def to_json(self) -> dict:
        return {
            "command": self.command,
            "simulated": self.simulated,
            "txid": self.txid,
            "plan": self.proposal.to_json(),
            "stats": {
                "staged_files": self.staged_files,
                "staged_bytes": self.staged_bytes,
                "removed_blobs": self.removed_blobs,
            },
            "payloads": [p.to_json() for p in (self.payload_plan if self.simulated else self.payloads)],
        }


@dataclass
class HoldResult:
    command: str
    changed: list[str]
    unchanged: list[str]
    simulated: bool
    txid: int | None = None

    def to_json(self) -> dict:
        return {
            "command": self.command,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "simulated": self.simulated,
            "txid": self.txid,
        }


@dataclass
class ShowResult:
    name: str
    installed: InstalledPackage | None
    available: list[Any]  # Candidates
    provided_by: list[str]
    required_by: list[str]

    def to_json(self) -> dict:
        inst = None
        if self.installed is not None:
            p = self.installed
            m = p.typed_manifest
            inst = {
                **p.to_json(),
                "license": m.license,
                "maintainer": m.maintainer,
                "description": m.description,
                "archive_sha256": p.archive_sha256,
                "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in p.files],
                "payloads": [x.to_json() for x in p.typed_manifest.payloads],
            }
        avail = []
        for c in self.available:
            d = {**c.meta.to_json()}
            origin = c.origin
            d.update(origin.to_json() if hasattr(origin, "to_json") else {"source": None})
            d["installed"] = self.installed is not None and self.installed.version == c.meta.version
            d["payloads"] = [x.to_json() for x in candidate_payloads(c)]
            avail.append(d)
        return {
            "name": self.name,
            "installed": inst,
            "available": avail,
            "provided_by": self.provided_by,
            "required_by": self.required_by,
        }


@dataclass
class SearchHit:
    name: str
    version: str
    kind: str
    summary: str
    provides: list[str]
    source: str | None
    installed: str | None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "summary": self.summary,
            "provides": self.provides,
            "source": self.source,
            "installed": self.installed,
        }


@dataclass
class SearchResult:
    query: str
    results: list[SearchHit]

    def to_json(self) -> dict:
        return {"query": self.query, "results": [h.to_json() for h in self.results]}


@dataclass
class VerifyProblem:
    package: str
    version: str
    path: str
    sha256: str
    problem: str  # "missing" | "changed"
    actual_sha256: str | None = None

    def to_json(self) -> dict:
        return {
            "package": self.package,
            "version": self.version,
            "path": self.path,
            "sha256": self.sha256,
            "problem": self.problem,
            "actual_sha256": self.actual_sha256,
        }


@dataclass
class VerifyResult:
    packages: int
    files: int
    problems: list[VerifyProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else int(ExitCode.INTEGRITY)

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "packages": self.packages,
            "files": self.files,
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass
class HistoryResult:
    transactions: list[dict]

    def to_json(self) -> dict:
        return {"transactions": self.transactions}


# ---------------------------------------------------------------- helpers


def _paths(paths: Paths | None) -> Paths:
    return paths or get_paths()


def _installed_infos(db: StateDB) -> dict[str, Any]:

    return {n: InstalledInfo(meta=p.meta, auto=p.auto, held=p.held) for n, p in db.installed().items()}


def _universe(paths: Paths, db: StateDB, reporter: Reporter) -> list[Any]:
    """Every candidate of every enabled source (updating never-fetched sources first)."""

    lists.ensure_default_sources(db)
    out = []
    for entry, row in lists.load_universe(paths, db, reporter):
        out.append(_index_candidate(entry, row))
    return out


def _index_candidate(entry: Any, row: Any) -> Candidate:
    return Candidate(meta=entry.meta, origin=IndexOrigin(entry, row), priority=int(row.priority or 0))


def _resolver_universe(paths: Paths, db: StateDB, reporter: Reporter, local: Iterable[Any] = ()) -> CandidateSource:
    """What the resolver sees: every source's list, read lazily through its cache, plus local archives first."""

    lists.ensure_default_sources(db)
    listed = lists.candidate_source(paths, db, _index_candidate, reporter)
    named = MemorySource(Candidate(meta=a.manifest.meta, origin=LocalOrigin(a), priority=LOCAL_PRIORITY) for a in local)
    return ChainSource([named, listed])


def looks_like_archive(spec: str) -> bool:
    """A path (``.llmos`` suffix or a slash), not a package name (names have neither)."""
    return spec.endswith(ARCHIVE_SUFFIX) or "/" in spec or os.sep in spec


def _open_local(spec: str) -> Any:

    p = Path(spec).expanduser()
    if p.is_dir():
        raise InvalidPackageError(
            f"{spec} is a folder, not a package archive",
            f"build it first: llmos build {spec}, then install the {ARCHIVE_SUFFIX} file",
        )
    if not p.exists():
        raise NotFoundError(f"no such package archive: {spec}", "check the path; package names are plain words like 'med-lib'")
    archive = PackageArchive.open(p)
    archive.verify()
    return archive


def parse_specs(specs: Iterable[str]) -> tuple[list[Req], list[Any]]:
    """Split install specs into requirements and opened local archives."""
    reqs: list[Req] = []
    locals_: list[Any] = []
    for spec in specs:
        spec = spec.strip()
        if not spec:
            raise UsageError("empty package name", "name a package, e.g. `llmos install med-lib`")
        if looks_like_archive(spec):
            archive = _open_local(spec)
            locals_.append(archive)
            m = archive.manifest
            reqs.append(Req.parse(f"{m.name}=={m.version}"))
            continue
        try:
            reqs.append(Req.parse(spec))
        except RelationError as exc:
            raise UsageError(f"invalid package spec {spec!r}: {exc}", "use NAME or NAME<constraint>, e.g. 'med-lib>=1.2'") from None
    return reqs, locals_


def _did_you_mean(name: str, names: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, sorted(set(names)), n=3, cutoff=0.6)
    return f"did you mean {', '.join(close)}?" if close else None


def _require_installed(db: StateDB, names: Iterable[str]) -> list[str]:
    installed = db.installed()
    out = []
    for n in names:
        if n not in installed:
            hint = _did_you_mean(n, installed) or "see `llmos list` for what is installed"
            raise NotFoundError(f"package {n!r} is not installed", hint)
        if n not in out:
            out.append(n)
    return out


def _argv(command: str, args: Iterable[str]) -> list[str]:
    return ["llmos", command, *[str(a) for a in args]]


def candidate_payloads(candidate: Any) -> list[Any]:
    """The [[payload]] files a candidate declares by hash: from its index entry, or its local archive's manifest."""
    origin = getattr(candidate, "origin", None)
    if isinstance(origin, LocalOrigin):
        return origin.archive.manifest.payloads
    entry = getattr(origin, "entry", None)
    return payloads_from_json((getattr(entry, "extra", None) or {}).get("payloads"))


def _payload_plan(paths: Paths, plan: Any) -> list[Any]:
    """``-s``: each payload the plan's packages declare by hash, and whether it must be fetched."""
    store = Store(paths)
    out = []
    for a in plan.actions:
        if a.op in ("install", "upgrade", "downgrade") and a.candidate is not None:
            for p in candidate_payloads(a.candidate):
                out.append(origins.PayloadPlan(a.name, p, origins.status(store, p, paths.cache)))
    return out


def _run_plan(
    paths: Paths,
    db: StateDB,
    command: str,
    args: list[str],
    plan: Any,
    requested: set[str],
    *,
    simulate: bool,
    reporter: Reporter,
    confirm: Callable[[Proposal], None] | None,
    link_local: bool = False,
) -> TxResult:
    proposal = Proposal(command, plan, requested)
    result = TxResult(command, proposal, simulate)
    if simulate:
        result.payload_plan = _payload_plan(paths, plan)
    if simulate or not plan.actions:
        return result
    if confirm is not None:
        confirm(proposal)

    def fetch(action: Any, rep: Reporter):
        origin = getattr(action.candidate, "origin", None)
        if origin is None or not hasattr(origin, "fetch"):
            raise NotFoundError(
                f"no source offers {action.name} {action.new_version} any more",
                "run `llmos update`, or install it from its .llmos archive",
            )
        archive = origin.fetch(paths, rep)
        # [[payload]] files declared by hash: fetched from their origins into the store before staging
        result.payloads.extend(
            origins.ensure_archive_payloads(
                Store(paths), Path(archive), cache_dir=paths.cache, reporter=rep, link_local=link_local, source=getattr(origin, "source", None)
            )
        )
        return archive, origin.source_name, origin.sha256

    # validate_staged: GGUF files are checked (readable, a usable LoRA) before the commit
    done = tx.execute(paths, db, plan, command=command, argv=_argv(command, args), fetch=fetch, reporter=reporter, validate=validate_staged)
    result.txid = done.txid
    result.staged_files = done.staged_files
    result.staged_bytes = done.staged_bytes
    result.removed_blobs = done.removed_blobs
    return result


# ---------------------------------------------------------------- changing operations


def install(
    specs: list[str],
    *,
    simulate: bool = False,
    reporter: Reporter | None = None,
    confirm: Callable[[Proposal], None] | None = None,
    paths: Paths | None = None,
    link_local: bool = False,
) -> TxResult:
    """Install packages by name/constraint or from ``.llmos`` archives, with their dependencies.

    ``link_local``: payloads declared by hash with a ``file://`` origin are hard-linked
    (or reflinked) into the store after hashing instead of copied (``import-model --link``).
    """

    rep = reporter or NullReporter()
    paths = _paths(paths)
    if not specs:
        raise UsageError("nothing to install", "name at least one package, e.g. `llmos install med-lib`")
    reqs, local_archives = parse_specs(specs)
    with tx.open_state(paths, "install", write=True, reporter=rep) as db:
        universe = _resolver_universe(paths, db, rep, local_archives)
        plan = resolve(universe, _installed_infos(db), Request(install=reqs))
        requested = {r.name for r in reqs}
        return _run_plan(paths, db, "install", list(specs), plan, requested, simulate=simulate, reporter=rep, confirm=confirm, link_local=link_local)


def remove(
    names: list[str],
    *,
    simulate: bool = False,
    reporter: Reporter | None = None,
    confirm: Callable[[Proposal], None] | None = None,
    paths: Paths | None = None,
) -> TxResult:
    """Remove installed packages; refused (DependentsError) while others need them."""

    rep = reporter or NullReporter()
    paths = _paths(paths)
    if not names:
        raise UsageError("nothing to remove", "name at least one installed package")
    with tx.open_state(paths, "remove", write=True, reporter=rep) as db:
        names = _require_installed(db, names)
        # removal needs no registry: installed packages are candidates of their own
        plan = resolve([], _installed_infos(db), Request(remove=list(names)))
        return _run_plan(paths, db, "remove", list(names), plan, set(names), simulate=simulate, reporter=rep, confirm=confirm)


def autoremove(
    *,
    simulate: bool = False,
    reporter: Reporter | None = None,
    confirm: Callable[[Proposal], None] | None = None,
    paths: Paths | None = None,
) -> TxResult:
    """Remove packages installed as dependencies that nothing needs any more.

    Like apt's autoremove this is a mark-and-sweep over the installed set
    (``autoremovable``), not a solve: what it removes is by definition needed
    by nothing that stays.
    """

    rep = reporter or NullReporter()
    paths = _paths(paths)
    with tx.open_state(paths, "autoremove", write=True, reporter=rep) as db:
        installed = db.installed()
        infos = _installed_infos(db)
        names = list(autoremovable(infos))
        plan = _removal_plan([installed[n].meta for n in names], "no longer needed")
        # autoremove names nothing itself: apt asks before removing, so do we
        return _run_plan(paths, db, "autoremove", [], plan, set(), simulate=simulate, reporter=rep, confirm=confirm)


def _removal_plan(metas: list[PackageMeta], reason: str) -> Any:
    """Remove ``metas``, dependents before what they depend on."""

    left = {m.name: m for m in metas}

    def needed_inside(name: str) -> bool:
        provided = {name, *left[name].provides}
        for other in left.values():
            if other.name == name:
                continue
            for dep in other.all_depends():
                if any(alt.name in provided for alt in dep.alternatives):
                    return True
        return False

    order: list[str] = []
    while left:
        free = sorted(n for n in left if not needed_inside(n)) or sorted(left)[:1]  # a cycle: break it by name
        for n in free:
            order.append(n)
            left.pop(n)
    by_name = {m.name: m for m in metas}
    actions = [Action(Op.REMOVE, n, by_name[n].version, None, None, True, reason) for n in order]
    return Plan(actions=actions, unneeded=[])


def upgrade(
    names: list[str] | None = None,
    *,
    simulate: bool = False,
    reporter: Reporter | None = None,
    confirm: Callable[[Proposal], None] | None = None,
    paths: Paths | None = None,
) -> TxResult:
    """Upgrade the named packages (all that are not held when ``names`` is empty)."""

    rep = reporter or NullReporter()
    paths = _paths(paths)
    names = list(names or [])
    with tx.open_state(paths, "upgrade", write=True, reporter=rep) as db:
        if names:
            names = _require_installed(db, names)
            request = Request(upgrade=names)
            requested = set(names)
        else:
            request = Request(upgrade_all=True)
            requested = set(db.installed())
        plan = resolve(_resolver_universe(paths, db, rep), _installed_infos(db), request)
        return _run_plan(paths, db, "upgrade", names, plan, requested, simulate=simulate, reporter=rep, confirm=confirm)


def _set_hold(command: str, names: list[str], value: bool, simulate: bool, reporter: Reporter | None, paths: Paths | None) -> HoldResult:
    rep = reporter or NullReporter()
    paths = _paths(paths)
    if not names:
        raise UsageError(f"nothing to {command}", "name at least one installed package")
    with tx.open_state(paths, command, write=True, reporter=rep) as db:
        names = _require_installed(db, names)
        installed = db.installed()
        changed = [n for n in names if installed[n].held != value]
        unchanged = [n for n in names if n not in changed]
        result = HoldResult(command, changed, unchanged, simulate)
        if simulate or not changed:
            return result
        records = [
            {
                "action": command,
                "name": n,
                "old_version": installed[n].version,
                "new_version": installed[n].version,
                "auto": installed[n].auto,
                "reason": "requested",
            }
            for n in changed
        ]

        def apply() -> None:
            for n in changed:
                db.set_flag(n, "held", int(value))

        result.txid = tx.record_simple(db, command, _argv(command, names), records, apply)
        return result


def hold(names: list[str], *, simulate: bool = False, reporter: Reporter | None = None, paths: Paths | None = None) -> HoldResult:
    """Keep packages at their installed version (upgrade and the resolver leave them alone)."""
    return _set_hold("hold", names, True, simulate, reporter, paths)


def unhold(names: list[str], *, simulate: bool = False, reporter: Reporter | None = None, paths: Paths | None = None) -> HoldResult:
    return _set_hold("unhold", names, False, simulate, reporter, paths)


# ---------------------------------------------------------------- reporting operations


def show(name: str, *, reporter: Reporter | None = None, paths: Paths | None = None) -> ShowResult:
    """Installed and available versions of ``name``, relations, files and marks."""

    rep = reporter or NullReporter()
    paths = _paths(paths)
    with tx.open_state(paths, "show", write=False, reporter=rep) as db:
        installed = db.get(name, with_files=True)
        universe = _resolver_universe(paths, db, rep)  # lazy: only this name's records are parsed
        infos = _installed_infos(db)
        all_installed = db.installed()
    available = sorted(
        universe.named(name),
        key=lambda c: (c.meta.parsed_version, c.priority),
        reverse=True,
    )
    provided_by = sorted(
        {f"{c.meta.name} {c.meta.version}" for c in universe.providing(name)}
        | {f"{p.name} {p.version} (installed)" for p in all_installed.values() if name in p.meta.provides}
    )
    if installed is None and not available and not provided_by:
        names = set(universe.names()) | set(all_installed)
        raise NotFoundError(f"unknown package {name!r}", _did_you_mean(name, names) or "try `llmos search`, or `llmos update` to refresh the indexes")
    required_by = reverse_dependents(infos, name) if installed is not None else []
    return ShowResult(name, installed, available, provided_by, sorted(required_by))


def search(text: str, *, reporter: Reporter | None = None, paths: Paths | None = None) -> SearchResult:
    """Packages whose name, summary, provides or description contain ``text`` (case-insensitive)."""
    rep = reporter or NullReporter()
    paths = _paths(paths)
    needle = text.strip().lower()
    with tx.open_state(paths, "search", write=False, reporter=rep) as db:
        universe = _universe(paths, db, rep)
        installed = db.installed()

    def haystack(meta: PackageMeta, description: str) -> str:
        return "\n".join([meta.name, meta.summary, " ".join(meta.provides), description]).lower()

    best: dict[str, Any] = {}
    for c in universe:
        cur = best.get(c.meta.name)
        if cur is None or (c.meta.parsed_version, c.priority) > (cur.meta.parsed_version, cur.priority):
            best[c.meta.name] = c
    hits: list[SearchHit] = []
    for name, c in best.items():
        extra = getattr(getattr(c.origin, "entry", None), "extra", {}) or {}
        if needle in haystack(c.meta, str(extra.get("description", ""))):
            inst = installed.get(name)
            hits.append(
                SearchHit(name, c.meta.version, c.meta.kind, c.meta.summary, list(c.meta.provides), c.origin.source_name, inst.version if inst else None)
            )
    for name, p in installed.items():  # installed from a local archive, gone from every index
        if name in best:
            continue
        if needle in haystack(p.meta, p.typed_manifest.description):
            hits.append(SearchHit(name, p.version, p.kind, p.meta.summary, list(p.meta.provides), p.source, p.version))
    hits.sort(key=lambda h: h.name)
    return SearchResult(text, hits)


def verify(names: list[str] | None = None, *, reporter: Reporter | None = None, paths: Paths | None = None) -> VerifyResult:
    """Re-hash every installed file's blob; name each changed or missing file."""
    rep = reporter or NullReporter()
    paths = _paths(paths)
    # One consistent snapshot of the file list, hashed under the store's reader lock:
    # a concurrent upgrade's garbage collection waits, so no blob of it vanishes (issue 11, item 10).
    with tx.open_state(paths, "verify", write=False, reporter=rep) as db, tx.reading_store(paths):
        with db.snapshot():
            if names:
                names = _require_installed(db, names)
                pkgs = [db.get(n, with_files=True) for n in names]
            else:
                pkgs = list(db.installed(with_files=True).values())
        store = Store(paths)
        result = VerifyResult(packages=len(pkgs), files=sum(len(p.files) for p in pkgs if p))
        seen: dict[str, str | None] = {}
        total = sum(f.size for p in pkgs if p for f in p.files)
        with rep.task("Verifying", total=total or None, unit="bytes") as task:
            for p in pkgs:
                assert p is not None
                for f in p.files:
                    if f.sha256 not in seen:
                        seen[f.sha256] = store.hash_blob(f.sha256)
                    task.advance(f.size)
                    actual = seen[f.sha256]
                    if actual is None:
                        result.problems.append(VerifyProblem(p.name, p.version, f.path, f.sha256, "missing"))
                    elif actual != f.sha256:
                        result.problems.append(VerifyProblem(p.name, p.version, f.path, f.sha256, "changed", actual))
    return result


def history(limit: int | None = None, *, reporter: Reporter | None = None, paths: Paths | None = None) -> HistoryResult:
    if limit is not None and limit < 0:
        raise UsageError("--limit must be 0 or more")
    paths = _paths(paths)
    with tx.open_state(paths, "history", write=False, reporter=reporter) as db:
        return HistoryResult(db.history(limit or None))
