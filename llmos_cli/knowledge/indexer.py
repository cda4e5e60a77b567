"""Build-time knowledge artifacts: chunked documents in an SQLite FTS5 index.

``llmos build`` calls ``build_artifacts(manifest, src)``; what it returns is
shipped inside the package under ``.llmos/``:

* ``.llmos/knowledge.sqlite`` -- every document matched by
  ``[knowledge] documents`` (Markdown or plain text), cut into overlapping
  chunks, in an FTS5 table ranked with BM25;
* ``.llmos/glossary.json`` -- the normalised glossary (see ``glossary``).

Chunks are measured in words (runs of non-space characters) because the
model's tokenizer is not known at build time: ``chunk_size`` words per chunk
(default 200), each sharing ``chunk_overlap`` words (default 40) with the
previous one.  Markdown headings start a new chunk, and each chunk carries its
heading path ("Heart > Symptoms") as a separately weighted field.  A window
ends early at a paragraph or sentence end when one lies in its last quarter.

The index is byte-reproducible for a given SQLite version: it is written in a
temporary file with a fixed page size, documents in sorted order, no
timestamps, then optimised and VACUUMed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmos_cli.errors import InvalidPackageError
from llmos_cli.fileio import atomic_path
from llmos_cli.knowledge.glossary import parse_glossary
from llmos_cli.pkg.manifest import safe_relpath

if TYPE_CHECKING:
    from llmos_cli.pkg.manifest import Manifest

INDEX_PATH = ".llmos/knowledge.sqlite"
GLOSSARY_PATH = ".llmos/glossary.json"
INDEX_FORMAT = 1
DEFAULT_CHUNK_SIZE = 200
DEFAULT_CHUNK_OVERLAP = 40
#: FTS5 tokenizer: Porter stemming over Unicode word splitting, accents folded
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"
TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".text", ".rst", ""}
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024

_WORD = re.compile(r"\S+\s*")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_SENTENCE_END = re.compile(r"[.!?:;][\"')\]]*\s+$")


@dataclass(frozen=True)
class Chunk:
    document: str  # path inside the package
    ordinal: int  # 1-based, in document order
    section: str  # heading path, "" when none
    text: str
    words: int


# ---------------------------------------------------------------- chunking


def _sections(text: str, markdown: bool) -> list[tuple[str, str]]:
    """Split into (heading path, body) at Markdown headings (outside code fences)."""
    if not markdown:
        return [("", text)]
    out: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []
    in_fence = False

    def flush() -> None:
        joined = "".join(body)
        if joined.strip():
            out.append((" > ".join(t for _, t in stack), joined))
        body.clear()

    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("```") or stripped.startswith("~~~"):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line.rstrip("\n"))
        if m:
            flush()
            level = len(m.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, m.group(2).strip()))
        else:
            body.append(line)
    flush()
    return out


def chunk_text(text: str, document: str, chunk_size: int = DEFAULT_CHUNK_SIZE, overlap: int = DEFAULT_CHUNK_OVERLAP) -> list[Chunk]:
    """Cut one document into overlapping word windows, section by section."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if not 0 <= overlap < chunk_size:
        raise ValueError("chunk_overlap must be at least 0 and smaller than chunk_size")
    markdown = Path(document).suffix.lower() in (".md", ".markdown")
    chunks: list[Chunk] = []
    for section, body in _sections(text.replace("\r\n", "\n").replace("\r", "\n"), markdown):
        words = _WORD.findall(body.lstrip())
        i = 0
        n = len(words)
        while i < n:
            end = min(i + chunk_size, n)
            if end < n:
                # end early at a paragraph or sentence end in the window's last quarter
                floor = i + max(1, (3 * chunk_size) // 4)
                for j in range(end, floor, -1):
                    w = words[j - 1]
                    if "\n\n" in w or _SENTENCE_END.search(w):
                        end = j
                        break
            piece = "".join(words[i:end]).strip()
            chunks.append(Chunk(document, len(chunks) + 1, section, piece, end - i))
            if end >= n:
                break
            i = max(end - overlap, i + 1)
    return chunks


# ---------------------------------------------------------------- the index file

_SCHEMA = f"""
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE docs(id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, title TEXT NOT NULL, sha256 TEXT NOT NULL, chunks INTEGER NOT NULL);
CREATE TABLE chunks(id INTEGER PRIMARY KEY, doc INTEGER NOT NULL REFERENCES docs(id), ord INTEGER NOT NULL,
                    section TEXT NOT NULL, text TEXT NOT NULL, words INTEGER NOT NULL, tokens INTEGER NOT NULL DEFAULT 0);
CREATE VIRTUAL TABLE chunks_fts USING fts5(section, text, content='chunks', content_rowid='id', tokenize='{FTS_TOKENIZER}');
CREATE TABLE terms(term TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID;
"""


def _varints(blob: bytes) -> list[int]:
    """Decode SQLite varints (FTS5's docsize records: one token count per column)."""
    out: list[int] = []
    i = 0
    while i < len(blob):
        v = 0
        for j in range(9):
            b = blob[i]
            i += 1
            if j == 8:
                v = (v << 8) | b
                break
            v = (v << 7) | (b & 0x7F)
            if not b & 0x80:
                break
        out.append(v)
    return out


def _title(text: str, path: str) -> str:
    for line in text.splitlines()[:50]:
        m = _HEADING.match(line)
        if m and len(m.group(1)) == 1:
            return m.group(2).strip()
    return Path(path).stem


def write_index(
    documents: Iterable[tuple[str, str]],
    out: Path,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
) -> dict[str, int]:
    """Write an index of ``(path, text)`` documents to ``out`` (replaced atomically).

    Returns counts: ``{"documents": n, "chunks": m, "words": w}``.
    """
    import hashlib
    import sqlite3

    docs = sorted(documents)
    counts = {"documents": 0, "chunks": 0, "words": 0}
    with atomic_path(out, suffix=".sqlite.incomplete") as tmp:
        tmp.unlink()  # SQLite creates it
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            conn.execute("PRAGMA page_size=4096")
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("BEGIN")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            meta = {
                "format": str(INDEX_FORMAT),
                "chunk_size": str(chunk_size),
                "chunk_overlap": str(chunk_overlap),
                "chunk_unit": "words",
                "tokenizer": FTS_TOKENIZER,
            }
            conn.executemany("INSERT INTO meta(key, value) VALUES(?, ?)", sorted(meta.items()))
            chunk_id = 0
            for doc_id, (path, text) in enumerate(docs, start=1):
                chunks = chunk_text(text, path, chunk_size, chunk_overlap)
                sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
                conn.execute(
                    "INSERT INTO docs(id, path, title, sha256, chunks) VALUES(?,?,?,?,?)",
                    (doc_id, path, _title(text, path), sha, len(chunks)),
                )
                rows = []
                for c in chunks:
                    chunk_id += 1
                    rows.append((chunk_id, doc_id, c.ordinal, c.section, c.text, c.words))
                    counts["words"] += c.words
                conn.executemany("INSERT INTO chunks(id, doc, ord, section, text, words) VALUES(?,?,?,?,?,?)", rows)
                counts["documents"] += 1
                counts["chunks"] += len(chunks)
            conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES('rebuild')")
            conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES('optimize')")
            # corpus statistics for BM25 over several libraries (see retrieve.py)
            conn.execute("CREATE VIRTUAL TABLE temp.vocab_row USING fts5vocab(main, 'chunks_fts', 'row')")
            conn.execute("INSERT INTO terms(term, df) SELECT term, doc FROM temp.vocab_row ORDER BY term")
            conn.execute("DROP TABLE temp.vocab_row")
            # tokens per chunk (both columns), from FTS5's own per-row size records
            sizes = [(sum(_varints(sz)), rowid) for rowid, sz in conn.execute("SELECT id, sz FROM chunks_fts_docsize")]
            conn.executemany("UPDATE chunks SET tokens=? WHERE id=?", sizes)
            n, total = conn.execute("SELECT count(*), coalesce(sum(tokens), 0) FROM chunks").fetchone()
            conn.executemany(
                "INSERT INTO meta(key, value) VALUES(?, ?)",
                [("n_chunks", str(n)), ("avg_tokens", f"{(total / n if n else 0.0):.6f}")],
            )
            conn.execute("COMMIT")
            conn.execute("VACUUM")
        finally:
            conn.close()
    return counts


# ---------------------------------------------------------------- build hook


def _knowledge_settings(manifest: Manifest) -> tuple[int, int]:
    kn = manifest.knowledge
    size = kn.chunk_size if kn.chunk_size is not None else DEFAULT_CHUNK_SIZE
    overlap = kn.chunk_overlap if kn.chunk_overlap is not None else min(DEFAULT_CHUNK_OVERLAP, size // 5)
    if size < 1:
        raise InvalidPackageError(f"knowledge.chunk_size: must be a positive integer, not {size!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < size:
        raise InvalidPackageError(f"knowledge.chunk_overlap: must be at least 0 and smaller than chunk_size ({size}), not {overlap!r}")
    return size, overlap


def collect_documents(manifest: Manifest, src: Path) -> list[tuple[str, str]]:
    """Resolve ``[knowledge] documents`` globs under ``src`` into (path, text), sorted."""

    root = src.resolve()
    found: dict[str, str] = {}
    for i, pattern in enumerate(manifest.document_globs()):
        if safe_relpath(pattern) is None:
            raise InvalidPackageError(f"knowledge.documents[{i}]: {pattern!r} must be a relative glob inside the package")
        for p in sorted(src.glob(pattern)):
            if not p.is_file():
                continue
            rel = p.relative_to(src).as_posix()
            if rel == "llmos.toml" or rel.startswith(".llmos/"):
                continue
            try:
                p.resolve().relative_to(root)
            except ValueError:
                raise InvalidPackageError(f"knowledge.documents: {rel} points outside the package") from None
            if rel in found:
                continue
            if p.suffix.lower() not in TEXT_SUFFIXES:
                raise InvalidPackageError(
                    f"knowledge.documents: {rel} is not a Markdown or plain-text file",
                    "only .md, .markdown, .txt, .text and .rst documents are indexed; narrow the glob",
                )
            data = p.read_bytes()
            if len(data) > MAX_DOCUMENT_BYTES:
                raise InvalidPackageError(f"knowledge.documents: {rel} is larger than {MAX_DOCUMENT_BYTES >> 20} MiB")
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise InvalidPackageError(f"knowledge.documents: {rel} is not UTF-8 text (byte {exc.start})", "convert it to UTF-8") from None
            if "\x00" in text:
                raise InvalidPackageError(f"knowledge.documents: {rel} contains NUL bytes; it is not a text file")
            found[rel] = text
    if not found:
        globs = ", ".join(repr(g) for g in manifest.document_globs())
        raise InvalidPackageError(
            f"knowledge.documents: {globs} match{'es' if len(manifest.document_globs()) == 1 else ''} no file",
            "check the globs; they are relative to the package folder (use ** for subfolders)",
        )
    return sorted(found.items())


def build_artifacts(manifest: Manifest, src: Path) -> dict[str, bytes]:
    """Hook called by ``llmos build``: files to ship under ``.llmos/``.

    Deterministic: the same manifest and documents give the same bytes.
    Raises ``InvalidPackageError`` naming the field or file at fault.
    """
    import tempfile

    src = Path(src)
    out: dict[str, bytes] = {}
    if manifest.kind != "library":
        return out
    if manifest.document_globs():
        size, overlap = _knowledge_settings(manifest)
        docs = collect_documents(manifest, src)
        with tempfile.TemporaryDirectory(prefix="llmos-index-") as tmp:
            target = Path(tmp) / "knowledge.sqlite"
            write_index(docs, target, chunk_size=size, chunk_overlap=overlap)
            out[INDEX_PATH] = target.read_bytes()
    gfile = manifest.glossary.file if manifest.glossary else None
    if gfile is not None:
        p = src / gfile
        try:
            text = p.read_bytes()
        except FileNotFoundError:
            raise InvalidPackageError(f"glossary.file: {gfile} does not exist in {src}") from None
        out[GLOSSARY_PATH] = parse_glossary(text, manifest.name, origin=gfile).dumps()
    return out
