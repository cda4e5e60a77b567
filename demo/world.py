"""The demo's fictional world: entities, facts, question wordings, documents, glossaries.

Everything here is synthetic and deterministic (``random.Random(seed)``): the
names are made of syllables and belong to no real drug, statute or place.

A *fact* is (library, entity, relation, answer).  Each relation has several
question wordings (paraphrases).  For every fact one wording is held out (a
different one for neighbouring facts, so every wording is trained on *some*
facts): the held-out question is the evaluation item, the other wordings are
training questions.  Documents state every fact in a sentence; the trainer
shuffles sentence order (order augmentation).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# ---------------------------------------------------------------- names

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr", "st", "pl", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "io", "ea"]
_CODAS = ["", "", "", "n", "r", "l", "s", "x", "th", "nd"]


class NameMaker:
    """Pronounceable fictional names, never the same twice."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.used: set[str] = set()

    def stem(self, syllables: int) -> str:
        return "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS) for _ in range(syllables))

    def make(self, pattern: str, syllables: tuple[int, int] = (2, 2)) -> str:
        for _ in range(1000):
            stem = self.stem(self.rng.randint(*syllables))
            name = pattern.format(stem=stem, Stem=stem.capitalize())
            key = stem.lower()
            if key not in self.used and 4 <= len(stem) <= 11:
                self.used.add(key)
                return name
        raise RuntimeError("name space exhausted")


# ---------------------------------------------------------------- relations


@dataclass(frozen=True)
class Relation:
    key: str
    questions: tuple[str, ...]  # wordings with {e}
    sentence: str  # document sentence with {e} and {a}
    glossary: str  # glossary clause with {a}


RELATIONS: dict[str, Relation] = {
    # bio-core
    "organ": Relation(
        "organ",
        (
            "Which organ makes {e}?",
            "Where in the body is {e} made?",
            "{e} is produced by which organ?",
            "In which organ is {e} produced?",
            "What organ produces {e}?",
        ),
        "{e} is made in the {a}.",
        "made in the {a}",
    ),
    "role": Relation(
        "role",
        (
            "What does {e} do?",
            "What is the job of {e}?",
            "What is the function of {e} in the body?",
            "{e} is responsible for what?",
            "What role does {e} play?",
        ),
        "The protein {e} {a}.",
        "it {a}",
    ),
    # med-lib
    "treats": Relation(
        "treats",
        (
            "What does {e} treat?",
            "What condition is {e} used for?",
            "{e} is prescribed for which illness?",
            "Which disease does {e} treat?",
            "What is {e} a treatment for?",
        ),
        "{e} is a drug that treats {a}.",
        "a drug that treats {a}",
    ),
    "target": Relation(
        "target",
        (
            "Which protein does {e} block?",
            "What protein is blocked by {e}?",
            "{e} acts on which protein?",
            "What is the protein target of {e}?",
            "Which protein does {e} act on?",
        ),
        "{e} works by blocking {a}.",
        "it blocks {a}",
    ),
    "maker": Relation(
        "maker",
        ("Who makes {e}?", "Which company produces {e}?", "Who is the maker of {e}?", "{e} is manufactured by which company?", "What company makes {e}?"),
        "{e} is made by {a}.",
        "made by {a}",
    ),
    # law-lib
    "year": Relation(
        "year",
        (
            "When was the {e} passed?",
            "In what year was the {e} enacted?",
            "What year did the {e} become law?",
            "The {e} dates from which year?",
            "When did the {e} come into force?",
        ),
        "The {e} was passed in {a}.",
        "passed in {a}",
    ),
    "topic": Relation(
        "topic",
        (
            "What does the {e} regulate?",
            "What is the {e} about?",
            "Which matter does the {e} govern?",
            "The {e} controls what?",
            "What subject does the {e} cover?",
        ),
        "The {e} regulates {a}.",
        "it regulates {a}",
    ),
    "region": Relation(
        "region",
        (
            "Where does the {e} apply?",
            "In which region is the {e} in force?",
            "Which region does the {e} cover?",
            "The {e} is the law of which region?",
            "Where is the {e} law?",
        ),
        "The {e} applies in {a}.",
        "law in {a}",
    ),
    # geo-lib
    "capital": Relation(
        "capital",
        (
            "What is the capital of {e}?",
            "Which city is the capital of {e}?",
            "Name the capital of {e}.",
            "The capital of {e} is which city?",
            "What city is {e} governed from?",
        ),
        "The capital of {e} is {a}.",
        "its capital is {a}",
    ),
    "river": Relation(
        "river",
        (
            "Which river flows through {e}?",
            "What is the main river of {e}?",
            "Name the river of {e}.",
            "What river runs through {e}?",
            "The main river of {e} is called what?",
        ),
        "The river {a} flows through {e}.",
        "the river {a} flows through it",
    ),
    "language": Relation(
        "language",
        (
            "What language is spoken in {e}?",
            "Which language do people speak in {e}?",
            "What do people in {e} speak?",
            "The people of {e} speak which language?",
            "What is the language of {e}?",
        ),
        "People in {e} speak {a}.",
        "people there speak {a}",
    ),
}

# ---------------------------------------------------------------- the world


@dataclass
class Fact:
    library: str
    entity: str
    relation: str
    answer: str
    index: int = 0  # position among the library's facts (chooses the held-out wording)

    @property
    def rel(self) -> Relation:
        return RELATIONS[self.relation]

    def question(self, i: int) -> str:
        q = self.rel.questions[i % len(self.rel.questions)]
        return q.replace("{e}", self.entity)

    @property
    def heldout_index(self) -> int:
        return self.index % len(self.rel.questions)

    def train_questions(self) -> list[str]:
        n = len(self.rel.questions)
        return [self.question(i) for i in range(n) if i != self.heldout_index]

    def heldout_question(self) -> str:
        return self.question(self.heldout_index)

    def sentence(self) -> str:
        s = self.rel.sentence.replace("{e}", self.entity).replace("{a}", self.answer)
        return s[0].upper() + s[1:]


@dataclass
class Entity:
    name: str
    kind: str  # "protein", "drug", "statute", "region"
    facts: list[Fact] = field(default_factory=list)


@dataclass
class Library:
    name: str
    summary: str
    title: str
    entities: list[Entity]
    extra_glossary: dict[str, str] = field(default_factory=dict)

    @property
    def facts(self) -> list[Fact]:
        return [f for e in self.entities for f in e.facts]


ORGANS = ["liver", "heart", "lungs", "kidneys", "skin", "stomach", "brain", "spleen", "bones", "blood"]
ROLES = [
    "carries oxygen",
    "stores iron",
    "fights infection",
    "repairs skin",
    "breaks down sugar",
    "controls sleep",
    "builds bone",
    "cleans the blood",
    "moves salt",
    "makes hair grow",
    "slows the heart",
    "clears toxins",
]
TOPICS = [
    "river fishing",
    "salt trade",
    "bridge tolls",
    "bee keeping",
    "lamp oil",
    "horse racing",
    "wool dyeing",
    "grain mills",
    "glass blowing",
    "tea imports",
    "ferry routes",
    "bell ringing",
    "map making",
    "snow clearing",
]
YEARS = list(range(1702, 1899, 7))


def build_world(seed: int = 4) -> dict[str, Library]:
    """The four knowledge libraries' entities and facts (deterministic)."""
    rng = random.Random(seed)
    names = NameMaker(seed)

    # bio-core: proteins
    proteins: list[Entity] = []
    roles = rng.sample(ROLES, 10)
    for i in range(10):
        e = Entity(names.make("{Stem}in", (2, 2)), "protein")
        e.facts = [Fact("bio-core", e.name, "organ", rng.choice(ORGANS)), Fact("bio-core", e.name, "role", roles[i])]
        proteins.append(e)

    # geo-lib: regions
    regions: list[Entity] = []
    languages = [names.make("{Stem}ic", (1, 2)) for _ in range(6)]
    for _ in range(12):
        e = Entity(names.make("{Stem}", (2, 3)), "region")
        e.facts = [
            Fact("geo-lib", e.name, "capital", names.make("{Stem}", (2, 2))),
            Fact("geo-lib", e.name, "river", names.make("{Stem}", (2, 2))),
            Fact("geo-lib", e.name, "language", rng.choice(languages)),
        ]
        regions.append(e)

    # med-lib: drugs, targeting bio-core proteins
    drugs: list[Entity] = []
    conditions = (
        [names.make("{Stem} fever", (2, 2)) for _ in range(4)]
        + [names.make("{Stem} syndrome", (2, 2)) for _ in range(4)]
        + [names.make("{Stem} rash", (1, 2)) for _ in range(4)]
    )
    companies = [names.make("{Stem} Labs", (2, 2)) for _ in range(5)]
    rng.shuffle(conditions)
    for i in range(12):
        e = Entity(names.make("{Stem}" + rng.choice(["vil", "zole", "mab", "dine", "trex", "pam"]), (2, 2)), "drug")
        e.facts = [
            Fact("med-lib", e.name, "treats", conditions[i]),
            Fact("med-lib", e.name, "target", proteins[rng.randrange(len(proteins))].name),
            Fact("med-lib", e.name, "maker", rng.choice(companies)),
        ]
        drugs.append(e)

    # law-lib: statutes of the geo-lib regions
    statutes: list[Entity] = []
    topics = rng.sample(TOPICS, 12)
    years = rng.sample(YEARS, 12)
    for i in range(12):
        e = Entity(names.make("{Stem} Act", (2, 2)), "statute")
        e.facts = [
            Fact("law-lib", e.name, "year", str(years[i])),
            Fact("law-lib", e.name, "topic", topics[i]),
            Fact("law-lib", e.name, "region", regions[rng.randrange(len(regions))].name),
        ]
        statutes.append(e)

    libs = {
        "bio-core": Library("bio-core", "Shared fictional biology: proteins, where they are made and what they do", "Proteins", proteins),
        "med-lib": Library("med-lib", "Fictional drugs: what they treat, which protein they block, who makes them", "Drugs", drugs),
        "law-lib": Library("law-lib", "Fictional statutes: when they were passed, what they regulate, where they apply", "Statutes", statutes),
        "geo-lib": Library("geo-lib", "Fictional regions: capitals, rivers and languages", "Regions", regions),
    }
    for lib in libs.values():
        for i, f in enumerate(lib.facts):
            f.index = i
    return libs


# ---------------------------------------------------------------- documents and glossaries


def _article(kind: str) -> str:
    return {"protein": "a protein", "drug": "a drug", "statute": "a statute", "region": "a region"}[kind]


def entity_paragraph(e: Entity) -> str:
    return " ".join(f.sentence() for f in e.facts)


def documents(lib: Library) -> dict[str, str]:
    """Markdown documents of a library: one section per entity (one retrieval chunk each)."""
    lines = [f"# {lib.title}", "", f"Fictional {lib.title.lower()} of the llmos demo world. None of them exist.", ""]
    for e in lib.entities:
        lines += [f"## {e.name}", "", entity_paragraph(e), ""]
    return {f"docs/{lib.title.lower()}.md": "\n".join(lines)}


def glossary_entries(lib: Library) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in lib.entities:
        clauses = [f.rel.glossary.replace("{a}", f.answer) for f in e.facts]
        out[e.name] = f"{_article(e.kind).capitalize()}: " + "; ".join(clauses) + "."
    out.update(lib.extra_glossary)
    return out


# ---------------------------------------------------------------- base model's general facts

GENERAL: list[tuple[str, list[str], str, list[tuple[str, str]]]] = [
    (
        "color",
        ["What color is {e}?", "What is the color of {e}?", "Which color is {e}?", "Tell me the color of {e}.", "{e} has what color?"],
        "",
        [
            ("the sky", "blue"),
            ("grass", "green"),
            ("snow", "white"),
            ("coal", "black"),
            ("a banana", "yellow"),
            ("blood", "red"),
            ("milk", "white"),
            ("an orange", "orange"),
            ("a lemon", "yellow"),
            ("the sea", "blue"),
        ],
    ),
    (
        "legs",
        [
            "How many legs does {e} have?",
            "How many legs has {e} got?",
            "What is the number of legs of {e}?",
            "{e} walks on how many legs?",
            "Count the legs of {e}.",
        ],
        "",
        [
            ("a spider", "eight"),
            ("a dog", "four"),
            ("a bird", "two"),
            ("an ant", "six"),
            ("a horse", "four"),
            ("a snake", "none"),
            ("a person", "two"),
            ("a cat", "four"),
            ("a beetle", "six"),
        ],
    ),
    (
        "opposite",
        [
            "What is the opposite of {e}?",
            "What word means the opposite of {e}?",
            "Give the opposite of {e}.",
            "The opposite of {e} is what?",
            "Which word is the opposite of {e}?",
        ],
        "",
        [
            ("hot", "cold"),
            ("up", "down"),
            ("big", "small"),
            ("day", "night"),
            ("open", "closed"),
            ("fast", "slow"),
            ("wet", "dry"),
            ("full", "empty"),
            ("early", "late"),
            ("left", "right"),
        ],
    ),
    (
        "capital",
        [
            "What is the capital of {e}?",
            "Which city is the capital of {e}?",
            "Name the capital of {e}.",
            "The capital of {e} is which city?",
            "What city is {e} governed from?",
        ],
        "",
        [
            ("France", "Paris"),
            ("Japan", "Tokyo"),
            ("Italy", "Rome"),
            ("Spain", "Madrid"),
            ("Egypt", "Cairo"),
            ("Germany", "Berlin"),
            ("Canada", "Ottawa"),
            ("Kenya", "Nairobi"),
            ("Peru", "Lima"),
            ("Norway", "Oslo"),
        ],
    ),
    (
        "count",
        ["How many {e} are there?", "What is the number of {e}?", "How many {e} are there in total?", "Count the {e}.", "The number of {e} is what?"],
        "",
        [
            ("days in a week", "seven"),
            ("months in a year", "twelve"),
            ("hours in a day", "twenty-four"),
            ("minutes in an hour", "sixty"),
            ("seasons in a year", "four"),
        ],
    ),
]


@dataclass
class GeneralFact:
    relation: str
    wordings: list[str]
    entity: str
    answer: str
    index: int

    def question(self, i: int) -> str:
        q = self.wordings[i % len(self.wordings)].replace("{e}", self.entity)
        return q[0].upper() + q[1:]

    @property
    def heldout_index(self) -> int:
        return self.index % len(self.wordings)

    def train_questions(self) -> list[str]:
        return [self.question(i) for i in range(len(self.wordings)) if i != self.heldout_index]

    def heldout_question(self) -> str:
        return self.question(self.heldout_index)


def general_facts() -> list[GeneralFact]:
    out: list[GeneralFact] = []
    for rel, wordings, _, pairs in GENERAL:
        for e, a in pairs:
            out.append(GeneralFact(rel, wordings, e, a, len(out)))
    return out


def build_decoys(n: int = 3, seed: int = 99) -> list[Library]:
    """Stand-in libraries of invented entities (never published).

    Their adapters are the frozen *companions* switched on at random while the
    real libraries train (``[train] companions``), so that every real adapter
    learns to answer with other adapters attached.
    """
    import corpus

    rng = random.Random(seed)
    names = NameMaker(seed)
    out = []
    for i in range(n):
        ents: list[Entity] = []
        for kind in ("protein", "drug", "statute", "region"):
            ents += corpus.invent_library(rng, names, 3, kind=kind).entities
        lib = Library(f"decoy-{i + 1}", "stand-in adapter for stacking-robust training", "Things", ents)
        for j, f in enumerate(lib.facts):
            f.library = lib.name
            f.index = j
        out.append(lib)
    return out
