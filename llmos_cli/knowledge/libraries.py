"""What an installed library brings to a prompt.

A ``LibraryView`` maps the library's package paths to files on disk (blobs
of the content-addressed store for installed packages, or a plain folder for
a source tree in tests and benchmarks) and opens its knowledge index,
glossary, system-prompt fragment and tool declarations on demand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_cli.errors import IntegrityError, InvalidPackageError, NotFoundError
from llmos_cli.knowledge.glossary import Glossary
from llmos_cli.knowledge.indexer import GLOSSARY_PATH, INDEX_PATH
from llmos_cli.knowledge.retrieve import KnowledgeIndex
from llmos_cli.paths import get_paths
from llmos_cli.pkg.manifest import MANIFEST_NAME, Manifest, McpDecl, ToolDecl
from llmos_cli.state.db import StateDB
from llmos_cli.state.store import Store


@dataclass
class LibraryView:
    name: str
    version: str
    manifest: Manifest
    #: package path -> file on disk
    files: dict[str, Path] = field(default_factory=dict)
    scale: float = 1.0
    _index: Any = field(default=None, repr=False)
    _glossary: Any = field(default=None, repr=False)

    # ------------------------------------------------------------ construction

    @classmethod
    def from_installed(cls, pkg: Any, paths: Any) -> LibraryView:
        """From a ``state.db.InstalledPackage`` (loaded ``with_files=True``)."""

        store = Store(paths)
        files = {f.path: store.path_for(f.sha256) for f in pkg.files}
        return cls(pkg.name, pkg.version, pkg.typed_manifest, files, pkg.effective_scale())

    @classmethod
    def from_folder(cls, folder: Path, manifest: Manifest | None = None) -> LibraryView:
        """From an unpacked package or a source folder with its ``.llmos/`` artifacts.

        The folder's manifest is read as it is (``Manifest.read_folder``), not judged:
        tests and benchmarks give folders whose tools are meant to misbehave.
        """
        folder = Path(folder)
        if manifest is None:
            manifest = Manifest.read_folder(folder)
        files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        files.pop(MANIFEST_NAME, None)
        return cls(manifest.name, manifest.version, manifest, files)

    # ------------------------------------------------------------ parts

    @property
    def has_knowledge(self) -> bool:
        return INDEX_PATH in self.files or bool(self.manifest.knowledge.documents)

    def index(self):
        """The opened ``KnowledgeIndex``, or None when the library has no documents."""

        if self._index is None:
            path = self.files.get(INDEX_PATH)
            if path is None:
                if self.manifest.knowledge.documents:
                    raise IntegrityError(
                        f"library {self.name}: declares documents but ships no knowledge index ({INDEX_PATH})",
                        f"rebuild the package with this llmos, or reinstall {self.name}",
                    )
                return None
            self._index = KnowledgeIndex.open(self.name, self.version, path)
        return self._index

    def glossary(self):
        """The library's ``Glossary`` (possibly empty)."""

        if self._glossary is None:
            path = self.files.get(GLOSSARY_PATH)
            if path is None:
                if self.manifest.glossary and self.manifest.glossary.file:
                    raise IntegrityError(
                        f"library {self.name}: declares a glossary but ships no {GLOSSARY_PATH}",
                        f"rebuild the package with this llmos, or reinstall {self.name}",
                    )
                self._glossary = Glossary(self.name, [])
            else:
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    raise IntegrityError(f"library {self.name}: glossary file {path} is missing", f"run `llmos verify {self.name}` and reinstall it") from None
                self._glossary = Glossary.loads(data, self.name, origin=str(path))
        return self._glossary

    def system_fragment(self) -> str:
        rel = self.manifest.prompt.system if self.manifest.prompt else None
        if rel is None:
            return ""
        path = self.files.get(rel)
        if path is None:
            raise IntegrityError(f"library {self.name}: system prompt {rel} is not among its files")
        try:
            return path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise IntegrityError(f"library {self.name}: system prompt file {path} is missing", f"run `llmos verify {self.name}` and reinstall it") from None
        except UnicodeDecodeError:
            raise InvalidPackageError(f"library {self.name}: system prompt {rel} is not UTF-8 text") from None

    def tool_decls(self) -> list[ToolDecl]:
        return self.manifest.tools

    def mcp_decls(self) -> list[McpDecl]:
        return self.manifest.mcp

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None


def installed_libraries(paths: Any = None, names: list[str] | None = None, *, attached_only: bool = True) -> list[LibraryView]:
    """Installed library packages, sorted by name.

    ``names`` picks exactly those (whether attached or not) and raises
    ``NotFoundError`` for one that is not an installed library.
    """

    paths = paths or get_paths()
    if not paths.db.exists():
        if names:
            raise NotFoundError(f"library {names[0]!r} is not installed", f"install it first: llmos install {names[0]}")
        return []
    db = StateDB.open(paths)
    try:
        installed = db.installed(with_files=True)
    finally:
        db.close()
    if names:
        out = []
        for n in names:
            pkg = installed.get(n)
            if pkg is None or pkg.kind != "library":
                raise NotFoundError(f"library {n!r} is not installed", f"see `llmos list --kind library`, or install it: llmos install {n}")
            out.append(LibraryView.from_installed(pkg, paths))
        return out
    return [LibraryView.from_installed(p, paths) for p in installed.values() if p.kind == "library" and (p.attached or not attached_only)]
