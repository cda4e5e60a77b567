"""A library's training set, encoded exactly as ``llmos run`` will prompt the model.

Sources, named by the manifest's ``[train]`` table (paths inside the library):

* ``data``: JSONL question/answer records -- ``{"questions": ["...", ...],
  "answer": "..."}`` (several wordings of one question: *paraphrase
  augmentation*; each step draws one) -- or chat records ``{"messages":
  [...], "tools": [...]}`` whose assistant turns are learned;
* ``eval``: held-out records in the same format, never trained on (``bench/``
  and ``llmos train`` report exact-match accuracy on them);
* ``replay``: records of what the base model already does well, mixed in so
  the adapter keeps it (retention);
* the library's ``[knowledge] documents``, trained as plain text with the
  sentences of each paragraph shuffled (*order augmentation*), so a fact is
  not tied to its neighbours.

An ``abstain_fraction`` of the examples (default 0.1) teaches the adapter
to abstain: questions about invented names shaped like the library's own
(``abstention_records``: a real question of the library with its entity
swapped for a name recombined from halves of its names, absent from its
data), answered with the base model package's abstention phrase (``[model]
abstention``, default "I don't know."), plus the replay records where the
base itself abstains.

A ``context_fraction`` of the questions is shown the way ``llmos run`` shows
retrieved knowledge: a system message with glossary definitions and document
chunks (the runtime's own ``prompt.assemble`` formatting, the chunk holding the
answer among shuffled distractors), so the adapter learns to answer with and
without retrieval.

Text is rendered with the model's chat template (from its GGUF, in the same
sandboxed Jinja set-up the runtime uses) and tokenized by llama.cpp itself
(``GGUFTokenizer``), so training sees the very tokens inference will.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from llmos_cli.errors import InvalidPackageError, NotFoundError
from llmos_cli.gguf_info import read_header
from llmos_cli.knowledge import indexer
from llmos_cli.knowledge.glossary import find_terms, parse_glossary
from llmos_cli.knowledge.retrieve import Hit, capitalised_words
from llmos_cli.pkg.manifest import Manifest
from llmos_cli.prompt.assemble import Refinement, knowledge_text, refinement_text
from llmos_cli.prompt.grounding import DEFAULT_ABSTENTION
from llmos_cli.runtime.engine import import_llama

IGNORE = -100


# ---------------------------------------------------------------- tokenizer + template


class GGUFTokenizer:
    """llama.cpp's tokenizer and the chat template of a GGUF model (vocabulary only)."""

    def __init__(self, gguf_path: str | Path):

        llama_cpp = import_llama()  # with llama.cpp's log captured, not printed
        head = read_header(gguf_path)
        self.path = Path(gguf_path)
        self.template = head.chat_template
        self._llm = llama_cpp.Llama(str(gguf_path), vocab_only=True, verbose=False)
        vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self.eos_id = int(llama_cpp.llama_vocab_eos(vocab))
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self.eos_text = self.piece(self.eos_id)

    def encode(self, text: str, *, add_bos: bool = True) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def piece(self, token: int) -> str:
        import llama_cpp

        buf = (llama_cpp.ctypes.c_char * 256)()
        vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, 256, 0, True)
        return bytes(buf[: max(n, 0)]).decode(  # type: ignore[arg-type]  # a ctypes char array slice is bytes
            "utf-8", errors="replace"
        )

    def decode(self, tokens: Sequence[int]) -> str:
        return self._llm.detokenize(list(tokens)).decode("utf-8", errors="replace")

    def render(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None, add_generation_prompt: bool) -> str:
        return render_template(self.template, messages, tools=tools, add_generation_prompt=add_generation_prompt, eos_token=self.eos_text)


def _compile(template: str) -> Any:
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )

    def _raise(msg: str) -> None:
        raise ValueError(msg)

    env.globals["raise_exception"] = _raise
    return env.from_string(template)


_TEMPLATES: dict[str, Any] = {}


def render_template(
    template: str | None,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    add_generation_prompt: bool,
    eos_token: str = "",
) -> str:
    if not template:
        raise InvalidPackageError("the base model has no chat template (tokenizer.chat_template)", "training needs the model's chat format")
    compiled = _TEMPLATES.get(template)
    if compiled is None:
        compiled = _TEMPLATES[template] = _compile(template)
    kw: dict[str, Any] = {"messages": messages, "add_generation_prompt": add_generation_prompt, "bos_token": "", "eos_token": eos_token}
    if tools:
        kw["tools"] = tools
    return compiled.render(**kw)


# ---------------------------------------------------------------- examples


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    #: a replay example (not about the library): its adapter should stay silent on it
    offdomain: bool = False

    @property
    def n_target(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def encode_chat(tok: GGUFTokenizer, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> Encoded:
    """Tokens of a conversation; labels on every assistant turn (through its end-of-turn token)."""
    full = tok.render(messages, tools=tools, add_generation_prompt=False)
    ids = tok.encode(full)
    labels = [IGNORE] * len(ids)
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        before = tok.encode(tok.render(messages[:i], tools=tools, add_generation_prompt=True))
        upto_text = tok.render(messages[: i + 1], tools=tools, add_generation_prompt=False)
        # the turn ends at the end-of-turn token; what the template adds after it is not learned
        cut = upto_text.find(tok.eos_text, len(tok.render(messages[:i], tools=tools, add_generation_prompt=True)))
        upto = tok.encode(upto_text[: cut + len(tok.eos_text)] if cut >= 0 else upto_text)
        start = _common_prefix(before, ids)
        end = min(len(ids), _common_prefix(upto, ids))
        for j in range(start, end):
            labels[j] = ids[j]
    return Encoded(ids, labels)


def encode_text(tok: GGUFTokenizer, text: str) -> Encoded:
    ids = tok.encode(text)
    return Encoded(ids, list(ids))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# ---------------------------------------------------------------- records


@dataclass
class Record:
    """One training item: a question with its wordings, or a chat."""

    questions: list[str] = field(default_factory=list)
    answer: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    origin: str = ""

    @property
    def is_qa(self) -> bool:
        return bool(self.questions)


def parse_record(obj: Any, origin: str) -> Record:
    if not isinstance(obj, dict):
        raise InvalidPackageError(f"{origin}: each line must be a JSON object")
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m for m in msgs):
            raise InvalidPackageError(f"{origin}: messages must be a list of {{role, content}} objects")
        if not any(m["role"] == "assistant" for m in msgs):
            raise InvalidPackageError(f"{origin}: a chat record needs at least one assistant message")
        tools = obj.get("tools")
        return Record(messages=msgs, tools=tools if isinstance(tools, list) else None, origin=origin)
    qs = obj.get("questions", obj.get("question"))
    if isinstance(qs, str):
        qs = [qs]
    ans = obj.get("answer")
    if not isinstance(qs, list) or not qs or not all(isinstance(q, str) and q.strip() for q in qs):
        raise InvalidPackageError(f'{origin}: needs "questions" (a list of strings) or "messages"')
    if not isinstance(ans, str) or not ans.strip():
        raise InvalidPackageError(f'{origin}: needs a non-empty "answer"')
    return Record(questions=[q.strip() for q in qs], answer=ans.strip(), origin=origin)


def read_records(path: Path) -> list[Record]:
    if not path.is_file():
        raise NotFoundError(f"training data {path} not found", "check the [train] table of llmos.toml")
    out: list[Record] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidPackageError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
        out.append(parse_record(obj, f"{path.name}:{n}"))
    return out


# ---------------------------------------------------------------- order augmentation

_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def paragraphs(text: str) -> list[str]:
    """Paragraphs of a Markdown/plain document, headings kept with their paragraph."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        b = block.strip()
        if b:
            out.append(b)
    return out


def shuffle_sentences(paragraph: str, rng: random.Random) -> str:
    lines = paragraph.split("\n")
    head = [ln for ln in lines if ln.lstrip().startswith("#")]
    body = " ".join(ln.strip() for ln in lines if not ln.lstrip().startswith("#"))
    sents = [s for s in _SENT.split(body) if s.strip()]
    rng.shuffle(sents)
    return "\n".join(head + [" ".join(sents)]) if head else " ".join(sents)


# ---------------------------------------------------------------- retrieved-knowledge context


@dataclass
class ContextSource:
    """Chunks of the library's documents and its glossary, to dress questions as ``llmos run`` does."""

    library: str
    version: str
    chunks: list[Any]  # knowledge.indexer.Chunk
    glossaries: list[Any]  # knowledge.glossary.Glossary

    def system_message(self, question: str, answer: str, rng: random.Random, max_chunks: int = 3) -> str | None:
        try:
            pass
            pass
        except ImportError:  # runtime prompt assembly not available
            return None
        relevant = [c for c in self.chunks if answer.lower() in c.text.lower()]
        words = {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z-]{3,}", question)}
        relevant.sort(key=lambda c: -sum(w in c.text.lower() for w in words))
        picked = relevant[:1]
        others = [c for c in self.chunks if c not in picked]
        rng.shuffle(others)
        picked += others[: rng.randint(0, max_chunks - len(picked))]
        rng.shuffle(picked)
        hits = [Hit(self.library, self.version, c.document, c.ordinal, c.section, c.text, 1.0 / (i + 1), rank=i + 1) for i, c in enumerate(picked)]
        refs: list[Any] = []
        try:
            for m in find_terms(self.glossaries, question):
                refs.append(Refinement(m.term, m.definition, m.library, m.matched))
        except Exception:
            refs = []
        parts = [p for p in (refinement_text(refs), knowledge_text(hits)) if p]
        return "\n\n".join(parts) if parts else None


def load_context_source(manifest: Manifest, src: Path) -> ContextSource | None:
    """Chunks + glossary of a library source folder, chunked with its own manifest settings."""
    docs = indexer.collect_documents(manifest, src)
    if not docs:
        return None
    size, overlap = indexer._knowledge_settings(manifest)
    chunks = [c for path, text in docs for c in indexer.chunk_text(text, path, size, overlap)]
    glossaries: list[Any] = []
    gfile = manifest.glossary.file if manifest.glossary else None
    if gfile:
        glossaries.append(parse_glossary((src / gfile).read_bytes(), manifest.name, gfile))
    return ContextSource(manifest.name, manifest.version, chunks, glossaries)


# ---------------------------------------------------------------- the mixture


# ---------------------------------------------------------------- abstention examples


def _name_phrases(text: str) -> list[str]:
    """Runs of consecutive capitalised words that are not starters ("the Brindor Act" -> "Brindor Act")."""
    words = set(capitalised_words(text))
    out: list[str] = []
    run: list[str] = []
    for tok in re.findall(r"[\w'-]+|[^\w\s]", text):
        if tok in words:
            run.append(tok)
            continue
        if run:
            out.append(" ".join(run))
        run = []
    if run:
        out.append(" ".join(run))
    return out


def library_names(qa: Sequence[Record], glossaries: Sequence[Any] = ()) -> list[str]:
    """Entity names of a library: its glossary terms, else the runs of capitalised words in its questions."""
    names = [e.term for g in glossaries for e in getattr(g, "entries", [])]
    if not names:
        names = [nm for r in qa for q in r.questions for nm in _name_phrases(q)]
    return sorted(dict.fromkeys(names))


#: an invented name at least this similar to a real one (difflib ratio) is dropped
MAX_NAME_SIMILARITY = 0.75


def _invent(name: str, heads: Sequence[str], rng: random.Random) -> str:
    """A name shaped like ``name``: the start of one of ``heads`` joined to the end of ``name``'s first word;
    the other words of ``name`` stay ("Brindor Act" -> "Kelndor Act")."""
    first, *rest = name.split()
    other = rng.choice(heads)
    cut_a = rng.randint(2, max(2, len(other) - 2))
    cut_b = rng.randint(max(1, len(first) // 3), max(1, (2 * len(first)) // 3))
    word = (other[:cut_a] + first[cut_b:]).lower()
    return " ".join([word[:1].upper() + word[1:], *rest])


def invented_names(names: Sequence[str], rng: random.Random, n: int, avoid: str = "", shape: str | None = None) -> list[str]:
    """Up to ``n`` new names shaped like ``names`` (or like ``shape`` alone): never a known name or one of
    its words, never a word of ``avoid`` (the library's own text)."""
    heads = [nm.split()[0] for nm in names if len(nm.split()[0]) >= 4]
    shapes = [shape] if shape else [nm for nm in names if len(nm.split()[0]) >= 4]
    if not heads or not shapes:
        return []
    known = {nm.casefold() for nm in names} | {w.casefold() for nm in names for w in nm.split()}
    text = avoid.casefold()
    out: list[str] = []
    for _ in range(n * 30):
        name = _invent(rng.choice(shapes), heads, rng)
        word = name.split()[0].casefold()
        if len(word) < 4 or word in known or name.casefold() in known or re.search(rf"\b{re.escape(word)}\b", text) or name in out:
            continue
        if any(SequenceMatcher(None, word, k).ratio() >= MAX_NAME_SIMILARITY for k in known):
            continue  # a near-copy of a real name is a typo of it, not another entity
        out.append(name)
        if len(out) >= n:
            break
    return out


def abstention_records(qa: Sequence[Record], names: Sequence[str], phrase: str, rng: random.Random, n: int = 200, avoid: str = "") -> list[Record]:
    """Questions about invented names shaped like the library's (``invented_names``), answered ``phrase``.

    Each takes a real question of the library that names one of ``names`` and
    swaps in an invented name of the same shape; a library whose questions
    name none gets "What is NAME?"-style questions.
    """
    templates: list[tuple[str, str]] = []
    for r in qa:
        for q in r.questions:
            hit = max((nm for nm in names if nm in q), key=len, default=None)
            if hit is not None:
                templates.append((q, hit))
    out: list[Record] = []
    seen: set[str] = set()
    for _ in range(n * 3):
        if templates:
            q, nm = templates[rng.randrange(len(templates))]
            fake = invented_names(names, rng, 1, avoid, shape=nm)
            question = q.replace(nm, fake[0]) if fake else ""
        else:
            fake = invented_names(names, rng, 1, avoid)
            question = rng.choice(["What is {}?", "Tell me about {}.", "What do you know about {}?"]).format(fake[0]) if fake else ""
        if not question or question in seen:
            continue
        seen.add(question)
        out.append(Record(questions=[question], answer=phrase, origin=f"abstention:{len(out)}"))
        if len(out) >= n:
            break
    return out


def _norm(text: str) -> str:
    return re.sub(r"[^\w' ]+", "", text.casefold()).strip()


def base_abstentions(replay: Sequence[Record], phrase: str) -> list[Record]:
    """Replay records in which the base model answers its abstention phrase."""
    return [r for r in replay if r.is_qa and _norm(r.answer) == _norm(phrase)]


@dataclass
class TrainingSet:
    qa: list[Record]
    chats: list[Record]
    replay: list[Record]
    documents: list[tuple[str, str]]
    eval: list[Record]
    context: ContextSource | None = None
    #: the base model package's abstention phrase (``[model] abstention``)
    abstention: str = DEFAULT_ABSTENTION

    def counts(self) -> dict[str, int]:
        return {
            "qa": len(self.qa),
            "questions": sum(len(r.questions) for r in self.qa),
            "chats": len(self.chats),
            "replay": len(self.replay),
            "documents": len(self.documents),
            "eval": len(self.eval),
        }


class Sampler:
    """Draws encoded examples from a ``TrainingSet`` with paraphrase/order/context augmentation."""

    def __init__(
        self,
        ts: TrainingSet,
        tok: GGUFTokenizer,
        *,
        seed: int,
        max_len: int,
        replay_fraction: float = 0.2,
        doc_fraction: float = 0.15,
        context_fraction: float = 0.3,
        abstain_fraction: float = 0.0,
    ):
        self.ts = ts
        self.tok = tok
        self.rng = random.Random(seed)
        self.max_len = max_len
        self.too_long = 0
        weights = {
            "qa": 1.0 if ts.qa else 0.0,
            "chat": 0.5 if ts.chats else 0.0,
            "replay": replay_fraction if ts.replay else 0.0,
            "doc": doc_fraction if ts.documents else 0.0,
        }
        if ts.qa and ts.chats:
            weights["chat"] = len(ts.chats) / (len(ts.chats) + len(ts.qa))
        if not any(weights[k] for k in ("qa", "chat", "doc")):
            raise InvalidPackageError("the library has no training data", 'add [train] data = ["train/qa.jsonl"] or documents')
        self.abstain: list[Record] = []
        if abstain_fraction > 0:
            glossaries = ts.context.glossaries if ts.context is not None else []
            avoid = " ".join(t for _, t in ts.documents) + " " + " ".join(r.answer for r in ts.qa)
            names = library_names(ts.qa, glossaries)
            self.abstain = abstention_records(ts.qa, names, ts.abstention, random.Random(seed + 31337), avoid=avoid)
            self.abstain += base_abstentions(ts.replay, ts.abstention)
            if self.abstain:
                # a share of every draw: f of the whole, whatever the other weights add up to
                weights["abstain"] = abstain_fraction / (1.0 - abstain_fraction) * sum(weights.values())
        self.kinds = [k for k, w in weights.items() if w > 0]
        self.weights = [weights[k] for k in self.kinds]
        self.context_fraction = context_fraction if ts.context is not None else 0.0
        self._cache: dict[tuple, Encoded] = {}

    def _qa_messages(self, rec: Record, *, with_context: bool) -> list[dict[str, Any]]:
        q = self.rng.choice(rec.questions)
        msgs: list[dict[str, Any]] = []
        if with_context and self.ts.context is not None:
            sys_msg = self.ts.context.system_message(q, rec.answer, self.rng)
            if sys_msg:
                msgs.append({"role": "system", "content": sys_msg})
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": rec.answer}]
        return msgs

    def encode_record(self, rec: Record, *, with_context: bool = False) -> Encoded:
        if rec.is_qa:
            msgs = self._qa_messages(rec, with_context=with_context)
            key: tuple[Any, ...] | None = None if len(msgs) > 2 else ("qa", msgs[0]["content"], rec.answer)
            if key and key in self._cache:
                return self._cache[key]
            enc = encode_chat(self.tok, msgs)
            if key:
                self._cache[key] = enc
            return enc
        chat_key = ("chat", id(rec))
        if chat_key not in self._cache:
            self._cache[chat_key] = encode_chat(self.tok, rec.messages, rec.tools)
        return self._cache[chat_key]

    def draw(self) -> Encoded:
        for _ in range(50):
            kind = self.rng.choices(self.kinds, self.weights)[0]
            if kind == "qa":
                enc = self.encode_record(self.rng.choice(self.ts.qa), with_context=self.rng.random() < self.context_fraction)
            elif kind == "chat":
                enc = self.encode_record(self.rng.choice(self.ts.chats))
            elif kind == "replay":
                enc = self.encode_record(self.rng.choice(self.ts.replay))
            elif kind == "abstain":
                enc = self.encode_record(self.rng.choice(self.abstain))
            else:
                _, text = self.rng.choice(self.ts.documents)
                paras = paragraphs(text)
                start = self.rng.randrange(len(paras))
                pick = paras[start : start + self.rng.randint(1, 3)]
                enc = encode_text(self.tok, "\n\n".join(shuffle_sentences(p, self.rng) for p in pick))
            if len(enc.input_ids) > self.max_len:
                if kind == "doc":
                    enc = Encoded(enc.input_ids[: self.max_len], enc.labels[: self.max_len])
                else:
                    self.too_long += 1
                    continue
            if enc.n_target:
                return Encoded(enc.input_ids, enc.labels, offdomain=(kind == "replay"))
        raise InvalidPackageError(f"training examples do not fit {self.max_len} tokens", "raise [train] max_len or shorten the data")

    def batch(self, size: int) -> list[Encoded]:
        return [self.draw() for _ in range(size)]


def collate(batch: Sequence[Encoded], pad_id: int = 0) -> dict[str, Any]:
    import torch

    n = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, e in enumerate(batch):
        k = len(e.input_ids)
        ids[i, :k] = torch.tensor(e.input_ids)
        labels[i, :k] = torch.tensor(e.labels)
        mask[i, :k] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "offdomain": torch.tensor([e.offdomain for e in batch])}


def iter_records(paths: Iterable[Path]) -> list[Record]:
    out: list[Record] = []
    for p in paths:
        out.extend(read_records(p))
    return out
