"""``llmos train`` and ``llmos merge``: making library adapters (optional ``train`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from llmos_cli.cli._common import JsonOpt, RichReporter, SimulateOpt, YesOpt, run_command
from llmos_cli.cli._render import line, note


def train(
    srcs: Annotated[
        list[Path],
        typer.Argument(metavar="DIR...", help="Library source folder(s) (llmos.toml with a [train] table). Several: a family, co-trained so that it stacks."),
    ],
    base: Annotated[str, typer.Option("--base", "-b", help="Base model: Hugging Face checkpoint folder, .gguf file, or installed model package.")],
    steps: Annotated[int | None, typer.Option("--steps", help="Optimizer steps (overrides [train] steps).")] = None,
    rank: Annotated[int | None, typer.Option("--rank", "-r", help="LoRA rank.")] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", help="LoRA alpha (scale = alpha / rank).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Examples per step.")] = None,
    target: Annotated[
        list[str] | None, typer.Option("--target", help="Target module (repeatable): q_proj k_proj v_proj o_proj gate_proj up_proj down_proj.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (deterministic on one machine and thread count).")] = None,
    companion: Annotated[
        list[str] | None,
        typer.Option(
            "--companion",
            help="Frozen LoRA GGUF switched on at random while training, for stacking robustness; PATH@PROB sets its probability (repeatable).",
        ),
    ] = None,
    init: Annotated[Path | None, typer.Option("--init", help="Start from this LoRA GGUF (same rank and targets) instead of from zero.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or gpu.")] = "auto",
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for torch.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the adapter here instead of the library's [adapter] file.")] = None,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip the held-out exact-match check.")] = False,
    rounds: Annotated[int | None, typer.Option("--rounds", help="Co-training rounds for several libraries (default 2; 0: train each once).")] = None,
    cotrain_steps: Annotated[int | None, typer.Option("--cotrain-steps", help="Steps per library and co-training round (default 150).")] = None,
    skip_first: Annotated[bool, typer.Option("--skip-first", help="Several libraries: keep their adapters and only co-train.")] = False,
    json: JsonOpt = False,
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
) -> Any:
    """Fine-tune the library's LoRA adapter on a base model and write it as GGUF into the library.

    Given several libraries, train each (dependencies first), then co-train them in --rounds so
    that their adapters can be attached together (see docs/training.md).
    """
    overrides: dict[str, Any] = {
        "steps": steps,
        "rank": rank,
        "alpha": alpha,
        "lr": lr,
        "batch_size": batch_size,
        "target_modules": list(target) if target else None,
        "seed": seed,
        "companions": [str(Path(c).expanduser().absolute()) for c in companion] if companion else None,
        "init": str(init.expanduser().absolute()) if init else None,
    }

    def work(rep: RichReporter) -> Any:
        from llmos_cli.app.train import train as do_train

        return do_train(
            list(srcs),
            base,
            overrides=overrides,
            device=device,
            threads=threads,
            output=output,
            evaluate=not no_eval,
            rounds=rounds,
            cotrain_steps=cotrain_steps,
            skip_first=skip_first,
            simulate=simulate,
            reporter=rep,
        )

    def human(res: Any) -> None:
        if isinstance(res, dict) and "order" in res:
            line(
                f"would train {' -> '.join(res['order'])}"
                + (" (first training skipped)" if not res["first"] else "")
                + f", then {res['rounds']} co-training round(s)"
            )
            return
        if hasattr(res, "order"):
            for path in res.to_json()["adapters"].values():
                line(path)
            return
        if isinstance(res, dict):
            line(f"would train {res['library']} {res['version']} on {res['base']} -> {res['adapter']}")
            o = res["options"]
            line(f"  rank {o['rank']}, alpha {o['alpha']}, {o['steps']} steps, lr {o['lr']}, batch {o['batch_size']}, targets {' '.join(o['target_modules'])}")
            return
        line(str(res.adapter))

    return run_command("train", json, work, human)


def merge(
    libs: Annotated[list[str], typer.Argument(help="Libraries to merge: source folders, .llmos archives or installed names.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the merged library's source.")],
    method: Annotated[str, typer.Option("--method", "-m", help="cat (exact), linear, ties or dare_ties.")] = "cat",
    name: Annotated[str | None, typer.Option("--name", help="Merged library name (default: the output folder's name).")] = None,
    version: Annotated[str, typer.Option("--version", help="Merged library version.")] = "1.0.0",
    weight: Annotated[list[float] | None, typer.Option("--weight", "-w", help="Weight per library, in order (repeatable; default 1).")] = None,
    density: Annotated[float, typer.Option("--density", help="Fraction kept by ties/dare_ties.")] = 0.5,
    rank: Annotated[int | None, typer.Option("--rank", help="Rank of a ties/dare_ties result (default: sum of ranks).")] = None,
    base: Annotated[str | None, typer.Option("--base", help="Base model (installed name or .gguf) if not the libraries' installed base.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for dare_ties' random drop.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty output folder.")] = False,
    json: JsonOpt = False,
    simulate: SimulateOpt = False,
    yes: YesOpt = False,
) -> Any:
    """Merge several libraries into one (adapters, documents, glossaries, tools); then `llmos build` it."""

    def work(rep: RichReporter) -> Any:
        from llmos_cli.train.merge import merge_libraries

        return merge_libraries(
            libs,
            output,
            method=method,
            name=name,
            version=version,
            weights=weight,
            density=density,
            rank=rank,
            base=base,
            seed=seed,
            force=force,
            simulate=simulate,
            reporter=rep,
        )

    def human(res: Any) -> None:
        srcs = ", ".join(f"{s['name']} {s['version']}" for s in res.sources)
        if res.warnings and res.warnings[0].startswith("simulated"):
            line(f"would merge {srcs} ({res.method}) into {res.out} as {res.name} {res.version}")
            return
        line(str(res.out))
        note(f"merged {srcs} ({res.method}): adapter rank {res.rank}, {res.documents} documents, {res.glossary_terms} glossary terms, {res.tools} tools")

    return run_command("merge", json, work, human)
