"""``llmos mirror SOURCE DIR [NAME...]``: an offline copy of a source, or of what some packages need.

* With NAMEs (``name`` or ``name>=1.2``): the newest matching version of each,
  plus the closure of their dependencies and base models.  For a dependency
  with alternatives (``a | b``) or on a virtual name, every alternative and
  every provider that can satisfy it is taken, so the resolver on the offline
  machine keeps all of its choices.  The folder is then indexed like
  ``llmos publish`` does (signed with ``--sign KEY``).
* Without NAMEs: every package of the source, and -- unless ``--sign`` asks
  for a new signature -- the publisher's own signed index is copied as it is,
  so the offline machine can pin the publisher's key.
* ``--print-uris`` prints what would be fetched (apt's ``'URI' file size
  SHA256:hash``) and changes nothing.
* Payloads declared by hash (``[[payload]]``) are copied to
  ``DIR/blobs/sha256/<sha256>`` (from the local store, the download cache or
  their origins, verified), so an air-gapped mirror serves them too: an
  install tries the blob folder of the package's source before the origins.

Archives come through the source's ``fetch_archive``, i.e. verified against
the index that ``llmos update`` accepted (signature, rollback checks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmos_cli.errors import NotFoundError, UnsatisfiableError, UsageError, from_os_error
from llmos_cli.fileio import sha256_file, write_atomic
from llmos_cli.paths import Paths, get_paths
from llmos_cli.pkg.external import payloads_from_json
from llmos_cli.pkg.meta import Dependency, RelationError, Req
from llmos_cli.progress import NullReporter, Reporter
from llmos_cli.registry import lists, origins
from llmos_cli.registry.download import fetch_all
from llmos_cli.registry.index import INDEX_NAME, SIG_SUFFIX, Index, IndexEntry
from llmos_cli.registry.kinds import make_source
from llmos_cli.registry.publish import copy_file, publish
from llmos_cli.state.db import StateDB, state_lock
from llmos_cli.state.store import Store


@dataclass
class MirrorItem:
    name: str
    version: str
    filename: str
    size: int
    sha256: str
    uri: str
    status: str = "planned"  # planned | added | unchanged

    def apt_line(self) -> str:
        return f"'{self.uri}' {Path(self.filename).name} {self.size} SHA256:{self.sha256}"

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "filename": self.filename,
            "size": self.size,
            "sha256": self.sha256,
            "uri": self.uri,
            "status": self.status,
        }


@dataclass
class MirrorBlob:
    """A payload declared by hash, copied to ``blobs/sha256/<sha>`` so the mirror serves it too."""

    package: str
    path: str
    size: int
    sha256: str
    origins: list[str]
    status: str = "planned"  # planned | added | unchanged

    def apt_lines(self) -> list[str]:
        return [f"'{o}' {Path(self.path).name} {self.size} SHA256:{self.sha256}" for o in self.origins]

    def to_json(self) -> dict:
        return {"package": self.package, "path": self.path, "size": self.size, "sha256": self.sha256, "origins": self.origins, "status": self.status}


@dataclass
class MirrorResult:
    source: str
    dest: str
    items: list[MirrorItem] = field(default_factory=list)
    verbatim: bool = False
    index_version: int | None = None
    signed: bool = False
    print_uris: bool = False
    simulate: bool = False
    blobs: list[MirrorBlob] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(i.size for i in self.items) + sum(b.size for b in self.blobs)

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "dest": self.dest,
            "packages": [i.to_json() for i in self.items],
            "total_bytes": self.total_bytes,
            "verbatim_index": self.verbatim,
            "index_version": self.index_version,
            "signed": self.signed,
            "print_uris": self.print_uris,
            "simulate": self.simulate,
            "blobs": [b.to_json() for b in self.blobs],
        }


# ---------------------------------------------------------------- closure


def _matches(entry: IndexEntry, req: Req, models_only: bool) -> bool:
    if models_only and entry.meta.kind != "model":
        return False
    if entry.name == req.name:
        return req.matches(entry.meta.parsed_version)
    return req.name in entry.meta.provides and not str(req.spec)


def _best(entries: list[IndexEntry], req: Req, models_only: bool = False) -> list[IndexEntry]:
    """The newest version of each package that satisfies ``req`` (real or virtual name)."""
    newest: dict[str, IndexEntry] = {}
    for e in entries:
        if _matches(e, req, models_only) and (e.name not in newest or e.meta.parsed_version > newest[e.name].meta.parsed_version):
            newest[e.name] = e
    return sorted(newest.values(), key=lambda e: e.name)


def closure(index: Index, names: list[str]) -> list[IndexEntry]:
    """The entries that ``names`` need, dependencies and base models included (see module doc)."""
    try:
        roots = [Req.parse(n) for n in names]
    except RelationError as exc:
        raise UsageError(str(exc)) from None
    chosen: dict[tuple[str, str], IndexEntry] = {}
    todo: list[tuple[IndexEntry, str]] = []
    for req in roots:
        found = _best(index.entries, req)
        if not found:
            known = any(e.name == req.name or req.name in e.meta.provides for e in index.entries)
            cls = UnsatisfiableError if known else NotFoundError
            raise cls(f"no package in the source satisfies {req}", "see `llmos search`, or run `llmos update`")
        todo += [(e, str(req)) for e in found]
    while todo:
        entry, why = todo.pop()
        key = (entry.name, entry.version)
        if key in chosen:
            continue
        chosen[key] = entry
        deps: list[tuple[Dependency, bool]] = [(d, False) for d in entry.meta.depends]
        if entry.meta.base is not None:
            deps.append((Dependency((entry.meta.base,)), True))
        for dep, models_only in deps:
            found = [e for alt in dep.alternatives for e in _best(index.entries, alt, models_only)]
            if not found:
                raise UnsatisfiableError(
                    f"{entry.meta.id} needs {'base model ' if models_only else ''}{dep}, which the source does not offer",
                    "the source is incomplete; tell its publisher",
                )
            todo += [(e, entry.meta.id) for e in found]
    return sorted(chosen.values(), key=lambda e: (e.name, e.meta.parsed_version))


# ---------------------------------------------------------------- mirror


def _uri(src: object, entry: IndexEntry) -> str:
    uri = getattr(src, "uri", None)
    if callable(uri):
        return str(uri(entry.filename))
    root = getattr(src, "root", None)  # a folder source
    if root is not None:
        return (Path(root) / entry.filename).absolute().as_uri()
    return entry.filename


def mirror(
    source: str,
    dest: Path,
    names: list[str] | None = None,
    *,
    print_uris: bool = False,
    sign_key: Path | None = None,
    expires_days: int | None = None,
    simulate: bool = False,
    reporter: Reporter = NullReporter(),
    paths: Paths | None = None,
) -> MirrorResult:
    """Copy what ``names`` need (everything when empty) from source ``source`` into the folder registry ``dest``."""

    paths = paths or get_paths()
    dest = Path(dest).expanduser()
    names = list(names or [])
    no_change = simulate or print_uris
    with state_lock(paths, "mirror"):
        db = StateDB.open(paths)
        try:
            lists.ensure_default_sources(db)
            row = lists.get_source(db, source)
            lp = lists.list_path(paths, row.name)
            if not lp.is_file():
                lists.update_one(paths, db, row, reporter)
                row = lists.get_source(db, source)
            try:
                raw = lp.read_bytes()
                sp = lists.sig_path(paths, row.name)
                sig = sp.read_bytes() if sp.is_file() else None
            except FileNotFoundError:
                raise NotFoundError(f"source {source} offers no index", "run `llmos update` and check `llmos source list`") from None
            index = Index.from_bytes(raw, f"list of source {row.name}")
            src = make_source(row)
            entries = closure(index, names) if names else list(index.entries)
            verbatim = not names and sign_key is None
            result = MirrorResult(row.name, str(dest), verbatim=verbatim, print_uris=print_uris, simulate=no_change)
            result.items = [MirrorItem(e.name, e.version, e.filename, e.size, e.sha256, _uri(src, e)) for e in entries]
            result.blobs = _planned_blobs(entries)
            result.signed = sign_key is not None or (verbatim and sig is not None)
            if no_change:
                result.index_version = index.version if verbatim else None
                return result
            fetched = fetch_all([(src, e) for e in entries], paths.cache, reporter)
            _copy_blobs(paths, dest, entries, fetched, result, reporter)
            if verbatim:
                _copy_verbatim(dest, entries, fetched, raw, sig, result, reporter)
                result.index_version = index.version
            else:
                pub = publish(fetched, str(dest), sign_key=sign_key, expires_days=expires_days, reporter=reporter)
                status = {(p.name, p.version): p.status for p in pub.packages}
                for item in result.items:
                    item.status = status.get((item.name, item.version), item.status)
                result.index_version = pub.index_version
            return result
        finally:
            db.close()


def _planned_blobs(entries: list[IndexEntry]) -> list[MirrorBlob]:
    """Payloads the entries declare by hash (from the index), each blob once."""
    out: dict[str, MirrorBlob] = {}
    for e in entries:
        for p in payloads_from_json(e.extra.get("payloads")):
            out.setdefault(p.sha256, MirrorBlob(e.name, p.path, p.size, p.sha256, list(p.origins)))
    return list(out.values())


def _copy_blobs(paths: Paths, dest: Path, entries: list[IndexEntry], fetched: list[Path], result: MirrorResult, reporter: Reporter) -> None:
    """``blobs/sha256/<sha>`` for every payload declared by hash (read from the fetched, verified archives)."""
    store = Store(paths)
    seen: dict[str, MirrorBlob] = {b.sha256: b for b in result.blobs}
    for e, path in zip(entries, fetched):
        for p in origins.archive_manifest_payloads(path):
            blob = seen.get(p.sha256)
            if blob is None:  # an index written before payloads were listed in it
                blob = seen[p.sha256] = MirrorBlob(e.name, p.path, p.size, p.sha256, list(p.origins))
                result.blobs.append(blob)
            if blob.status != "planned":
                continue
            target = dest / origins.BLOB_DIR / p.sha256
            blob.status = origins.fetch_blob_file(p, target, store=store, cache_dir=paths.cache, reporter=reporter, copy=copy_file)


def _copy_verbatim(dest: Path, entries: list[IndexEntry], fetched: list[Path], raw: bytes, sig: bytes | None, result: MirrorResult, reporter: Reporter) -> None:
    """Archives at the index's own filenames, then the publisher's index and signature, unchanged."""

    try:
        for e, path, item in zip(entries, fetched, result.items):
            target = dest / e.filename
            if target.is_file() and target.stat().st_size == e.size and sha256_file(target)[0] == e.sha256:
                item.status = "unchanged"
                continue
            copy_file(path, target, reporter)
            item.status = "added"
        sig_file = dest / (INDEX_NAME + SIG_SUFFIX)
        if sig is None:
            sig_file.unlink(missing_ok=True)
        write_atomic(dest / INDEX_NAME, raw)
        if sig is not None:
            write_atomic(sig_file, sig)
    except OSError as exc:
        raise from_os_error(exc, f"writing the mirror {dest}") from exc
