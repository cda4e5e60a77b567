"""Library glossaries: term -> short definition, with aliases.

Source format (``glossary.toml``, named by the manifest's ``[glossary] file``)::

    [terms."myocardial infarction"]
    definition = "Death of heart muscle caused by a blocked coronary artery."
    aliases = ["MI", "heart attack"]

    [terms]
    ECG = "Electrocardiogram: a recording of the heart's electrical activity."

A term is either a table (``definition`` required; ``aliases`` and
``case_sensitive`` optional) or a plain string (the definition).  ``llmos
build`` normalises it into ``.llmos/glossary.json`` (sorted, deterministic),
which is what runs read.

Matching: whole words only; several spaces or a line break match a space; a
trailing ``s``/``es`` plural matches too.  Forms written as acronyms (two or
more capitals, no lower-case letters, e.g. ``MI``) match case-sensitively,
everything else case-insensitively, unless ``case_sensitive`` says otherwise.
Where matches overlap, the longest (then leftmost) wins.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from llmos_cli.errors import InvalidPackageError

GLOSSARY_FORMAT = 1
MAX_DEFINITION = 2000
_TERM_KEYS = {"definition", "aliases", "case_sensitive"}


@dataclass(frozen=True)
class Entry:
    term: str
    definition: str
    aliases: tuple[str, ...] = ()
    case_sensitive: bool | None = None

    def forms(self) -> tuple[str, ...]:
        return (self.term, *self.aliases)

    def to_json(self) -> dict[str, Any]:
        return {
            "term": self.term,
            "definition": self.definition,
            "aliases": list(self.aliases),
            "case_sensitive": self.case_sensitive,
        }


@dataclass(frozen=True)
class TermMatch:
    """One glossary entry found in a text (first occurrence)."""

    term: str
    definition: str
    library: str
    matched: str  # the text as written by the user
    start: int

    def to_json(self) -> dict[str, Any]:
        return {"term": self.term, "definition": self.definition, "library": self.library, "matched": self.matched}


def _is_acronym(form: str) -> bool:
    letters = [c for c in form if c.isalpha()]
    return sum(c.isupper() for c in letters) >= 2 and not any(c.islower() for c in letters)


def _form_pattern(form: str, plural: bool) -> str:
    parts = [re.escape(p) for p in form.split()]
    pat = r"\s+".join(parts)
    if plural and form[-1:].isalpha():
        pat += "(?:e?s)?"
    return pat


@dataclass
class Glossary:
    library: str
    entries: list[Entry] = field(default_factory=list)
    _compiled: tuple[Any, Any, dict[str, Entry], dict[str, Entry]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.entries)

    def _compile(self) -> tuple[Any, Any, dict[str, Entry], dict[str, Entry]]:
        if self._compiled is None:
            ci: dict[str, Entry] = {}
            cs: dict[str, Entry] = {}
            for e in self.entries:
                for form in e.forms():
                    sensitive = e.case_sensitive if e.case_sensitive is not None else _is_acronym(form)
                    if sensitive:
                        cs.setdefault(form, e)
                    else:
                        ci.setdefault(form.casefold(), e)

            def build(forms: list[str], flags: int, plural: bool):
                if not forms:
                    return None
                # longest first so that the alternation prefers "heart attack" over "heart"
                alts = sorted(forms, key=lambda f: (-len(f), f))
                body = "|".join(_form_pattern(f, plural) for f in alts)
                return re.compile(rf"(?<!\w)(?:{body})(?!\w)", flags)

            self._compiled = (
                build(list(ci), re.IGNORECASE, True),
                build(list(cs), 0, False),
                ci,
                cs,
            )
        return self._compiled

    def _lookup(self, surface: str, sensitive: bool) -> Entry | None:
        _, _, ci, cs = self._compile()
        if sensitive:
            return cs.get(surface)
        key = " ".join(surface.split()).casefold()
        if key in ci:
            return ci[key]
        for suffix in ("es", "s"):
            if key.endswith(suffix) and key[: -len(suffix)] in ci:
                return ci[key[: -len(suffix)]]
        return None

    def find(self, text: str) -> list[TermMatch]:
        """Entries mentioned in ``text``, in order of first mention, each once."""
        if not self.entries or not text:
            return []
        rx_ci, rx_cs, _, _ = self._compile()
        spans: list[tuple[int, int, str, bool]] = []
        for rx, sensitive in ((rx_ci, False), (rx_cs, True)):
            if rx is None:
                continue
            for m in rx.finditer(text):
                spans.append((m.start(), m.end(), m.group(0), sensitive))
        # longest, then leftmost, non-overlapping
        spans.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
        taken: list[tuple[int, int]] = []
        chosen: list[tuple[int, str, bool]] = []
        for start, end, surface, sensitive in spans:
            if any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            chosen.append((start, surface, sensitive))
        chosen.sort()
        seen: set[str] = set()
        out: list[TermMatch] = []
        for start, surface, sensitive in chosen:
            entry = self._lookup(surface, sensitive)
            if entry is None or entry.term in seen:
                continue
            seen.add(entry.term)
            out.append(TermMatch(entry.term, entry.definition, self.library, surface, start))
        return out

    # ------------------------------------------------------------ (de)serialise

    def to_json(self) -> dict[str, Any]:
        return {"format": GLOSSARY_FORMAT, "terms": [e.to_json() for e in self.entries]}

    def dumps(self) -> bytes:
        """The normalised form shipped as ``.llmos/glossary.json`` (byte-stable)."""
        return (json.dumps(self.to_json(), ensure_ascii=False, sort_keys=True, indent=1) + "\n").encode("utf-8")

    @classmethod
    def loads(cls, data: bytes | str, library: str, origin: str = "glossary.json") -> Glossary:
        """Read the normalised form (``.llmos/glossary.json``)."""
        try:
            obj = json.loads(data)
            if not isinstance(obj, dict) or obj.get("format") != GLOSSARY_FORMAT or not isinstance(obj.get("terms"), list):
                raise ValueError("not a llmos glossary (format 1)")
            entries = [
                Entry(
                    term=str(t["term"]),
                    definition=str(t["definition"]),
                    aliases=tuple(str(a) for a in t.get("aliases") or ()),
                    case_sensitive=t.get("case_sensitive"),
                )
                for t in obj["terms"]
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidPackageError(
                f"library {library}: glossary {origin} is corrupt ({exc})",
                f"reinstall the library (llmos install --reinstall {library}) or run `llmos verify {library}`",
            ) from None
        return cls(library, entries)


def _fail(origin: str, where: str, message: str) -> InvalidPackageError:
    return InvalidPackageError(f"{origin}: {where}: {message}", "see 'Glossary' in docs/package-format.md")


def parse_glossary(text: str | bytes, library: str = "", origin: str = "glossary.toml") -> Glossary:
    """Parse and validate the TOML source form; raises ``InvalidPackageError``."""
    import tomllib

    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPackageError(f"{origin}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidPackageError(f"{origin}: not valid TOML: {exc}") from None
    terms = data.get("terms")
    extra = sorted(k for k in data if k != "terms")
    if extra:
        raise _fail(origin, extra[0], "unknown top-level key (expected only [terms])")
    if terms is None:
        terms = {}
    if not isinstance(terms, dict):
        raise _fail(origin, "terms", "must be a table of term = definition or term = { definition, aliases }")
    entries: list[Entry] = []
    owner: dict[str, str] = {}
    for term, value in terms.items():
        where = f"terms.{term!r}"
        term_clean = " ".join(str(term).split())
        if not term_clean:
            raise _fail(origin, where, "empty term")
        if isinstance(value, str):
            value = {"definition": value}
        if not isinstance(value, dict):
            raise _fail(origin, where, "must be a string or a table with a definition")
        unknown = sorted(set(value) - _TERM_KEYS)
        if unknown:
            raise _fail(origin, f"{where}.{unknown[0]}", "unknown key (use definition, aliases, case_sensitive)")
        definition = value.get("definition")
        if not isinstance(definition, str) or not definition.strip():
            raise _fail(origin, f"{where}.definition", "missing or empty")
        definition = " ".join(definition.split())
        if len(definition) > MAX_DEFINITION:
            raise _fail(origin, f"{where}.definition", f"longer than {MAX_DEFINITION} characters; keep definitions short")
        aliases_raw = value.get("aliases", [])
        if not isinstance(aliases_raw, list) or not all(isinstance(a, str) and a.strip() for a in aliases_raw):
            raise _fail(origin, f"{where}.aliases", "must be a list of non-empty strings")
        cs = value.get("case_sensitive")
        if cs is not None and not isinstance(cs, bool):
            raise _fail(origin, f"{where}.case_sensitive", "must be true or false")
        aliases: list[str] = []
        for a in aliases_raw:
            a = " ".join(a.split())
            if a != term_clean and a not in aliases:
                aliases.append(a)
        for form in (term_clean, *aliases):
            key = form if (cs or (cs is None and _is_acronym(form))) else form.casefold()
            if key in owner and owner[key] != term_clean:
                raise _fail(origin, where, f"{form!r} is also a form of {owner[key]!r}; a form may name only one term")
            owner[key] = term_clean
        entries.append(Entry(term_clean, definition, tuple(aliases), cs))
    entries.sort(key=lambda e: (e.term.casefold(), e.term))
    return Glossary(library, entries)


def find_terms(glossaries: list[Glossary], text: str) -> list[TermMatch]:
    """Terms of every glossary found in ``text``, by first mention.

    The same term in two libraries is kept once per distinct definition.
    """
    found: list[TermMatch] = []
    seen: set[tuple[str, str]] = set()
    for g in glossaries:
        for m in g.find(text):
            key = (m.term.casefold(), m.definition)
            if key in seen:
                continue
            seen.add(key)
            found.append(m)
    found.sort(key=lambda m: (m.start, m.library))
    return found
