"""Piped input (or ``--file``) longer than the context window (``llmos run --long``).

``index`` (the default): the input is chunked and indexed like a library's
documents (``knowledge.indexer.write_index``, the same FTS5 code and chunker,
in a temporary file deleted after the run) and its chunks are offered to the
prompt like retrieved knowledge, best match to the prompt first, cited
``[stdin#12]`` (or ``[report.txt#12]`` for ``--file``), as many as the
budget holds.  ``map-reduce``: the input is cut into parts that each fit, the
model answers the prompt from each part (map, with a progress bar), then from
the answers of the parts that had one (reduce).  ``refuse``: the run fails
with exit 13 (``ContextOverflow``), as before.

Why ``index`` is the default (docs/runtime.md): one generation instead of one
per part, so it costs about what a normal run costs; its answer cites the
parts it read; and a question about one detail of a long text -- the usual
``cat report.txt | llmos run "what does it say about X"`` -- needs the parts
that mention X, which is what retrieval finds.  ``map-reduce`` reads every
part, so it suits "summarise" prompts, at one generation per part.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmos_cli.app.options import LONG_MODES
from llmos_cli.errors import ContextOverflow, IOFailure, NotFoundError, UsageError
from llmos_cli.knowledge.glossary import Glossary
from llmos_cli.knowledge.indexer import write_index
from llmos_cli.knowledge.retrieve import DEFAULT_RELEVANCE, Hit, KnowledgeIndex, search
from llmos_cli.prompt.assemble import knowledge_text
from llmos_cli.prompt.grounding import _abstains
from llmos_cli.runtime.engine import Generation, SamplingParams

#: input chunks offered to the budget in ``index`` mode (best first; the budget keeps what fits)
MAX_INPUT_CHUNKS = 200
#: most input chunks offered when some pass the relevance rule (like ``--knowledge auto``)
RELEVANT_INPUT_CHUNKS = 5
#: words per chunk of the ephemeral index (short: a question about one detail needs one short passage)
INPUT_CHUNK_WORDS = 60
INPUT_CHUNK_OVERLAP = 10


def parse_long_option(value: str | None) -> str:
    v = (value or "index").strip().lower()
    if v not in LONG_MODES:
        raise UsageError(f"--long takes index, map-reduce or refuse, not {value!r}", "e.g. --long map-reduce")
    return v


def read_input_file(path: str) -> tuple[str, str]:
    """(text, label) of ``--file PATH``; invalid UTF-8 is replaced, like piped stdin."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"--file {path}: no such file", "give the path of a text file") from None
    except IsADirectoryError:
        raise UsageError(f"--file {path} is a folder, not a file", "give the path of a text file") from None
    except OSError as exc:
        raise IOFailure(f"--file {path}: {exc.strerror or exc}") from None
    return data.decode("utf-8", errors="replace"), p.name or "file"


class InputSource:
    """The piped input as a library-like source (``index()``, ``glossary()``, ``system_fragment()``)."""

    def __init__(self, label: str, text: str, *, chunk_words: int = INPUT_CHUNK_WORDS, overlap: int = INPUT_CHUNK_OVERLAP):
        self.name = label
        self.label = label
        self._dir = tempfile.TemporaryDirectory(prefix="llmos-input-")
        path = Path(self._dir.name) / "input.sqlite"
        self.counts = write_index([(label, text)], path, chunk_size=chunk_words, chunk_overlap=overlap)
        self._index: KnowledgeIndex | None = KnowledgeIndex.open("", "", path)

    def index(self) -> KnowledgeIndex | None:
        return self._index

    def glossary(self) -> Glossary:
        return Glossary("", [])

    def system_fragment(self) -> str:
        return ""

    def chunks(self) -> list[Hit]:
        ix = self._index
        assert ix is not None
        rows = ix.conn.execute("SELECT d.path, c.ord, c.section, c.text FROM chunks c JOIN docs d ON d.id = c.doc ORDER BY c.ord").fetchall()
        return [Hit("", "", r[0], int(r[1]), r[2], r[3], 0.0) for r in rows]

    def best(self, prompt: str, k: int = MAX_INPUT_CHUNKS) -> list[Hit]:
        """Chunks for ``prompt``: those the relevance rule keeps (the parts that name what the prompt
        asks about); when none passes it, the best BM25 matches; when nothing matches (e.g.
        "summarise"), the chunks in reading order.  The budget keeps as many as fit."""
        ix = self._index
        assert ix is not None
        found = search([ix], prompt, RELEVANT_INPUT_CHUNKS, rule=DEFAULT_RELEVANCE)
        if found:
            return found
        found = search([ix], prompt, k)
        return found if found else self.chunks()[:k]

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
        self._dir.cleanup()


@dataclass
class LongInputReport:
    mode: str
    label: str
    input_tokens: int
    chunks: int
    used: list[str] = field(default_factory=list)
    parts_answered: list[str] = field(default_factory=list)
    #: the parts whose answers went into the final (reduce) prompt
    parts_combined: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "label": self.label,
            "input_tokens": self.input_tokens,
            "chunks": self.chunks,
            "used": list(self.used),
            "parts_answered": list(self.parts_answered),
            "parts_combined": list(self.parts_combined),
        }


# ---------------------------------------------------------------- map-reduce


def split_for_context(engine: Any, text: str, label: str, room_tokens: int) -> list[Hit]:
    """Cut ``text`` into consecutive parts of at most ``room_tokens`` tokens each (by words, measured)."""
    words = text.split()
    if not words:
        return []
    per_word = max(1.0, len(engine.tokenize(" ".join(words[:2000]), add_bos=False)) / min(len(words), 2000))
    size = max(20, int(room_tokens / per_word * 0.85))
    parts = []
    for i, start in enumerate(range(0, len(words), size)):
        parts.append(Hit("", "", label, i, f"part {i + 1}", " ".join(words[start : start + size]), 0.0))
    return parts


def map_reduce(
    ctx: Any,
    prompt: str,
    text: str,
    label: str,
    *,
    system: str,
    abstention: str,
    on_part: Callable[[int, int], None] | None = None,
) -> tuple[Generation, LongInputReport]:
    """Answer ``prompt`` from each part of ``text`` (map), then from the parts' answers (reduce)."""

    engine = ctx.engine
    sp = ctx.request.sampling
    reserve = sp.max_tokens if sp.max_tokens and sp.max_tokens > 0 else max(1, engine.n_ctx // 4)
    frame = [{"role": "system", "content": knowledge_text([Hit("", "", label, 0, "part 1", "", 0.0)]) + ("\n\n" + system if system else "")}]
    overhead = len(engine.prompt_tokens(frame + [{"role": "user", "content": prompt}]))
    room = engine.n_ctx - reserve - overhead - 16
    if room < 32:
        raise ContextOverflow(
            f"--long map-reduce: the prompt and system text leave {room} tokens of the context for each part of the input",
            "lower --max-tokens, shorten the prompt, or use --long index",
        )
    parts = split_for_context(engine, text, label, room)
    report = LongInputReport("map-reduce", label, len(engine.tokenize(text, add_bos=False)), len(parts))
    partials: list[tuple[Hit, str]] = []
    prompt_tokens = completion_tokens = 0
    prompt_s = generate_s = 0.0
    part_sp = replace(sp, max_tokens=min(reserve, 128))

    def ask(sys_text: str, user: str, params: SamplingParams) -> Generation:
        msgs = [{"role": "system", "content": sys_text}] if sys_text else []
        toks = engine.prompt_tokens(msgs + [{"role": "user", "content": user}])
        engine.check_fits(len(toks))
        return engine.generate(toks, params)

    for i, part in enumerate(parts):
        g = ask("\n\n".join(p for p in (knowledge_text([part]), system) if p), prompt, part_sp)
        prompt_tokens += g.prompt_tokens
        completion_tokens += g.completion_tokens
        prompt_s += g.prompt_s
        generate_s += g.generate_s
        if not _abstains(g.text, abstention):
            partials.append((part, g.text.strip()))
            report.parts_answered.append(part.cite_id)
        if on_part is not None:
            on_part(i + 1, len(parts))
    report.used = [p.cite_id for p in parts]
    if not partials:
        text_out = abstention
        final = Generation(text=text_out, tokens=[], finish_reason="stop", prompt_tokens=0, completion_tokens=0, prompt_s=0.0, generate_s=0.0)
    else:
        notes = [replace(p, text=f"{prompt} {answer}") for p, answer in partials]

        def reduce_system(ns: list[Hit]) -> str:
            return "\n\n".join(p for p in (knowledge_text(ns), system) if p)

        # the parts' answers are short, but many of them may still not fit: keep the first that do
        while len(notes) > 1:
            n = len(engine.prompt_tokens([{"role": "system", "content": reduce_system(notes)}, {"role": "user", "content": prompt}]))
            if n + reserve <= engine.n_ctx:
                break
            notes.pop()
        report.parts_combined = [p.cite_id for p in notes]
        final = ask(reduce_system(notes), prompt, sp)
    final = replace(
        final,
        prompt_tokens=final.prompt_tokens + prompt_tokens,
        completion_tokens=final.completion_tokens + completion_tokens,
        prompt_s=final.prompt_s + prompt_s,
        generate_s=final.generate_s + generate_s,
    )
    return final, report
