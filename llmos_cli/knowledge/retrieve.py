"""Query the knowledge indexes of several libraries together.

Each library ships its own FTS5 index (``indexer``).  A query is turned into
an FTS5 ``OR`` query of its content words (stop words dropped, so that "what
is the ..." does not match every chunk).  Each index proposes candidates
(its best chunks by FTS5's own BM25), and every candidate is then scored
again with BM25 over the *union* of the queried libraries: document
frequencies, chunk count and average chunk length are summed from the
statistics each index ships (``terms`` table, ``meta``), and term counts of
the candidates come from the same FTS5 tokenizer.  The merged ranking is thus
the one a single index holding every library would give.

Why not merge per-library ranks (e.g. reciprocal rank fusion): that puts each
library's best chunk level with every other library's best chunk, so a
library matching one query word by chance ranks as high as one matching all
of them.  And why not FTS5's ``bm25()`` values as they are: its IDF is
clamped to ~0 for a word found in more than half of a library's chunks,
which in a small library is nearly every word.  The rescoring uses the
non-negative IDF ``ln(1 + (N - n + 0.5) / (n + 0.5))`` (Lucene's), k1 = 1.2,
b = 0.75, and counts a heading match twice.  Ties break by library, document
and chunk number, so results are deterministic.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llmos_cli.errors import IntegrityError
from llmos_cli.knowledge.indexer import FTS_TOKENIZER

INDEX_FORMAT = 1
MAX_QUERY_TERMS = 32
#: weights of the FTS columns (section heading, text) in BM25
BM25_WEIGHTS = (2.0, 1.0)
K1 = 1.2
B = 0.75
#: candidates each index proposes per query, at least
MIN_CANDIDATES = 10
#: most chunks FTS5 may score per library and query (see _library_candidates)
SCORE_BUDGET = 800

_WORD = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here hers
    herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
    once only or other our ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves tell please explain describe give show
    """.split()
)


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk."""

    library: str
    version: str
    document: str
    chunk: int
    section: str
    text: str
    score: float
    rank: int = 0
    #: share of the query's IDF mass this chunk covers (``search``; 1.0 when not computed)
    coverage: float = 1.0

    @property
    def cite_id(self) -> str:
        """``lib:doc#chunk`` (``doc#chunk`` for an input with no library, e.g. ``stdin#12``)."""
        return f"{self.library}:{self.document}#{self.chunk}" if self.library else f"{self.document}#{self.chunk}"

    @property
    def citation(self) -> str:
        return f"[{self.cite_id}]"

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "library": self.library,
            "version": self.version,
            "document": self.document,
            "chunk": self.chunk,
            "section": self.section,
            "score": round(self.score, 4),
            "coverage": round(self.coverage, 4),
            "citation": self.citation,
            "text": self.text,
        }


def query_terms(text: str) -> list[str]:
    """Content words of a query, lower-cased, first occurrence order."""
    seen: list[str] = []
    for w in _WORD.findall(text.casefold()):
        if w in STOPWORDS or (len(w) < 2 and not w.isdigit()) or w in seen:
            continue
        seen.append(w)
        if len(seen) >= MAX_QUERY_TERMS:
            break
    return seen


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression (quoted terms OR-ed), or None if nothing to search."""
    terms = query_terms(text)
    if not terms:
        return None
    return " OR ".join(f'"{t}"' for t in terms)


def _corrupt(library: str, path: Path, why: str) -> IntegrityError:
    return IntegrityError(
        f"library {library}: knowledge index {path} is {why}",
        f"run `llmos verify {library}`, then reinstall it (llmos install --reinstall {library})",
    )


class KnowledgeIndex:
    """One library's index, opened read-only (``immutable``: no locks, no journal)."""

    def __init__(self, library: str, version: str, path: Path, conn: sqlite3.Connection, meta: dict[str, str]):
        self.library = library
        self.version = version
        self.path = path
        self.conn = conn
        self.meta = meta

    @classmethod
    def open(cls, library: str, version: str, path: str | Path) -> KnowledgeIndex:
        p = Path(path)
        try:
            with open(p, "rb") as fh:
                magic = fh.read(16)
        except FileNotFoundError:
            raise _corrupt(library, p, "missing") from None
        if magic != b"SQLite format 3\x00":
            raise _corrupt(library, p, "corrupt (not an SQLite database)")
        try:
            conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            conn.execute("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH 'x' LIMIT 1").fetchall()
            conn.execute("SELECT term, df FROM terms LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            raise _corrupt(library, p, f"corrupt ({exc})") from None
        if meta.get("format") != str(INDEX_FORMAT):
            conn.close()
            raise _corrupt(library, p, f"of unknown format {meta.get('format')!r} (this llmos reads format {INDEX_FORMAT})")
        return cls(library, version, p, conn, meta)

    def close(self) -> None:
        self.conn.close()

    def stats(self) -> dict[str, int]:
        try:
            docs = self.conn.execute("SELECT count(*), coalesce(sum(chunks), 0) FROM docs").fetchone()
        except sqlite3.DatabaseError as exc:
            raise _corrupt(self.library, self.path, f"corrupt ({exc})") from None
        return {"documents": int(docs[0]), "chunks": int(docs[1])}

    def candidates(self, match: str, k: int, *, ordered: bool = True) -> list[tuple[Hit, int]]:
        """Up to ``k`` chunks matching ``match``, each with its token count.

        ``ordered``: the best by FTS5's BM25 (scores every match); otherwise the
        first ``k`` found (FTS5 stops early), for words too common to rank by.
        """
        w1, w2 = BM25_WEIGHTS
        if ordered:
            inner = f"SELECT rowid AS id, bm25(chunks_fts, {w1}, {w2}) AS score FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY score LIMIT ?"
        else:
            inner = "SELECT rowid AS id, 0.0 AS score FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT ?"
        sql = (
            f"SELECT d.path, c.ord, c.section, c.text, -r.score, c.tokens FROM ({inner}) AS r "
            "JOIN chunks c ON c.id = r.id JOIN docs d ON d.id = c.doc ORDER BY r.score, d.path, c.ord"
        )
        try:
            rows = self.conn.execute(sql, (match, int(k))).fetchall()
        except sqlite3.DatabaseError as exc:
            raise _corrupt(self.library, self.path, f"corrupt ({exc})") from None
        return [(Hit(self.library, self.version, r[0], int(r[1]), r[2], r[3], float(r[4])), int(r[5])) for r in rows]

    def corpus(self) -> tuple[int, float]:
        """(number of chunks, average tokens per chunk)."""
        try:
            return int(self.meta.get("n_chunks", "0")), float(self.meta.get("avg_tokens", "0"))
        except ValueError:
            raise _corrupt(self.library, self.path, "corrupt (bad statistics in meta)") from None

    def doc_freqs(self, terms: list[str]) -> dict[str, int]:
        if not terms:
            return {}
        marks = ",".join("?" * len(terms))
        try:
            rows = self.conn.execute(f"SELECT term, df FROM terms WHERE term IN ({marks})", terms).fetchall()
        except sqlite3.DatabaseError as exc:
            raise _corrupt(self.library, self.path, f"corrupt ({exc})") from None
        return {r[0]: int(r[1]) for r in rows}

    def search(self, query: str, k: int = 5) -> list[Hit]:
        return search([self], query, k)

    def chunk(self, document: str, ordinal: int) -> Hit | None:
        row = self.conn.execute(
            "SELECT d.path, c.ord, c.section, c.text FROM chunks c JOIN docs d ON d.id = c.doc WHERE d.path=? AND c.ord=?",
            (document, int(ordinal)),
        ).fetchone()
        return Hit(self.library, self.version, row[0], int(row[1]), row[2], row[3], 0.0) if row else None


class _Analyzer:
    """The FTS5 tokenizer of the indexes, run on query words and candidate chunks.

    An in-memory FTS5 table with the same tokenizer gives the exact terms
    (stemmed, accents folded) and per-column term counts.
    """

    def __init__(self) -> None:

        self.lock = threading.Lock()
        self.conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self.conn.execute(f"CREATE VIRTUAL TABLE scratch USING fts5(section, text, tokenize='{FTS_TOKENIZER}')")
        self.conn.execute("CREATE VIRTUAL TABLE temp.scratch_inst USING fts5vocab(main, 'scratch', 'instance')")

    def counts(self, rows: list[tuple[str, str]], only: Sequence[str] | None = None) -> list[dict[str, float]]:
        """For each (section, text): term -> weighted count (heading x2, text x1).

        ``only`` restricts the counting to those terms (the query's).
        """
        w1, w2 = BM25_WEIGHTS
        sql = "SELECT term, doc, col, count(*) FROM temp.scratch_inst"
        params: list[Any] = []
        if only is not None:
            if not only:
                return [{} for _ in rows]
            sql += f" WHERE term IN ({','.join('?' * len(only))})"
            params = list(only)
        sql += " GROUP BY term, doc, col"
        with self.lock:
            self.conn.execute("BEGIN")
            try:
                self.conn.executemany("INSERT INTO scratch(rowid, section, text) VALUES(?,?,?)", [(i + 1, s, t) for i, (s, t) in enumerate(rows)])
                out: list[dict[str, float]] = [{} for _ in rows]
                for term, doc, col, n in self.conn.execute(sql, params):
                    d = out[doc - 1]
                    d[term] = d.get(term, 0.0) + n * (w1 if col == "section" else w2)
            finally:
                self.conn.execute("ROLLBACK")
        return out

    def word_terms(self, words: list[str]) -> list[tuple[str, str]]:
        """(word, index term) for each query word that yields a term."""
        out = []
        for w, c in zip(words, self.counts([("", w) for w in words])):
            for t in c:
                out.append((w, t))
                break
        return out


_ANALYZER: _Analyzer | None = None


def _analyzer() -> _Analyzer:
    global _ANALYZER
    if _ANALYZER is None:
        _ANALYZER = _Analyzer()
    return _ANALYZER


def _quote(words: Sequence[str], op: str) -> str:
    return f" {op} ".join(f'"{w}"' for w in words)


def _library_candidates(ix: KnowledgeIndex, pairs: list[tuple[str, str]], df: dict[str, int], want: int) -> list[tuple[Hit, int]]:
    """Candidates of one library, at a bounded cost.

    Ranking by FTS5's BM25 scores every chunk a word occurs in, so it is only
    used for the rarer words, as long as their occurrences add up to at most
    ``SCORE_BUDGET`` chunks; the common words still count in the rescoring.
    When even the rarest word is that common (a query of very common words),
    chunks holding all the words are taken as found, then the two rarest, then
    the rarest alone, each stopping after ``want`` chunks.
    """
    present = sorted((df.get(t, 0), w) for w, t in pairs if df.get(t, 0) > 0)
    if not present:
        return []
    chosen: list[str] = []
    cost = 0
    for f, w in present:
        if cost + f > SCORE_BUDGET:
            break
        chosen.append(w)
        cost += f
    if chosen:
        return ix.candidates(_quote(chosen, "OR"), want)
    words = [w for _, w in present]
    out: list[tuple[Hit, int]] = []
    seen: set[tuple[str, int]] = set()
    for group in (words, words[:2], words[:1]):
        for hit, tokens in ix.candidates(_quote(group, "AND"), want, ordered=False):
            key = (hit.document, hit.chunk)
            if key not in seen:
                seen.add(key)
                out.append((hit, tokens))
        if len(out) >= want:
            break
    return out


#: capitalised words that open a question or an imperative; never entity names
STARTERS = frozenset(
    """what which who whom whose where when why how the a an in on of is are was were does do did can could name tell
    give count list please and or i if for to at by from with as""".split()
)
_NAME = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)


def capitalised_words(text: str) -> list[str]:
    """Capitalised words of ``text`` that are not question words, starters or stop words (first-seen order).

    These are the candidate entity names of a question; ``search`` drops the
    ones that are common in the indexes (``Relevance.generic_share``), so that
    "Act" in "the Brindor Act" is not taken for a name.
    """
    out: list[str] = []
    for w in _NAME.findall(text):
        w = w.strip("'-")
        if len(w) < 2 or not w[0].isupper():
            continue
        if w.casefold() in STARTERS or w.casefold() in STOPWORDS or w in out:
            continue
        out.append(w)
    return out


@dataclass(frozen=True)
class Relevance:
    """When a retrieved chunk is relevant enough to enter a prompt (measured in bench/grounding.py).

    * A question that names entities (``capitalised_words`` that are not
      generic in the indexes) only takes chunks that contain at least one of
      those names: "What is the capital of France?" takes no chunk that only
      shares "capital".
    * Otherwise a chunk must cover ``min_coverage`` of the question's IDF mass
      (every content word, with words found in no index counted at the highest
      IDF), so that one shared common word ("horse") is not enough.
    """

    #: share of the query's IDF mass a chunk must cover when the question names no entity
    min_coverage: float = 0.5
    #: a name found in more than this share of the chunks of every library that has it is generic ("Act")
    generic_share: float = 0.3
    #: ... and in at least this many of them
    generic_min_df: int = 3
    #: apply the entity test
    entities: bool = True


#: the rule ``llmos run`` uses (auto and N modes)
DEFAULT_RELEVANCE = Relevance()


def _generic(term: str, per_library: list[tuple[int, dict[str, int]]], rule: Relevance) -> bool:
    """A name is generic when every library that has it has it in many chunks ("Act" in a statute library).

    A real entity is frequent at most where others refer to it (a protein
    named by many drugs) and rare where it is described.
    """
    shares = [(df[term], n) for n, df in per_library if n and df.get(term)]
    return bool(shares) and all(f >= rule.generic_min_df and f / n > rule.generic_share for f, n in shares)


def generic_names(indexes: Sequence[KnowledgeIndex], words: Sequence[str], rule: Relevance = DEFAULT_RELEVANCE) -> set[str]:
    """The ``words`` (capitalised names) that are generic in ``indexes`` (``Relevance.generic_share``)."""
    if not indexes or not words:
        return set()
    pairs = _analyzer().word_terms([w.casefold() for w in words])
    terms = list(dict.fromkeys(t for _, t in pairs))
    per_library = [(ix.corpus()[0], ix.doc_freqs(terms)) for ix in indexes]
    by_word = {w: t for w, t in pairs}
    return {w for w in words if (t := by_word.get(w.casefold())) is not None and _generic(t, per_library, rule)}


def search(indexes: list[KnowledgeIndex], query: str, k: int = 5, *, rule: Relevance | None = None, names: Sequence[str] = ()) -> list[Hit]:
    """Best ``k`` chunks over every index, ranked by BM25 over their union (module doc).

    With ``rule``, chunks that fail it (``Relevance``) are dropped before the
    best ``k`` are taken, so the result may be empty.  ``names``: entity names
    known to occur in the query besides its capitalised words (glossary terms
    found in it, which match whatever the case).
    """
    if k <= 0 or not indexes:
        return []
    words = query_terms(query)
    if not words:
        return []
    an = _analyzer()
    pairs = an.word_terms(words)
    terms = list(dict.fromkeys(t for _, t in pairs))
    if not terms:
        return []
    entity_terms: list[str] = []
    if rule is not None and rule.entities:
        found = [w.casefold() for w in capitalised_words(query)]
        found += [w for n in names for w in query_terms(n)]
        entity_terms = list(dict.fromkeys(t for w, t in an.word_terms(list(dict.fromkeys(found)))))
    n_total = 0
    len_total = 0.0
    df: dict[str, int] = {t: 0 for t in terms}
    per_library: list[tuple[int, dict[str, int]]] = []
    cands: list[tuple[Hit, int]] = []
    want = max(2 * k, MIN_CANDIDATES)
    for ix in indexes:
        n, avg = ix.corpus()
        n_total += n
        len_total += n * avg
        local = ix.doc_freqs(list(dict.fromkeys(terms + entity_terms)))
        per_library.append((n, local))
        for t in terms:
            df[t] += local.get(t, 0)
        cands.extend(_library_candidates(ix, pairs, local, want if rule is None else max(want, 4 * k)))
    if not cands or n_total == 0:
        return []
    avgdl = len_total / n_total or 1.0
    idf = {t: math.log(1.0 + (n_total - f + 0.5) / (f + 0.5)) for t, f in df.items()}
    mass = sum(idf.values()) or 1.0
    entity_terms = [t for t in entity_terms if not _generic(t, per_library, rule)] if rule is not None else []
    tfs = an.counts([(h.section, h.text) for h, _ in cands], only=list(dict.fromkeys(terms + entity_terms)))
    scored: list[Hit] = []
    for (hit, tokens), tf in zip(cands, tfs):
        norm = K1 * (1.0 - B + B * (tokens or 1) / avgdl)
        score = sum(idf[t] * tf[t] * (K1 + 1.0) / (tf[t] + norm) for t in terms if tf.get(t))
        if score <= 0.0:
            continue
        coverage = sum(idf[t] for t in terms if tf.get(t)) / mass
        if rule is not None:
            if entity_terms:
                if not any(tf.get(t) for t in entity_terms):
                    continue
            elif coverage < rule.min_coverage:
                continue
        scored.append(replace(hit, score=score, coverage=coverage))
    scored.sort(key=lambda h: (-h.score, h.library, h.document, h.chunk))
    return [replace(h, rank=i) for i, h in enumerate(scored[:k], start=1)]


def terms_of(text: str) -> set[str]:
    """The index terms of ``text`` (the FTS5 tokenizer: lower case, accents folded, Porter stems)."""
    if not text.strip():
        return set()
    return set(_analyzer().counts([("", text)])[0])
