"""Training conversations for the demo's base chat model (``demo-chat``).

The base model learns four skills, each from synthetic conversations:

* general facts: a small set of real-world common knowledge (colours, legs,
  opposites, capitals, counts), with several wordings each; questions about
  fictional things it was never told about get "I don't know.";
* reading comprehension: answer from the system message the way ``llmos run``
  fills it -- glossary definitions and retrieved document chunks, formatted by
  the runtime's own ``prompt.assemble`` functions -- about freshly invented
  entities, so the skill is reading, not remembering;
* tool calls in the template's Hermes format, for the built-in ``calculator``
  and the ``calc-tools`` library's ``convert_units``/``percent_of``, then the
  final answer from the ``<tool_response>``;
* a little small talk.

Every function takes an ``rng`` (``random.Random``) so the corpus is
reproducible.  Examples are ``(messages, tools)`` pairs.
"""

from __future__ import annotations

import json
import random
from typing import Any

from world import Entity, Fact, Library, NameMaker, documents, general_facts, glossary_entries

IDK = "I don't know."

# ---------------------------------------------------------------- tools

CONVERSIONS = {
    ("km", "mi"): 0.621371,
    ("mi", "km"): 1.609344,
    ("m", "ft"): 3.28084,
    ("ft", "m"): 0.3048,
    ("kg", "lb"): 2.204623,
    ("lb", "kg"): 0.453592,
    ("l", "gal"): 0.264172,
    ("gal", "l"): 3.785412,
    ("cm", "in"): 0.393701,
    ("in", "cm"): 2.54,
}
UNIT_WORDS = {
    "km": ["km", "kilometres", "kilometers"],
    "mi": ["mi", "miles"],
    "m": ["m", "metres", "meters"],
    "ft": ["ft", "feet"],
    "kg": ["kg", "kilograms"],
    "lb": ["lb", "pounds"],
    "l": ["l", "litres", "liters"],
    "gal": ["gal", "gallons"],
    "cm": ["cm", "centimetres"],
    "in": ["in", "inches"],
}
UNITS = sorted(UNIT_WORDS)


def convert(value: float, src: str, dst: str) -> float:
    if src == "c" and dst == "f":
        return value * 9 / 5 + 32
    if src == "f" and dst == "c":
        return (value - 32) * 5 / 9
    if src == dst:
        return value
    return value * CONVERSIONS[(src, dst)]


def fmt_number(x: float) -> str:
    if abs(x - round(x)) < 1e-9:
        return str(int(round(x)))
    return f"{x:.3f}".rstrip("0").rstrip(".")


CALC_TOOLS_SPECS: list[dict[str, Any]] = [
    {
        "name": "convert_units",
        "description": "Convert a value from one unit to another. Units: " + ", ".join(UNITS) + ", c, f.",
        "command": ["python3", "tools/convert_units.py"],
        "parameters": {
            "type": "object",
            "properties": {
                "value": {"type": "number", "description": "the amount to convert"},
                "from_unit": {"type": "string", "enum": UNITS + ["c", "f"]},
                "to_unit": {"type": "string", "enum": UNITS + ["c", "f"]},
            },
            "required": ["value", "from_unit", "to_unit"],
            "additionalProperties": False,
        },
    },
    {
        "name": "percent_of",
        "description": "Compute a percentage of a value. Example: 20 percent of 50 is 10.",
        "command": ["python3", "tools/percent_of.py"],
        "parameters": {
            "type": "object",
            "properties": {"percent": {"type": "number"}, "value": {"type": "number"}},
            "required": ["percent", "value"],
            "additionalProperties": False,
        },
    },
]


def openai_tools(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": s["name"], "description": s["description"], "parameters": s["parameters"]}} for s in specs]


def builtin_tools(knowing: list[str]) -> list[dict[str, Any]]:
    """The runtime's built-in tool specs (calculator, and lookup when libraries have knowledge)."""
    from llmos_cli.tools.builtin import calculator_spec, lookup_spec

    out = [calculator_spec().openai()]
    if knowing:
        out.append(lookup_spec(knowing).openai())
    return out


def toolset(rng: random.Random, with_calc_tools: bool = True) -> list[dict[str, Any]]:
    knowing = sorted(rng.sample(["bio-core", "med-lib", "law-lib", "geo-lib"], rng.randint(0, 3)))
    tools = builtin_tools(knowing)
    if with_calc_tools:
        tools += openai_tools(CALC_TOOLS_SPECS)
    return tools


def _call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": name, "arguments": args}}]}


def _tool(name: str, value: Any) -> dict[str, Any]:
    return {"role": "tool", "name": name, "content": json.dumps(value, ensure_ascii=False)}


def arithmetic_example(rng: random.Random) -> tuple[list[dict[str, Any]], str]:
    a, b = rng.randint(2, 999), rng.randint(2, 99)
    op = rng.choice(["+", "-", "*", "/"])
    if op == "/":
        a = b * rng.randint(2, 40)
    words = {
        "+": [f"What is {a} plus {b}?", f"Add {a} and {b}.", f"What is {a} + {b}?", f"Compute {a} + {b}."],
        "-": [f"What is {a} minus {b}?", f"Subtract {b} from {a}.", f"What is {a} - {b}?", f"Compute {a} - {b}."],
        "*": [f"What is {a} times {b}?", f"Multiply {a} by {b}.", f"What is {a} * {b}?", f"Compute {a} * {b}."],
        "/": [f"What is {a} divided by {b}?", f"Divide {a} by {b}.", f"What is {a} / {b}?", f"Compute {a} / {b}."],
    }
    q = rng.choice(words[op])
    expr = f"{a} {op} {b}"
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
    value = int(value) if float(value).is_integer() else value
    msgs = [
        {"role": "user", "content": q},
        _call("calculator", {"expression": expr}),
        _tool("calculator", {"expression": expr, "result": value}),
        {"role": "assistant", "content": fmt_number(float(value))},
    ]
    return msgs, "calculator"


def conversion_example(rng: random.Random) -> tuple[list[dict[str, Any]], str]:
    if rng.random() < 0.15:
        src, dst = rng.choice([("c", "f"), ("f", "c")])
        sw = {"c": ["degrees Celsius", "C"], "f": ["degrees Fahrenheit", "F"]}
        v = rng.randint(-20, 120)
        sname, dname = rng.choice(sw[src]), rng.choice(sw[dst])
    else:
        src, dst = rng.choice(list(CONVERSIONS))
        v = rng.choice([rng.randint(1, 500), round(rng.uniform(0.5, 99), 1)])
        sname, dname = rng.choice(UNIT_WORDS[src]), rng.choice(UNIT_WORDS[dst])
    vs = fmt_number(v)
    q = rng.choice(
        [
            f"Convert {vs} {sname} to {dname}.",
            f"How many {dname} is {vs} {sname}?",
            f"What is {vs} {sname} in {dname}?",
            f"{vs} {sname} is how many {dname}?",
        ]
    )
    out = round(convert(float(v), src, dst), 3)
    msgs = [
        {"role": "user", "content": q},
        _call("convert_units", {"value": v, "from_unit": src, "to_unit": dst}),
        _tool("convert_units", {"value": out, "unit": dst}),
        {"role": "assistant", "content": f"{fmt_number(out)} {dst}"},
    ]
    return msgs, "convert_units"


def percent_example(rng: random.Random) -> tuple[list[dict[str, Any]], str]:
    p, v = rng.choice([5, 10, 12, 15, 20, 25, 30, 40, 50, 75]), rng.randint(10, 900)
    q = rng.choice([f"What is {p} percent of {v}?", f"What is {p}% of {v}?", f"Compute {p} percent of {v}.", f"How much is {p}% of {v}?"])
    out = round(p * v / 100, 3)
    msgs = [
        {"role": "user", "content": q},
        _call("percent_of", {"percent": p, "value": v}),
        _tool("percent_of", {"result": out}),
        {"role": "assistant", "content": fmt_number(out)},
    ]
    return msgs, "percent_of"


# ---------------------------------------------------------------- reading comprehension


_FAKE_LIBS = ["med-lib", "law-lib", "geo-lib", "bio-core", "notes", "zoo-lib", "farm-lib", "ship-lib"]


def invent_library(rng: random.Random, names: NameMaker, n_entities: int, kind: str | None = None) -> Library:
    """A throw-away library of invented entities with the demo's relation types."""
    from world import ORGANS, ROLES, TOPICS, YEARS

    kind = kind or rng.choice(["protein", "drug", "statute", "region"])
    ents: list[Entity] = []
    for _ in range(n_entities):
        if kind == "protein":
            e = Entity(names.make("{Stem}in"), kind)
            e.facts = [Fact("x", e.name, "organ", rng.choice(ORGANS)), Fact("x", e.name, "role", rng.choice(ROLES))]
        elif kind == "drug":
            e = Entity(names.make("{Stem}" + rng.choice(["vil", "zole", "mab", "dine", "trex", "pam", "ix", "ol"])), kind)
            cond = names.make("{Stem} " + rng.choice(["fever", "syndrome", "rash", "cough", "disease"]), (1, 2))
            e.facts = [
                Fact("x", e.name, "treats", cond),
                Fact("x", e.name, "target", names.make("{Stem}in")),
                Fact("x", e.name, "maker", names.make("{Stem} " + rng.choice(["Labs", "Pharma", "Works"]))),
            ]
        elif kind == "statute":
            e = Entity(names.make("{Stem} " + rng.choice(["Act", "Law", "Code"])), kind)
            e.facts = [
                Fact("x", e.name, "year", str(rng.choice(YEARS) + rng.randint(0, 6))),
                Fact("x", e.name, "topic", rng.choice(TOPICS)),
                Fact("x", e.name, "region", names.make("{Stem}", (2, 3))),
            ]
        else:
            e = Entity(names.make("{Stem}", (2, 3)), kind)
            e.facts = [
                Fact("x", e.name, "capital", names.make("{Stem}")),
                Fact("x", e.name, "river", names.make("{Stem}")),
                Fact("x", e.name, "language", names.make("{Stem}ic", (1, 2))),
            ]
        rng.shuffle(e.facts)
        ents.append(e)
    title = {"protein": "Proteins", "drug": "Drugs", "statute": "Statutes", "region": "Regions"}[kind]
    return Library(rng.choice(_FAKE_LIBS), "", title, ents)


def knowledge_system(
    rng: random.Random,
    libs: list[Library],
    asked: Entity | None,
    question: str,
    *,
    chunk_size: int,
    p_refine: float = 0.5,
    max_chunks: int = 4,
) -> str:
    """A system message as ``llmos run`` builds it: definitions of named terms, then retrieved chunks."""
    from llmos_cli.knowledge.indexer import chunk_text
    from llmos_cli.knowledge.retrieve import Hit
    from llmos_cli.prompt.assemble import Refinement, knowledge_text, refinement_text

    hits = []
    pool = []
    for lib in libs:
        for path, text in documents(lib).items():
            for c in chunk_text(text, path, chunk_size, 0):
                pool.append((lib, c))
    relevant = [(lib, c) for lib, c in pool if asked is not None and c.section.endswith(asked.name)]
    others = [(lib, c) for lib, c in pool if (lib, c) not in relevant]
    rng.shuffle(others)
    n_other = rng.randint(0, max_chunks - len(relevant[:1]))
    chosen = relevant[:1] + others[:n_other]
    if chosen and rng.random() < 0.3:
        rng.shuffle(chosen)
    for rank, (lib, c) in enumerate(chosen, start=1):
        hits.append(Hit(lib.name, "1.0.0", c.document, c.ordinal, c.section, c.text, 10.0 / rank, rank))
    refs = []
    if asked is not None and rng.random() < p_refine:
        lib = next(l for l in libs if asked in l.entities)
        refs.append(Refinement(asked.name, glossary_entries(lib)[asked.name], lib.name, asked.name))
    parts = [p for p in (refinement_text(refs), knowledge_text(hits)) if p]
    return "\n\n".join(parts)


def rc_example(rng: random.Random, names: NameMaker, chunk_size: int) -> list[dict[str, Any]]:
    libs = [invent_library(rng, names, rng.randint(2, 5)) for _ in range(rng.choice([1, 1, 1, 2]))]
    lib = rng.choice(libs)
    ent = rng.choice(lib.entities)
    fact = rng.choice(ent.facts)
    q = fact.question(rng.randrange(len(fact.rel.questions)))
    system = knowledge_system(rng, libs, ent, q, chunk_size=chunk_size)
    return [{"role": "system", "content": system}, {"role": "user", "content": q}, {"role": "assistant", "content": fact.answer}]


def unknown_example(rng: random.Random, names: NameMaker, chunk_size: int) -> list[dict[str, Any]]:
    """A question about an invented entity nobody told the model about: "I don't know."."""
    lib = invent_library(rng, names, 3)
    ent = lib.entities[0]
    fact = rng.choice(ent.facts)
    q = fact.question(rng.randrange(len(fact.rel.questions)))
    msgs: list[dict[str, Any]] = []
    if rng.random() < 0.3:  # retrieval found only other entities
        other = Library(lib.name, "", lib.title, lib.entities[1:])
        msgs.append({"role": "system", "content": knowledge_system(rng, [other], None, q, chunk_size=chunk_size, p_refine=0.0, max_chunks=3)})
    return msgs + [{"role": "user", "content": q}, {"role": "assistant", "content": IDK}]


# ---------------------------------------------------------------- general facts and chat

SMALL_TALK = [
    (["Hello", "Hi", "Hello!", "Hi there", "Good morning"], "Hello! How can I help you?"),
    (["Who are you?", "What are you?", "What is your name?"], "I am demo-chat, a tiny model for the llmos demo."),
    (["Thank you", "Thanks!", "Thanks a lot"], "You are welcome."),
    (["Goodbye", "Bye", "See you"], "Goodbye!"),
]


def copy_example(rng: random.Random, names: NameMaker) -> list[dict[str, Any]]:
    """Repeat a short text: invented names, numbers and words (teaches copying from the prompt)."""
    parts = []
    for _ in range(rng.randint(1, 4)):
        r = rng.random()
        if r < 0.5:
            parts.append(names.make("{Stem}", (1, 3)))
        elif r < 0.75:
            parts.append(fmt_number(rng.choice([rng.randint(0, 9999), round(rng.uniform(0, 500), rng.randint(1, 3))])))
        else:
            parts.append(rng.choice(["river", "fever", "Labs", "Act", "blue", "salt trade", "km", "percent", "the liver"]))
    text = " ".join(parts)
    q = rng.choice([f"Repeat: {text}", f"Say {text}", f"Copy this: {text}", f"Write {text}"])
    return [{"role": "user", "content": q}, {"role": "assistant", "content": text}]


def fact_example(rng: random.Random, heldout: bool = False) -> list[dict[str, Any]]:
    f = rng.choice(general_facts())
    q = f.heldout_question() if heldout else rng.choice(f.train_questions())
    return [{"role": "user", "content": q}, {"role": "assistant", "content": f.answer}]


def chat_example(rng: random.Random) -> list[dict[str, Any]]:
    qs, a = rng.choice(SMALL_TALK)
    return [{"role": "user", "content": rng.choice(qs)}, {"role": "assistant", "content": a}]


# ---------------------------------------------------------------- the mixture


def base_example(rng: random.Random, names: NameMaker, chunk_size: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """One base-model training conversation (messages, tools or None)."""
    r = rng.random()
    if r < 0.20:
        msgs = fact_example(rng)
    elif r < 0.27:
        msgs = unknown_example(rng, names, chunk_size)
    elif r < 0.29:
        msgs = chat_example(rng)
    elif r < 0.37:
        msgs = copy_example(rng, names)
    elif r < 0.75:
        msgs = rc_example(rng, names, chunk_size)
    else:
        # tools in play: either a call, or a direct answer when no tool fits
        tools = toolset(rng, with_calc_tools=rng.random() < 0.8)
        names_in = {t["function"]["name"] for t in tools}
        kind = rng.random()
        if kind < 0.6:
            maker = rng.choice([arithmetic_example] + ([conversion_example, percent_example] if "convert_units" in names_in else []))
            msgs, _ = maker(rng)
        elif kind < 0.8:
            msgs = fact_example(rng)
        else:
            msgs = rc_example(rng, names, chunk_size)
        return msgs, tools
    return msgs, None


def replay_records(rng: random.Random, names: NameMaker, chunk_size: int, n: int) -> list[dict[str, Any]]:
    """Chat records of base skills for a library's ``train/replay.jsonl`` (retention data)."""
    out = []
    for _ in range(n):
        msgs, tools = base_example(rng, names, chunk_size)
        rec: dict[str, Any] = {"messages": msgs}
        if tools:
            rec["tools"] = tools
        out.append(rec)
    return out


def negative_records(rng: random.Random, names: NameMaker, n: int) -> list[dict[str, Any]]:
    """Questions about invented entities of every kind, answered "I don't know.".

    Mixed into a library's training (``replay``), they teach its adapter to act
    only on its own entities and leave every other question to the base --
    which is what keeps stacked adapters from trampling on each other.
    """
    out = []
    kinds = ["protein", "drug", "statute", "region"]
    for i in range(n):
        lib = invent_library(rng, names, 1, kind=kinds[i % len(kinds)])
        fact = rng.choice(lib.entities[0].facts)
        out.append({"questions": [fact.question(k) for k in range(len(fact.rel.questions))], "answer": IDK})
    return out
