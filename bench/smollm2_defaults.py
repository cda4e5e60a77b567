"""Choose SmolLM2-135M-Instruct's default system prompt and sampling by measurement.

Runs every candidate system prompt under every candidate sampling over the
fixed general questions in ``bench/data/general_questions.json`` and prints a
markdown table: answers right (by a simple normaliser), answers that ran to
the token cap (loops), and seconds.  The chosen defaults are what
``demo/smollm2/llmos.toml`` carries in ``[prompt]`` and ``[model.parameters]``.

The model is driven through llmos's own engine (``runtime.engine``: the
GGUF's chat template, llama.cpp sampling), one load for the whole run.

    python bench/smollm2_defaults.py --gguf PATH/SmolLM2-135M-Instruct.Q4_1.gguf [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmos_cli.runtime.engine import EngineOptions, LlamaCppEngine, SamplingParams  # noqa: E402

QUESTIONS = ROOT / "bench" / "data" / "general_questions.json"

#: (label, system prompt); None: the template's own default ("You are a helpful AI assistant named SmolLM...")
SYSTEMS: list[tuple[str, str | None]] = [
    ("built-in (no system)", None),
    ("helpful", "You are a helpful assistant."),
    ("helpful+short", "You are a helpful assistant. Answer in one short sentence."),
]
#: (label, sampling fields)
SAMPLINGS: list[tuple[str, dict]] = [
    ("greedy", {"temperature": 0.0}),
    ("greedy, repeat_penalty 1.1", {"temperature": 0.0, "repeat_penalty": 1.1}),
]
#: --more: sampled settings too (llmos's own default and a cooler one), seeded
MORE_SAMPLINGS: list[tuple[str, dict]] = [
    ("llmos default: t=0.8 top_p 0.95 (seed 0)", {"seed": 0}),
    ("t=0.2 top_p 0.9 rp 1.1 (seed 0)", {"temperature": 0.2, "top_p": 0.9, "repeat_penalty": 1.1, "seed": 0}),
]


def normalise(text: str) -> str:
    return " " + " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split()) + " "


def right(answer: str, accepted: list[str]) -> bool:
    n = normalise(answer)
    return any(normalise(a) in n for a in accepted)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--dump", help="write every answer to this JSON file")
    ap.add_argument("--more", action="store_true", help="also the sampled settings (slower)")
    ap.add_argument("--system", dest="only", help="measure only the system prompt with this label")
    args = ap.parse_args(argv)
    qs = json.loads(QUESTIONS.read_text())["questions"]
    t0 = time.perf_counter()
    engine = LlamaCppEngine(Path(args.gguf), EngineOptions(n_ctx=2048, device="cpu", n_threads=args.threads))
    rows = []
    dump = []
    try:
        for s_label, system in [x for x in SYSTEMS if args.only in (None, x[0])]:
            for p_label, fields in SAMPLINGS + (MORE_SAMPLINGS if args.more else []):
                ok = loops = 0
                t = time.perf_counter()
                for item in qs:
                    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": item["q"]}]
                    tokens = engine.prompt_tokens(msgs)
                    gen = engine.generate(tokens, SamplingParams(max_tokens=args.max_tokens, **fields))
                    good = right(gen.text, item["a"])
                    ok += good
                    loops += gen.finish_reason == "length"
                    dump.append({"system": s_label, "sampling": p_label, "q": item["q"], "answer": gen.text, "right": good, "finish": gen.finish_reason})
                rows.append((s_label, p_label, ok, loops, time.perf_counter() - t))
                print(f"{s_label:24} {p_label:32} right {ok}/{len(qs)}  ran to cap {loops}", file=sys.stderr, flush=True)
    finally:
        engine.close()
    print(f"| system prompt | sampling | right (of {len(qs)}) | ran to the {args.max_tokens}-token cap | seconds |")
    print("|---|---|---|---|---|")
    for s_label, p_label, ok, loops, secs in rows:
        print(f"| {s_label} | {p_label} | {ok} | {loops} | {secs:.1f} |")
    print(f"\nwhole run: {time.perf_counter() - t0:.0f} s, {args.threads} threads")
    if args.dump:
        Path(args.dump).write_text(json.dumps(dump, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
